"""Policy gradients under a noisy binary verifier: backward (PGBC) and forward (PGFC) corrections
(Cai et al., 2025, "Reinforcement Learning with Verifiable yet Noisy Rewards under Imperfect Verifiers").

The verifier is a reward channel (the paper's Definition 3.1): a correct response (``R* = 1``) is rejected
with the false-negative rate ``rho1``, a wrong one accepted with the false-positive rate ``rho0``, so
``E[R~ | R*] = (1 - rho0 - rho1) R* + rho0`` (Proposition 3.2). The corrections act on the scalar
coefficient that GRPO broadcasts to a completion's tokens (the paper's Appendix B, Algorithm 4):

* PGBC, corrected utility: ``r^ = (r~ - rho0) / max(1 - rho0 - rho1, eps_c)`` (unbiased for ``R*``,
  Theorem 3.3), minus a leave-one-out baseline, over a fixed scale ``s``;
* PGFC, score-level weight: ``w = r~ - (1 - rho1)``, i.e. ``rho1 - 1`` for a rejection and ``rho1`` for an
  acceptance (Proposition 3.4), with no current-group baseline, over a fixed scale ``s``;
* the matched noisy control: ``(r~ - b) / s`` with the baseline of the method it is compared with.

Neither is group z-scored: both are positive affine maps of ``r~`` within a group, so the standard GRPO
advantage would undo them exactly (the paper's Appendix B.4; :func:`rljax.losses.grpo.group_advantages`).
Shapes: rewards and advantages are ``[B]`` with ``B = num_prompts * G``, the ``G`` completions of a prompt
next to each other (as in :mod:`rljax.losses.grpo`).
"""

from __future__ import annotations

import jax.numpy as jnp

CORRECTIONS = ("none", "backward", "forward")
BASELINES = ("leave_one_out", "none")
MIN_DENOMINATOR = 1e-3  # eps_c: the clamp on 1 - rho0 - rho1 (the paper's Appendix B.2)


def _check_rates(name: str, **rates) -> None:
    for field, value in rates.items():
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{name}: {field} must be a rate in [0, 1), got {value}")


def backward_corrected_reward(noisy_rewards, rho0, rho1):
    """``(r~ - rho0) / max(1 - rho0 - rho1, eps_c)`` [B]: an unbiased estimate of the clean reward when the
    rates are the channel's (Theorem 3.3)."""
    return (jnp.asarray(noisy_rewards, jnp.float32) - rho0) / jnp.maximum(1.0 - rho0 - rho1, MIN_DENOMINATOR)


def forward_weight(noisy_rewards, rho1):
    """The score-function weight ``r~ - (1 - rho1)`` [B]: ``rho1 - 1`` for a rejection, ``rho1`` for an
    acceptance. Its conditional mean is 0 given a correct response and ``-(1 - rho0 - rho1)`` given a wrong
    one (Proposition 3.4), so its expected update is ``(1 - rho0 - rho1)`` times the clean gradient."""
    return jnp.asarray(noisy_rewards, jnp.float32) - (1.0 - rho1)


def leave_one_out_baseline(values, group_size: int):
    """Each completion's baseline [B]: the mean of the other ``G - 1`` values of its group. Independent of
    the completion itself, so subtracting it keeps the expected score-function update unchanged."""
    grouped = jnp.asarray(values, jnp.float32).reshape(-1, group_size)
    return ((grouped.sum(axis=1, keepdims=True) - grouped) / (group_size - 1)).reshape(-1)


def channel_advantages(noisy_rewards, group_size: int, correction: str, *, rho0=0.0, rho1=0.0,
                       baseline: str | None = None, scale=1.0):
    """Per-completion GRPO coefficients [B] from observed binary rewards [B] (the paper's Algorithm 4).

    Args:
      noisy_rewards: the verifier's 0/1 verdicts, [B], groups of ``group_size`` side by side.
      correction: ``"backward"`` (PGBC), ``"forward"`` (PGFC) or ``"none"`` (the noisy control; with the
        clean rewards, the oracle).
      rho0, rho1: the estimated false-positive and false-negative rates (``rho1`` alone for PGFC).
      baseline: ``"leave_one_out"`` or ``"none"``; default the paper's for the correction (leave-one-out for
        PGBC, none for PGFC). The noisy control takes the baseline of the method it is matched with.
      scale: the fixed positive scale ``s`` the coefficients are divided by (never the group's std).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"channel_advantages: unknown correction {correction!r}; known ones are {list(CORRECTIONS)}")
    baseline = baseline or ("none" if correction == "forward" else "leave_one_out")
    if baseline not in BASELINES:
        raise ValueError(f"channel_advantages: unknown baseline {baseline!r}; known ones are {list(BASELINES)}")
    noisy_rewards = jnp.asarray(noisy_rewards, jnp.float32)
    if noisy_rewards.ndim != 1 or group_size < 2 or noisy_rewards.shape[0] % group_size:
        raise ValueError(f"channel_advantages: rewards must be [B] with B a multiple of group_size >= 2; got shape "
                         f"{noisy_rewards.shape} and group_size {group_size}")
    _check_rates("channel_advantages", rho0=rho0, rho1=rho1)
    if not float(scale) > 0:
        raise ValueError(f"channel_advantages: scale must be > 0, got {scale}")
    if correction == "backward":
        utility = backward_corrected_reward(noisy_rewards, rho0, rho1)
    elif correction == "forward":
        utility = forward_weight(noisy_rewards, rho1)
    else:
        utility = noisy_rewards
    if baseline == "leave_one_out":
        utility = utility - leave_one_out_baseline(utility, group_size)
    return utility / scale


def advantage_audit(corrected, noisy):
    """The paper's advantage-level audit (Appendix B.10) of two coefficient vectors [B] from one batch: mean
    and largest absolute difference and their cosine. A cosine of 1 means the correction only rescales the
    noisy update (a learning-rate change), whatever the differences."""
    corrected, noisy = jnp.asarray(corrected, jnp.float32), jnp.asarray(noisy, jnp.float32)
    diff = jnp.abs(corrected - noisy)
    norms = jnp.linalg.norm(corrected) * jnp.linalg.norm(noisy)
    return {"d_mean": diff.mean(), "d_max": diff.max(),
            "cosine": jnp.where(norms > 0, corrected @ noisy / jnp.maximum(norms, 1e-30), jnp.nan)}
