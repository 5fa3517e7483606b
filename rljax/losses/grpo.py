"""GRPO (Shao et al., 2024) and its aggregation variants, as pure functions, in TRL's vocabulary.

A batch holds ``B = num_prompts * G`` completions, the ``G`` of each prompt next to each other
(TRL's layout). Shapes:

* ``rewards``, ``advantages``: [B], one per completion;
* per-token log-probs and ``completion_mask``: [B, T] over the completion tokens only
  (``T`` = ``max_completion_length``; the mask is 1 up to and including EOS).

The per-token loss is PPO's clipped surrogate with the sequence's advantage,
``-min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)`` with ``rho = exp(logp - logp_old)``,
plus ``beta`` times the k3 estimate of KL(pi || pi_ref),
``exp(logp_ref - logp) - (logp_ref - logp) - 1``. ``loss_type`` only decides how the
tokens are averaged, which decides the length bias:

* ``"grpo"``: mean over each sequence's tokens, then over sequences (the paper);
* ``"bnpo"`` and ``"dapo"``: sum over the batch's tokens / the number of completion tokens in
  the batch (DAPO, Yu et al. 2025; TRL's default ``"dapo"`` counts the tokens of the whole
  generation batch across devices and accumulation steps: the same on one device and one step);
* ``"dr_grpo"``: sum / (B * max_completion_length) (Dr. GRPO, Liu et al. 2025).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
STD_EPS = 1e-4  # TRL's constant in A = (r - mean) / (std + 1e-4)


def _unbiased_std(x, axis=None):
    """Standard deviation with Bessel's correction (TRL's ``nanstd``, PyTorch's ``std``)."""
    n = x.size if axis is None else x.shape[axis]
    return jnp.sqrt(jnp.sum((x - x.mean(axis=axis, keepdims=True)) ** 2, axis=axis) / (n - 1))


def group_advantages(rewards, group_size: int, scale_rewards: str = "group"):
    """GRPO advantages [B] from rewards [B]: ``r - mean(group)``, divided by ``std + 1e-4`` where

    * ``"group"``: each group's (unbiased) standard deviation (the paper, TRL's default);
    * ``"batch"``: the whole batch's standard deviation;
    * ``"none"``: not divided (Dr. GRPO).

    A positive affine map of the rewards within a group (``a r + b``, ``a > 0``) leaves the
    ``"group"`` advantages unchanged up to the ``1e-4``.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"group_advantages: unknown scale_rewards {scale_rewards!r}; known ones are {list(SCALE_REWARDS)}")
    rewards = jnp.asarray(rewards, jnp.float32)
    if rewards.ndim != 1 or group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(
            f"group_advantages: rewards must be [B] with B a multiple of group_size >= 2; got shape {rewards.shape} "
            f"and group_size {group_size}"
        )
    grouped = rewards.reshape(-1, group_size)
    centred = (grouped - grouped.mean(axis=1, keepdims=True)).reshape(-1)
    if scale_rewards == "none":
        return centred
    if scale_rewards == "group":
        std = jnp.repeat(_unbiased_std(grouped, axis=1), group_size)
    else:
        std = _unbiased_std(rewards)
    return centred / (std + STD_EPS)


def k3_kl(logps, ref_logps):
    """Per-token k3 estimate of KL(pi || pi_ref) on tokens sampled from pi: ``exp(d) - d - 1``, ``d = ref - logp``."""
    delta = ref_logps - logps
    return jnp.exp(delta) - delta - 1.0


def aggregate(per_token, completion_mask, loss_type: str, max_completion_length: int | None = None):
    """Average a per-token quantity [B, T] over the completion tokens as ``loss_type`` does (module docstring)."""
    mask = completion_mask.astype(per_token.dtype)
    total = (per_token * mask).sum()
    if loss_type == "grpo":
        return ((per_token * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)).mean()
    if loss_type in ("bnpo", "dapo"):
        return total / jnp.maximum(mask.sum(), 1.0)
    if loss_type == "dr_grpo":
        length = per_token.shape[1] if max_completion_length is None else max_completion_length
        return total / (per_token.shape[0] * length)
    raise ValueError(f"aggregate: unknown loss_type {loss_type!r}; known ones are {list(LOSS_TYPES)}")


def grpo_loss(
    logps,
    old_logps,
    advantages,
    completion_mask,
    *,
    ref_logps=None,
    beta=0.0,
    epsilon_low=0.2,
    epsilon_high=0.2,
    loss_type: str = "dapo",
    max_completion_length: int | None = None,
):
    """The GRPO loss (scalar) and TRL-named metrics.

    Args:
      logps: per-token log-probs of the completions under the policy being trained, [B, T].
      old_logps: the same under the policy that sampled them, [B, T] (a constant; equal to
        ``logps`` on the first iteration over a generation batch, where ``rho = 1``).
      advantages: [B] (:func:`group_advantages`).
      completion_mask: [B, T].
      ref_logps: [B, T] under the frozen reference; needed when ``beta > 0``.
      beta: weight of the k3 KL term (TRL's default 0).
      epsilon_low, epsilon_high: the clipping range ``[1 - eps_low, 1 + eps_high]``
        (DAPO's "clip higher" uses a larger ``eps_high``).
      loss_type: ``"grpo"``, ``"bnpo"``, ``"dapo"`` or ``"dr_grpo"`` (module docstring).
      max_completion_length: ``dr_grpo``'s constant (default ``T``).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"grpo_loss: unknown loss_type {loss_type!r}; known ones are {list(LOSS_TYPES)}")
    old_logps = jax.lax.stop_gradient(old_logps)
    ratio = jnp.exp(logps - old_logps)
    adv = jnp.asarray(advantages)[:, None]
    clipped = jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    per_token = -jnp.minimum(ratio * adv, clipped * adv)
    metrics = {}
    if ref_logps is not None:
        kl = k3_kl(logps, jax.lax.stop_gradient(ref_logps))
        per_token = per_token + beta * kl
        metrics["kl"] = aggregate(kl, completion_mask, "bnpo")
    loss = aggregate(per_token, completion_mask, loss_type, max_completion_length)
    mask = completion_mask.astype(jnp.float32)
    low = (ratio < 1.0 - epsilon_low) & (adv < 0)  # clipped: the min picks the constant branch
    high = (ratio > 1.0 + epsilon_high) & (adv > 0)
    tokens = jnp.maximum(mask.sum(), 1.0)
    metrics |= {
        "clip_ratio/low_mean": (low * mask).sum() / tokens,
        "clip_ratio/high_mean": (high * mask).sum() / tokens,
        "clip_ratio/region_mean": ((low | high) * mask).sum() / tokens,
    }
    return loss, metrics
