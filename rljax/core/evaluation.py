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
    chunk_steps: int = 32,
) -> dict[str, jax.Array]:
    """Return and length of the first episode in each of ``num_episodes`` envs.

    ``act(obs [N, ...], key) -> action [N, ...]`` (it applies any observation
    normalisation the training run used). Steps are masked out after an env's
    first episode. Up to ``max_episode_steps`` steps run, in equal scanned chunks
    of at most ``chunk_steps``, and no chunk starts once every episode has ended
    (under vmap: every episode of the batch), so an evaluation whose episodes end
    early does not pay for the env's whole time limit (Breakout-MinAtar's is 1000
    steps, a brax hopper's 1000; ``python -m experiments.benchmarks.evaluation``).
    Step ``t`` uses the ``t``-th of ``max_episode_steps`` keys split from ``key``,
    so the result does not depend on ``chunk_steps``.
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

    steps = max_episode_steps(env, env_params)
    num_chunks = -(-steps // chunk_steps)
    chunk_steps = -(-steps // num_chunks)  # equal chunks of at most chunk_steps: fewer than num_chunks steps of padding
    # Steps past the time limit (the last chunk's padding) find every episode ended: masked, any key will do.
    keys = jax.random.split(run_key, steps)
    keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], num_chunks * chunk_steps - steps, axis=0)])

    def run_chunk(c):
        i, inner = c
        chunk_keys = jax.lax.dynamic_slice_in_dim(keys, i * chunk_steps, chunk_steps)
        return i + 1, jax.lax.scan(step, inner, chunk_keys)[0]

    reward_shape = tuple(getattr(env, "reward_shape", ()))
    init = (
        carry,
        jnp.ones((num_episodes,), bool),
        jnp.zeros((num_episodes,) + reward_shape, jnp.float32),
        jnp.zeros((num_episodes,), jnp.int32),
    )
    def unfinished(c):
        i, (_, active, _, _) = c
        return (i < num_chunks) & active.any()

    _, (_, _, total, length) = jax.lax.while_loop(unfinished, run_chunk, (jnp.zeros((), jnp.int32), init))
    return {"return": total, "length": length}
