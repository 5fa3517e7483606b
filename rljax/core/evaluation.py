"""Evaluation: one full episode per environment, with fixed shapes."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from envs.core import max_episode_steps
from rljax.core import rollout as rollout_lib


def episode_returns(
    env,
    env_params,
    act: Callable[[jax.Array, jax.Array], jax.Array],
    key: jax.Array,
    num_episodes: int,
) -> dict[str, jax.Array]:
    """Return and length of the first episode in each of ``num_episodes`` envs.

    ``act(obs [N, ...], key) -> action [N, ...]`` (it applies any observation
    normalisation the training run used). Runs ``max_episode_steps`` steps, so
    every episode finishes; steps after an env's first episode are masked out.
    """
    reset_key, run_key = jax.random.split(key)
    carry = rollout_lib.reset(env, env_params, reset_key, num_episodes)

    def step(c, k):
        env_carry, active, total, length = c
        act_key, env_key = jax.random.split(k)
        action = act(env_carry.obs, act_key)
        env_carry, (reward, terminated, truncated, _) = rollout_lib.env_step(env, env_params, env_carry, action, env_key)
        mask = active.reshape(active.shape + (1,) * (reward.ndim - active.ndim)).astype(reward.dtype)
        total = total + mask * reward
        length = length + active.astype(jnp.int32)
        active = active & ~(terminated | truncated)
        return (env_carry, active, total, length), None

    reward_shape = tuple(getattr(env, "reward_shape", ()))
    init = (
        carry,
        jnp.ones((num_episodes,), bool),
        jnp.zeros((num_episodes,) + reward_shape, jnp.float32),
        jnp.zeros((num_episodes,), jnp.int32),
    )
    steps = max_episode_steps(env, env_params)
    (_, active, total, length), _ = jax.lax.scan(step, init, jax.random.split(run_key, steps))
    return {"return": total, "length": length}
