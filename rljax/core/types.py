"""Pytrees shared by rollouts, returns and losses."""

from __future__ import annotations

from typing import Any

import jax
from flax import struct


@struct.dataclass
class Trajectory:
    """A batch of transitions, time-major: every leaf is ``[T, num_envs, ...]``.

    ``next_obs`` is the observation that followed ``obs`` *before* any auto-reset
    (the env's ``info["final_observation"]``), so ``V(next_obs)`` is the right
    bootstrap value on truncation and equals ``V(obs[t + 1])`` inside an episode.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array  # [T, N] or [T, N, k] for vector rewards
    terminated: jax.Array  # bool: the episode ended in a terminal state (no bootstrap)
    truncated: jax.Array  # bool: the episode was cut by a time limit (bootstrap from next_obs)
    next_obs: jax.Array
    extras: dict[str, Any]  # what the policy returned beside the action (log_prob, value, ...)
    info: dict[str, Any]  # the env's info, less final_observation

    @property
    def done(self) -> jax.Array:
        return self.terminated | self.truncated
