"""Wrappers that keep the contract: each takes an env and is an env.

Order used by the agents (inner to outer)::

    env -> ClipAction / RescaleAction -> NormalizeObservation -> EpisodeStatistics -> NormalizeReward

so that statistics see raw rewards and the policy sees normalised observations.
All state a wrapper needs lives in its env state, so wrapped environments stay
pure, vmappable and checkpointable with the rest of the training state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Box, Environment, max_episode_steps, reward_shape


class Wrapper(Environment):
    """Delegates everything to the wrapped env; subclasses override reset/step."""

    def __init__(self, env: Any):
        self._env = env

    @property
    def unwrapped(self) -> Any:
        return getattr(self._env, "unwrapped", self._env)

    @property
    def name(self) -> str:
        return self._env.name

    @property
    def default_params(self) -> Any:
        return self._env.default_params

    @property
    def reward_shape(self) -> tuple[int, ...]:
        return reward_shape(self._env)

    @property
    def num_actions(self) -> int:
        return self._env.num_actions

    def max_episode_steps(self, params) -> int:
        return max_episode_steps(self._env, params)

    def action_space(self, params=None):
        return self._env.action_space(params)

    def observation_space(self, params=None):
        return self._env.observation_space(params)

    def reset(self, key, params=None):
        return self._env.reset(key, params if params is not None else self.default_params)

    def step(self, key, state, action, params=None):
        return self._env.step(key, state, action, params if params is not None else self.default_params)


# ---------------------------------------------------------------- episode statistics


@struct.dataclass
class EpisodeStatisticsState:
    """:class:`EpisodeStatistics`' state of one env: the inner state, the running episode's return (shaped like
    the reward: ``()`` or ``[k]``) and length, and those of the last finished episode."""

    env_state: Any
    episode_return: jax.Array  # running return of the current episode, reward-shaped
    episode_length: jax.Array
    returned_episode_return: jax.Array  # return of the last finished episode
    returned_episode_length: jax.Array


class EpisodeStatistics(Wrapper):
    """Adds fixed-shape episode statistics to ``info`` (PureJaxRL's LogWrapper).

    info["returned_episode_return"]  return of the last finished episode (reward-shaped)
    info["returned_episode_length"]  its length
    info["returned_episode"]         True on the step that finished an episode
    """

    def reset(self, key, params=None):
        obs, env_state = super().reset(key, params)
        zeros = jnp.zeros(self.reward_shape, jnp.float32)
        length = jnp.zeros((), jnp.int32)
        return obs, EpisodeStatisticsState(env_state, zeros, length, zeros, length)

    def step(self, key, state, action, params=None):
        obs, env_state, reward, terminated, truncated, info = super().step(key, state.env_state, action, params)
        done = jnp.logical_or(terminated, truncated)
        episode_return = state.episode_return + reward
        episode_length = state.episode_length + 1
        new_state = EpisodeStatisticsState(
            env_state=env_state,
            episode_return=episode_return * (1 - done),
            episode_length=episode_length * (1 - done),
            returned_episode_return=jnp.where(done, episode_return, state.returned_episode_return),
            returned_episode_length=jnp.where(done, episode_length, state.returned_episode_length),
        )
        info = {
            **info,
            "returned_episode_return": new_state.returned_episode_return,
            "returned_episode_length": new_state.returned_episode_length,
            "returned_episode": done,
        }
        return obs, new_state, reward, terminated, truncated, info


def episode_metrics(info: dict) -> dict:
    """Training metrics from a time-major rollout's ``EpisodeStatistics`` info ``[T, N, ...]``: the last
    finished episode's return and length at the final step (mean over envs), and episodes finished."""
    return {
        "episode_return": info["returned_episode_return"][-1].mean(),
        "episode_length": info["returned_episode_length"][-1].mean(),
        "episodes_finished": info["returned_episode"].sum(),
    }


# ---------------------------------------------------------------- observation normalisation


@struct.dataclass
class RunningMeanStd:
    """Running moments of a quantity: ``mean`` and ``var`` shaped like it (e.g. ``[*obs_shape]``), ``count`` a
    float32 scalar (starts at 1e-4, as gym's). Merged with Chan et al.'s parallel update."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    def update(self, batch_mean, batch_var, batch_count) -> "RunningMeanStd":
        """Chan et al.'s parallel merge of two sets of moments."""
        delta = batch_mean - self.mean
        total = self.count + batch_count
        mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        return RunningMeanStd(mean=mean, var=m2 / total, count=total)

    def update_from_batch(self, x, axis_name: str | None) -> "RunningMeanStd":
        """Merge in ``x``: one sample, or, under vmap with ``axis_name``, the batch pooled over that axis."""
        if axis_name is None:
            return self.update(x, jnp.zeros_like(x), jnp.ones((), jnp.float32))
        mean = jax.lax.pmean(x, axis_name)
        var = jax.lax.pmean((x - mean) ** 2, axis_name)
        return self.update(mean, var, jax.lax.psum(jnp.ones((), jnp.float32), axis_name))

    def normalize(self, x, epsilon: float = 1e-8):
        return (x - self.mean) / jnp.sqrt(self.var + epsilon)


@struct.dataclass
class NormalizeObservationState:
    """:class:`NormalizeObservation`'s state of one env: the inner state and the observation moments."""

    env_state: Any
    obs_stats: RunningMeanStd


class NormalizeObservation(Wrapper):
    """Normalises observations with running mean/variance kept in the env state.

    Under ``jax.vmap(..., axis_name=axis_name)`` over a batch of envs, the moments
    are pooled over the batch (``lax.pmean``), so every env holds the same
    statistics, like PureJaxRL's ``NormalizeVecObservation``. Without an axis
    name each env keeps its own. ``update_statistics=False`` freezes them.
    Evaluation applies the training run's statistics
    (``find_state(state, NormalizeObservationState).obs_stats.normalize``) to raw observations.
    """

    def __init__(self, env, *, axis_name: str | None = None, update_statistics: bool = True, epsilon: float = 1e-8):
        super().__init__(env)
        self.axis_name = axis_name
        self.update_statistics = update_statistics
        self.epsilon = epsilon

    def _update(self, stats: RunningMeanStd, obs) -> RunningMeanStd:
        if not self.update_statistics:
            return stats
        return stats.update_from_batch(obs, self.axis_name)

    def reset(self, key, params=None):
        obs, env_state = super().reset(key, params)
        # count starts at epsilon so the first merge is well defined (as gym's RunningMeanStd).
        stats = RunningMeanStd(jnp.zeros_like(obs), jnp.ones_like(obs), jnp.asarray(1e-4, jnp.float32))
        stats = self._update(stats, obs)
        return stats.normalize(obs, self.epsilon), NormalizeObservationState(env_state, stats)

    def step(self, key, state, action, params=None):
        obs, env_state, reward, terminated, truncated, info = super().step(key, state.env_state, action, params)
        stats = self._update(state.obs_stats, obs)
        info = {**info, "final_observation": stats.normalize(info["final_observation"], self.epsilon)}
        return stats.normalize(obs, self.epsilon), NormalizeObservationState(env_state, stats), reward, terminated, truncated, info


@struct.dataclass
class NormalizeRewardState:
    """:class:`NormalizeReward`'s state of one env: the inner state, the running discounted return (reward-shaped;
    reset to 0 when an episode ends) and its moments."""

    env_state: Any
    discounted_return: jax.Array  # running discounted return of the current episode
    return_stats: RunningMeanStd


class NormalizeReward(Wrapper):
    """Scales rewards by the running standard deviation of the discounted return.

    gym's ``NormalizeReward`` (and PureJaxRL's ``NormalizeVecReward``): keeps
    value targets near unit scale, so a shared gradient-norm clip is not spent
    on the critic. Moments pool over ``axis_name`` like ``NormalizeObservation``.
    Put ``EpisodeStatistics`` inside this wrapper so reported returns stay raw.
    """

    def __init__(self, env, gamma: float, *, axis_name: str | None = None, epsilon: float = 1e-8):
        super().__init__(env)
        self.gamma = gamma
        self.axis_name = axis_name
        self.epsilon = epsilon

    def reset(self, key, params=None):
        obs, env_state = super().reset(key, params)
        zero = jnp.zeros(self.reward_shape, jnp.float32)
        stats = RunningMeanStd(zero, jnp.ones_like(zero), jnp.asarray(1e-4, jnp.float32))
        return obs, NormalizeRewardState(env_state, zero, stats)

    def step(self, key, state, action, params=None):
        obs, env_state, reward, terminated, truncated, info = super().step(key, state.env_state, action, params)
        discounted_return = state.discounted_return * self.gamma + reward
        stats = state.return_stats.update_from_batch(discounted_return, self.axis_name)
        done = jnp.logical_or(terminated, truncated)
        new_state = NormalizeRewardState(env_state, discounted_return * (1 - done), stats)
        return obs, new_state, reward / jnp.sqrt(stats.var + self.epsilon), terminated, truncated, info


def find_state(state: Any, state_type: type) -> Any:
    """The first wrapper state of ``state_type`` inside a chain of wrapper states."""
    while state is not None:
        if isinstance(state, state_type):
            return state
        state = getattr(state, "env_state", None)
    raise ValueError(f"no {state_type.__name__} inside this env state")


# ---------------------------------------------------------------- actions


class ClipAction(Wrapper):
    """Clips continuous actions into the action box (Gaussian policies overshoot it)."""

    def step(self, key, state, action, params=None):
        space = self.action_space(params if params is not None else self.default_params)
        return super().step(key, state, jnp.clip(action, space.low, space.high), params)


class FlattenObservation(Wrapper):
    """Flattens image-like observations (e.g. MinAtar's [10, 10, C]) to vectors for MLP policies."""

    def observation_space(self, params=None):
        inner = self._env.observation_space(params)
        size = int(np.prod(inner.shape))
        low, high = (jnp.reshape(jnp.broadcast_to(b, inner.shape), (size,)) for b in (inner.low, inner.high))
        return Box(low=low, high=high, shape=(size,), dtype=inner.dtype)

    def reset(self, key, params=None):
        obs, state = super().reset(key, params)
        return obs.reshape(-1), state

    def step(self, key, state, action, params=None):
        obs, state, reward, terminated, truncated, info = super().step(key, state, action, params)
        info = dict(info)
        if "final_observation" in info:
            info["final_observation"] = info["final_observation"].reshape(-1)
        return obs.reshape(-1), state, reward, terminated, truncated, info


def flatten_images(env, params):
    """``env`` with multi-dimensional observations (MinAtar's images) flattened for MLP policies; else ``env``."""
    return FlattenObservation(env) if len(env.observation_space(params).shape) > 1 else env


def to_box(action, box):
    """Map ``action`` in [-1, 1] affinely onto ``box`` (its ``low`` and ``high``), clipping first."""
    action = jnp.clip(action, -1.0, 1.0)
    return box.low + (action + 1.0) * 0.5 * (box.high - box.low)


def from_box(action, box):
    """The inverse of ``to_box``: an action in ``box`` mapped onto [-1, 1]."""
    return 2.0 * (action - box.low) / (box.high - box.low) - 1.0


class RescaleAction(Wrapper):
    """Exposes the action box as [-1, 1] and maps actions affinely onto the inner box."""

    def action_space(self, params=None):
        inner = self._env.action_space(params)
        return Box(low=-1.0, high=1.0, shape=inner.shape, dtype=inner.dtype)

    def step(self, key, state, action, params=None):
        inner = self._env.action_space(params if params is not None else self.default_params)
        return super().step(key, state, to_box(action, inner), params)


# ---------------------------------------------------------------- vector rewards


class ScalarizeReward(Wrapper):
    """Linear scalarisation w . r of a vector reward; the vector stays in info["vector_reward"]."""

    def __init__(self, env, weights):
        super().__init__(env)
        self.weights = jnp.asarray(weights, jnp.float32)
        if self.weights.shape != tuple(reward_shape(env)):
            raise ValueError(
                f"ScalarizeReward: weights have shape {self.weights.shape}, "
                f"expected the env's reward shape {tuple(reward_shape(env))}"
            )

    @property
    def reward_shape(self) -> tuple[int, ...]:
        return ()

    def step(self, key, state, action, params=None):
        obs, env_state, reward, terminated, truncated, info = super().step(key, state, action, params)
        return obs, env_state, reward @ self.weights, terminated, truncated, {**info, "vector_reward": reward}
