"""Offline data on the device: a dataset as arrays in the training state, sampled by minibatch.

    data = offline.from_dataset(dataset_lib.load("data/pendulum_mixed"), env, env_params)
    batch = offline.sample(data, key, 256)       # Transitions, leaves [256, ...]

Offline learners (IQL, XQL, f-DVL, ODICE, ReCOIL) keep ``Transitions`` in their
state (PureJaxRL's on-device style), so ``jax.vmap`` over seeds and the host
loop's checkpoints work unchanged. Continuous actions are mapped from the env's
box onto [-1, 1] (the squashed policies' range); discrete actions stay int32.
``terminated`` marks true terminal states only: a time-limit truncation
bootstraps from ``next_obs`` like any other transition.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import envs
from envs import wrappers
from rljax.core.dataset import Dataset, DatasetError, check_matches_env


@struct.dataclass
class Transitions:
    """A flat offline dataset (or a minibatch of it) as device arrays: ``N`` rows of (s, a, r, s', terminated).

    A pytree kept in offline learners' state; ``terminated`` is true terminals only (truncations bootstrap).
    """

    obs: jax.Array  # [N, *obs_shape] float32
    action: jax.Array  # [N, action_dim] float32 in [-1, 1], or [N] int32
    reward: jax.Array  # [N] float32
    next_obs: jax.Array  # [N, *obs_shape]
    terminated: jax.Array  # [N] bool

    @property
    def size(self) -> int:
        return self.obs.shape[0]


def from_dataset(dataset: Dataset, env, env_params, name: str = "dataset") -> Transitions:
    """``dataset``'s transitions as device arrays, checked against ``env`` (``DatasetError`` naming the field)."""
    check_matches_env(dataset, env, env_params, name=name)
    if dataset.reward.ndim != 1:
        raise DatasetError(f"{name}: field 'reward' has shape {dataset.reward.shape}; offline RL here needs [N] rewards")
    if envs.is_discrete(env, env_params):
        action = jnp.asarray(dataset.action, jnp.int32)
    else:
        action = wrappers.from_box(jnp.asarray(dataset.action, jnp.float32), env.action_space(env_params))
    return Transitions(
        obs=jnp.asarray(dataset.obs, jnp.float32), action=action, reward=jnp.asarray(dataset.reward, jnp.float32),
        next_obs=jnp.asarray(dataset.next_obs, jnp.float32), terminated=jnp.asarray(dataset.terminated, bool),
    )


def episode_starts(dataset: Dataset) -> np.ndarray:
    """``[num_episodes]`` row index of each episode's first transition (its initial state is ``obs`` there)."""
    return np.flatnonzero(np.r_[True, dataset.episode_id[1:] != dataset.episode_id[:-1]])


def sample(data: Transitions, key: jax.Array, batch_size: int) -> Transitions:
    """``batch_size`` transitions drawn uniformly with replacement."""
    index = jax.random.randint(key, (batch_size,), 0, data.size)
    return jax.tree.map(lambda x: x[index], data)


def actor_optimizer(learning_rate, total_steps: int) -> optax.GradientTransformation:
    """IQL's actor optimiser, shared by IQL, XQL, f-DVL and ReCOIL (as in the IQL/DVL code): Adam
    whose rate decays from ``learning_rate`` (may be traced) to 0 by a cosine over ``total_steps``."""
    return optax.adam(optax.cosine_decay_schedule(learning_rate, total_steps))
