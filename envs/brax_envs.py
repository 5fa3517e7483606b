"""Brax environments registered as ``brax/<name>``, adapted to the rljax contract.

Only brax's environments are used (its trainers do not run on current jax). The
physics backend defaults to ``"positional"``, the fastest on CPU; ``backend=``
selects another ("generalized", "spring", "mjx"). Brax's own ``done`` is a natural
termination; the time limit (``episode_length``, default 1000 as in brax's
trainers) becomes ``truncated`` so value targets bootstrap there.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs.core import Box, Environment
from envs.registry import register


@struct.dataclass
class BraxParams:
    """Env params: the time limit, after which an episode is ``truncated`` (``episode_length`` at ``make``)."""

    max_steps_in_episode: int = 1000


@struct.dataclass
class BraxState:
    """One env's state: brax's own ``State`` and ``time``, the steps taken this episode (scalar int32)."""

    brax_state: Any  # brax.envs.base.State: pipeline state, obs, reward, done, metrics, info
    time: jax.Array


class BraxEnv(Environment):
    """A brax ``Env`` behind the gymnax-1.0 contract (actions in [-1, 1])."""

    def __init__(self, brax_env: Any, name: str):
        self._env = brax_env
        self._name = name

    @property
    def name(self) -> str:
        return f"brax/{self._name}"

    @property
    def brax_env(self) -> Any:
        return self._env

    @property
    def default_params(self) -> BraxParams:
        return BraxParams()

    def reset_env(self, key, params):
        state = self._env.reset(key)
        return state.obs, BraxState(brax_state=state, time=jnp.zeros((), jnp.int32))

    def step_env(self, key, state, action, params):
        del key  # brax dynamics are deterministic
        next_state = self._env.step(state.brax_state, action)
        new_state = BraxState(brax_state=next_state, time=state.time + 1)
        terminated = next_state.done.astype(bool)
        return next_state.obs, new_state, next_state.reward, terminated, {}

    def action_space(self, params=None) -> Box:
        return Box(low=-1.0, high=1.0, shape=(self._env.action_size,), dtype=jnp.float32)

    def observation_space(self, params=None) -> Box:
        return Box(low=-jnp.inf, high=jnp.inf, shape=(self._env.observation_size,), dtype=jnp.float32)

    @property
    def num_actions(self) -> int:
        return self._env.action_size


def _factory(name: str):
    def make(backend: str = "positional", episode_length: int = 1000, **kwargs):
        from brax import envs as brax_envs  # imported lazily: brax pulls in mujoco

        env = BraxEnv(brax_envs.get_environment(name, backend=backend, **kwargs), name)
        return env, BraxParams(max_steps_in_episode=episode_length)

    return make


def default_reset_noise_scale(env: BraxEnv) -> float:
    """The ``reset_noise_scale`` the brax env was built with by default (its constructor's default:
    0.005 for hopper and walker2d, 0.1 for halfcheetah and ant). ``envs.make(name, reset_noise_scale=x)``
    builds it with another. Raises ``ValueError`` for envs without one (inverted_pendulum, reacher, ...)."""
    parameter = inspect.signature(type(env.brax_env).__init__).parameters.get("reset_noise_scale")
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise ValueError(f"{env.name} has no reset_noise_scale argument; its starts cannot be perturbed by it")
    return float(parameter.default)


BRAX_ENV_NAMES = (
    "ant", "fast", "halfcheetah", "hopper", "humanoid", "humanoidstandup", "inverted_pendulum",
    "inverted_double_pendulum", "pusher", "reacher", "swimmer", "walker2d",
)
for _name in BRAX_ENV_NAMES:
    register(f"brax/{_name}", _factory(_name))
