"""Policy-gradient losses (PPO's clipped surrogate; later: MDPO, learned drift).

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
):
    """PPO-clip actor-critic loss: surrogate + vf_coef * value loss - ent_coef * entropy.

    ``apply_fn(params, obs) -> (distrax distribution, value)``; ``hp`` needs
    ``clip_eps``, ``vf_coef`` and ``ent_coef``.
    """
    pi, value = apply_fn(params, batch.obs)
    log_prob = pi.log_prob(batch.action)
    advantage = normalize(batch.advantage) if normalize_advantages else batch.advantage
    policy_loss, aux = clipped_surrogate(log_prob, batch.log_prob, advantage, hp.clip_eps)
    value_loss = clipped_value_loss(value, batch.value, batch.target, hp.clip_eps)
    entropy = pi.entropy().mean()
    total = policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
    return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy, **aux}
