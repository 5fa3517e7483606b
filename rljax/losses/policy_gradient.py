"""Policy-gradient losses: PPO's clipped surrogate, the mirror-learning surrogate with a drift, and MDPO's.

Every function is pure; ``aux`` is a flat dict of scalars for logging.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class PPOBatch:
    """One minibatch of on-policy data, flat over ``[B, ...]``."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array  # log pi_old(a|s) at collection time
    value: jax.Array  # V_old(s) at collection time
    advantage: jax.Array
    target: jax.Array  # value target (GAE advantage + V_old)


def normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``(x - mean) / (std + eps)`` over all of ``x``."""
    return (x - x.mean()) / (x.std() + eps)


def clipped_surrogate(log_prob, old_log_prob, advantage, clip_eps):
    """PPO's clipped objective as a loss (Schulman et al., 2017, eq. 7, negated).

    L = -E[min(r A, clip(r, 1 - eps, 1 + eps) A)],  r = pi(a|s) / pi_old(a|s)
    """
    ratio = jnp.exp(log_prob - old_log_prob)
    unclipped = ratio * advantage
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage
    loss = -jnp.minimum(unclipped, clipped).mean()
    aux = {
        "clip_fraction": (jnp.abs(ratio - 1.0) > clip_eps).mean(),
        # k3 estimator of KL(pi_old || pi), non-negative and unbiased (Schulman, 2020).
        "approx_kl": ((ratio - 1.0) - (log_prob - old_log_prob)).mean(),
    }
    return loss, aux


def drift_surrogate(log_prob, old_log_prob, advantage, drift):
    """A mirror-learning surrogate as a loss: L = -E[r A - D],  r = pi(a|s) / pi_old(a|s).

    ``drift`` is D evaluated per sample (same shape as ``advantage``), computed by the
    caller from the same ratio, e.g. LPO's learned drift (``rljax.agents.lpo``). PPO-clip
    is the special case D = ReLU((r - clip(r, 1 - eps, 1 + eps)) A) (Kuba et al., 2022).
    """
    ratio = jnp.exp(log_prob - old_log_prob)
    loss = -(ratio * advantage - drift).mean()
    aux = {
        "drift": drift.mean(),
        "approx_kl": ((ratio - 1.0) - (log_prob - old_log_prob)).mean(),
    }
    return loss, aux


def mirror_descent_surrogate(log_prob, old_log_prob, advantage, kl, step_size):
    """On-policy MDPO's objective as a loss (Tomar et al., 2022, negated):

        L = -E_s[ E_{a ~ pi_k}[r A] - (1 / t_k) KL(pi_theta(.|s) || pi_k(.|s)) ],  r = pi_theta(a|s) / pi_k(a|s)

    ``kl`` is the exact per-state KL(pi_theta || pi_k) at each sample's state (``[B]``, differentiable
    in theta), ``step_size`` the mirror-descent step t_k. It is the mirror-learning surrogate with the
    drift KL / t_k, an expectation over actions rather than a per-sample function of r.
    """
    loss, aux = drift_surrogate(log_prob, old_log_prob, advantage, kl / step_size)
    return loss, aux | {"kl": kl.mean(), "step_size": jnp.asarray(step_size, jnp.float32)}


def ppo_clip_surrogate(log_prob, old_log_prob, advantage, hp, progress, kl):
    """PPO's surrogate in the ``Surrogate`` signature that ``ppo_loss`` takes (ignores ``progress``, ``kl``)."""
    del progress, kl
    return clipped_surrogate(log_prob, old_log_prob, advantage, hp.clip_eps)


# (log_prob, old_log_prob, advantage, hp, progress, kl) -> (loss, aux); progress = n / N in [0, 1]; kl = the
# exact KL(pi_theta || pi_old) per sample's state (None when ppo_loss has no old_params).
Surrogate = Callable[[jax.Array, jax.Array, jax.Array, Any, jax.Array, Any], tuple[jax.Array, dict]]


def clipped_value_loss(value, old_value, target, clip_eps):
    """0.5 * E[max((V - G)^2, (V_old + clip(V - V_old, -eps, eps) - G)^2)] (PPO2 / PureJaxRL)."""
    value_clipped = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum((value - target) ** 2, (value_clipped - target) ** 2).mean()


def ppo_loss(
    params: Any,
    apply_fn: Callable[[Any, jax.Array], tuple[Any, jax.Array]],
    batch: PPOBatch,
    hp: Any,
    normalize_advantages: bool = True,
    surrogate: Surrogate = ppo_clip_surrogate,
    progress: jax.Array | float = 0.0,
    old_params: Any = None,
):
    """PPO actor-critic loss: surrogate + vf_coef * value loss - ent_coef * entropy.

    ``apply_fn(params, obs) -> (distrax distribution, value)``; ``hp`` needs
    ``clip_eps``, ``vf_coef`` and ``ent_coef``. ``surrogate`` is the policy term
    (PPO-clip by default; LPO passes its learned drift, MDPO its KL); ``progress`` = n / N, the
    fraction of training done, for temporally-aware surrogates. ``old_params`` (the policy
    that collected ``batch``) gives the surrogate the exact per-state KL(pi || pi_old); under
    jit the extra forward pass is removed when the surrogate does not use it.
    """
    pi, value = apply_fn(params, batch.obs)
    log_prob = pi.log_prob(batch.action)
    advantage = normalize(batch.advantage) if normalize_advantages else batch.advantage
    kl = None
    if old_params is not None:
        pi_old, _ = apply_fn(jax.lax.stop_gradient(old_params), batch.obs)
        kl = pi.kl_divergence(pi_old)
    policy_loss, aux = surrogate(log_prob, batch.log_prob, advantage, hp, progress, kl)
    value_loss = clipped_value_loss(value, batch.value, batch.target, hp.clip_eps)
    entropy = pi.entropy().mean()
    total = policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
    return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy, **aux}


def learned_policy_gradient_loss(log_prob, y_logits, pi_hat, y_hat, alpha_y):
    """LPG's agent update as a loss (Oh et al., 2020, eq. 2, negated for descent):

        Delta theta  propto  E[ grad log pi(a|s) pi_hat  -  alpha_y grad KL(y(s) || y_hat) ]
        L(theta) = -mean(log pi(a|s) * pi_hat) + alpha_y * mean(KL(y(s) || y_hat))

    ``log_prob [...]``: log pi(a_t|s_t) of the taken actions. ``y_logits [..., m]``: the
    agent's prediction logits, y(s) = softmax(y_logits). ``pi_hat [...]`` and ``y_hat [..., m]``
    (a distribution over the m bins) are the meta-network's targets; they are constants
    for the agent (stop-gradient), so d L / d log_prob = -pi_hat / log_prob.size and the
    KL term's gradient vanishes where y(s) = y_hat.
    """
    pi_hat = jax.lax.stop_gradient(pi_hat)
    y_hat = jax.lax.stop_gradient(y_hat)
    log_y = jax.nn.log_softmax(y_logits, axis=-1)
    log_y_hat = jnp.log(jnp.maximum(y_hat, jnp.finfo(y_hat.dtype).tiny))  # a bin that underflowed to 0
    kl = jnp.sum(jnp.exp(log_y) * (log_y - log_y_hat), axis=-1)
    policy_loss = -(log_prob * pi_hat).mean()
    prediction_loss = kl.mean()
    loss = policy_loss + alpha_y * prediction_loss
    return loss, {"policy_loss": policy_loss, "prediction_kl": prediction_loss, "pi_hat": pi_hat.mean()}
