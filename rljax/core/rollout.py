"""Batched environment interaction: ``lax.scan`` over time, ``vmap`` over envs."""

from __future__ import annotations

from typing import Any, Callable

import jax
from flax import struct

from rljax.core.types import Trajectory

# Name of the vmap axis over environments; wrappers such as NormalizeObservation
# pool statistics over it with lax.pmean.
ENV_AXIS = "envs"

# policy(obs [N, ...], key) -> (action [N, ...], extras: dict of [N, ...] arrays)
Policy = Callable[[jax.Array, jax.Array], tuple[jax.Array, dict[str, Any]]]


@struct.dataclass
class EnvCarry:
    """The part of the training state that belongs to the batch of environments."""

    env_state: Any  # [N, ...]
    obs: jax.Array  # [N, ...]


def reset(env, env_params, key: jax.Array, num_envs: int) -> EnvCarry:
    """Reset ``num_envs`` environments with independent keys."""
    keys = jax.random.split(key, num_envs)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None), axis_name=ENV_AXIS)(keys, env_params)
    return EnvCarry(env_state=env_state, obs=obs)


def env_step(env, env_params, carry: EnvCarry, action: jax.Array, key: jax.Array):
    """Step every environment once; returns the new carry and the per-env outputs."""
    keys = jax.random.split(key, carry.obs.shape[0])
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None), axis_name=ENV_AXIS)
    obs, env_state, reward, terminated, truncated, info = step(keys, carry.env_state, action, env_params)
    return EnvCarry(env_state=env_state, obs=obs), (reward, terminated, truncated, info)


def rollout(env, env_params, policy: Policy, carry: EnvCarry, key: jax.Array, num_steps: int):
    """Run ``policy`` for ``num_steps`` steps in every env.

    Returns the final carry and a time-major ``Trajectory`` ``[num_steps, N, ...]``.
    """

    def step(carry: EnvCarry, step_key):
        act_key, env_key = jax.random.split(step_key)
        action, extras = policy(carry.obs, act_key)
        next_carry, (reward, terminated, truncated, info) = env_step(env, env_params, carry, action, env_key)
        info = dict(info)
        next_obs = info.pop("final_observation")
        transition = Trajectory(
            obs=carry.obs, action=action, reward=reward, terminated=terminated, truncated=truncated,
            next_obs=next_obs, extras=extras, info=info,
        )
        return next_carry, transition

    return jax.lax.scan(step, carry, jax.random.split(key, num_steps))
