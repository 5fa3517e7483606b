"""Advantage and return estimators that treat termination and truncation apart.

All inputs are time-major ``[T, ...]``. ``next_values[t] = V(next_obs[t])`` where
``next_obs`` is the pre-reset observation (``Trajectory.next_obs``):

* terminated[t]: the episode really ended, so nothing is bootstrapped;
* truncated[t]: a time limit cut it, so the target bootstraps from ``V(next_obs[t])``;
* either way the recursion does not run across the episode boundary.

With vector rewards (``[T, N, k]``), ``terminated``/``truncated`` of shape ``[T, N]``
broadcast over the objective axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _match(flag: jax.Array, like: jax.Array) -> jax.Array:
    flag = flag.astype(like.dtype)
    return flag.reshape(flag.shape + (1,) * (like.ndim - flag.ndim))


def gae(rewards, values, next_values, terminated, truncated, gamma, lambda_):
    """Generalised advantage estimation (Schulman et al., 2016, eq. 16).

    delta_t = r_t + gamma * (1 - terminated_t) * V(s'_t) - V(s_t)
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

    Returns ``(advantages, value_targets)`` with ``value_targets = advantages + values``.
    """
    not_terminal = 1.0 - _match(terminated, rewards)
    not_done = 1.0 - _match(terminated | truncated, rewards)
    deltas = rewards + gamma * not_terminal * next_values - values

    def backward(next_advantage, x):
        delta, continues = x
        advantage = delta + gamma * lambda_ * continues * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(deltas[0]), (deltas, not_done), reverse=True)
    return advantages, advantages + values


def lambda_returns(rewards, next_values, terminated, truncated, gamma, lambda_):
    """TD(lambda) returns (Sutton & Barto, eq. 12.3, recursive form).

    G_t = r_t + gamma * (1 - terminated_t) * [(1 - lambda_t') V(s'_t) + lambda_t' G_{t+1}]
    with lambda_t' = lambda * (1 - done_t), and G bootstraps from V(s'_{T-1}) at the end.
    """
    not_terminal = 1.0 - _match(terminated, rewards)
    lam = lambda_ * (1.0 - _match(terminated | truncated, rewards))

    def backward(next_return, x):
        reward, next_value, continues, lam_t = x
        g = reward + gamma * continues * ((1.0 - lam_t) * next_value + lam_t * next_return)
        return g, g

    _, returns = jax.lax.scan(
        backward, next_values[-1], (rewards, next_values, not_terminal, lam), reverse=True
    )
    return returns
