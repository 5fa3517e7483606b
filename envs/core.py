"""The one environment contract of rljax (gymnax 1.0).

    reset(key, params)               -> (obs, state)
    step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)

``step`` auto-resets: when an episode ends (terminated or truncated) the returned
``obs``/``state`` already belong to the next episode, and ``info["final_observation"]``
holds the last observation of the finished one, so value targets can bootstrap on
truncation. Rewards are scalars, or vectors of shape ``(num_objectives,)`` for
multi-objective environments.

We subclass gymnax's ``Environment`` rather than redefining it, so every gymnax
environment already is an rljax environment and our own ones (probes, brax
adapter, multi-objective tasks) get gymnax's tested auto-reset for free.
Subclasses implement ``reset_env``/``step_env`` and the two spaces.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment as gymnax_env
from gymnax.environments import spaces

EnvState = gymnax_env.EnvState
EnvParams = gymnax_env.EnvParams
Discrete = spaces.Discrete
Box = spaces.Box


class Environment(gymnax_env.Environment):
    """Base class of every rljax environment (see the module docstring)."""

    @property
    def reward_shape(self) -> tuple[int, ...]:
        """``()`` for a scalar reward, ``(k,)`` for a k-objective reward vector."""
        return ()

    @property
    def num_objectives(self) -> int:
        return int(math.prod(self.reward_shape))

    def max_episode_steps(self, params: Any) -> int:
        """Upper bound on an episode's length, used to size evaluation rollouts."""
        return int(params.max_steps_in_episode)


def max_episode_steps(env: Any, params: Any) -> int:
    """Episode-length bound of any contract environment (gymnax ones included)."""
    if hasattr(env, "max_episode_steps"):
        return env.max_episode_steps(params)
    return int(params.max_steps_in_episode)


def reward_shape(env: Any) -> tuple[int, ...]:
    """Reward shape of any contract environment (gymnax ones have scalar rewards)."""
    return tuple(getattr(env, "reward_shape", ()))


def is_discrete(env: Any, params: Any) -> bool:
    """Whether ``env``'s action space is ``Discrete`` (else a ``Box``)."""
    return isinstance(env.action_space(params), spaces.Discrete)


def action_dim(env: Any, params: Any) -> int:
    """Number of discrete actions, or the size of a flat continuous action."""
    space = env.action_space(params)
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    return int(jnp.prod(jnp.asarray(space.shape)))


def observation_shape(env: Any, params: Any) -> tuple[int, ...]:
    """One observation's shape, e.g. ``(4,)`` for CartPole."""
    return tuple(env.observation_space(params).shape)


@struct.dataclass
class TimeLimitState:
    """Small helper state for environments that only need a step counter."""

    time: jax.Array
