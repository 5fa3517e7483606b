"""JaxMARL adapter: any JaxMARL ``MultiAgentEnv`` (MPE by default) behind the rljax multi-agent contract.

    env, params = envs.multiagent.make("jaxmarl/MPE_simple_spread_v3")
    obs, state = env.reset(key, params)
    obs, state, rewards, dones, info = env.step(key, state, actions, params)

JaxMARL's envs already use per-agent dicts and ``dones["__all__"]``; the adapter adds
the ``params`` argument (unused: JaxMARL keeps settings on the env object), the
``info["final_observation"]`` of the rljax contract (our base class auto-resets on top
of JaxMARL's ``step_env``), and ``info["terminated"]``/``info["truncated"]``. JaxMARL
does not say why an episode ended; for MPE every episode ends at the step limit
(``max_steps``, 25), so ``done`` is reported as truncation there (value targets
bootstrap), and ``done_is_truncation=False`` reports it as termination for other envs.
JaxMARL 0.2.0's MPE computes ``done`` from the step counter *before* incrementing it,
so an MPE episode is ``max_steps + 1`` (26) steps long; ``params.max_steps_in_episode``
reports that actual length.

jaxmarl is imported lazily, so the rest of ``envs`` works without it installed.
"""

from __future__ import annotations

import sys
from typing import Any

import jax.numpy as jnp
from flax import struct

from envs.multiagent.core import MultiAgentEnv
from rljax.core.config import ConfigError


@struct.dataclass
class JaxMARLParams:
    """Env params of the adapter: only the episode length the JaxMARL env actually runs (its ``max_steps``, plus
    one for MPE), reported through ``max_episode_steps``; the JaxMARL env keeps its other settings itself."""

    max_steps_in_episode: int = 25


def _import_jaxmarl():
    # `import jaxmarl` (0.2.0) loads its MABrax module, which silences brax's import by swapping
    # sys.stdout/stderr and then sets them to sys.__stdout__/__stderr__ rather than back: in Jupyter or
    # Colab every later print of the session would leave the notebook for the kernel's terminal.
    stdout, stderr = sys.stdout, sys.stderr
    try:
        import jaxmarl  # noqa: PLC0415  (optional dependency)
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("envs.multiagent.mpe needs the optional dependency jaxmarl "
                          "(pip install jaxmarl==0.2.0 jaxtyping); import failed with: " + str(e)) from e
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    return jaxmarl


class JaxMARLEnv(MultiAgentEnv):
    """Wrap a JaxMARL env instance (``jaxmarl.make(...)``)."""

    def __init__(self, env: Any, *, done_is_truncation: bool = True, extra_step: int = 0):
        self._env = env
        self._extra_step = extra_step
        self.agents = tuple(env.agents)
        self.done_is_truncation = done_is_truncation

    @property
    def unwrapped(self) -> Any:
        return self._env

    @property
    def name(self) -> str:
        return f"jaxmarl/{self._env.name}"

    @property
    def default_params(self) -> JaxMARLParams:
        return JaxMARLParams(max_steps_in_episode=int(getattr(self._env, "max_steps", 0)) + self._extra_step)

    def action_space(self, agent: str, params=None):
        self._check_agent(agent)
        return self._env.action_space(agent)

    def observation_space(self, agent: str, params=None):
        self._check_agent(agent)
        return self._env.observation_space(agent)

    def _check_agent(self, agent: str) -> None:
        if agent not in self.agents:
            raise ConfigError(f"{self.name}: unknown agent {agent!r}; agents are {list(self.agents)}")

    def reset_env(self, key, params):
        return self._env.reset(key)

    def step_env(self, key, state, actions, params):
        obs, next_state, rewards, dones, info = self._env.step_env(key, state, actions)
        done = jnp.asarray(dones["__all__"])
        false = jnp.zeros((), bool)
        info = dict(info, terminated=false if self.done_is_truncation else done,
                    truncated=done if self.done_is_truncation else false)
        return obs, next_state, rewards, dones, info


def make(env_id: str = "MPE_simple_spread_v3", **kwargs) -> tuple[JaxMARLEnv, JaxMARLParams]:
    """``jaxmarl.make(env_id, **kwargs)`` wrapped; unknown ids list JaxMARL's registered names."""
    jaxmarl = _import_jaxmarl()
    from jaxmarl.registration import registered_envs  # noqa: PLC0415

    if env_id not in registered_envs:
        raise ConfigError(f"jaxmarl: unknown environment {env_id!r}; registered are {sorted(registered_envs)}")
    mpe = env_id.startswith("MPE_")
    env = JaxMARLEnv(jaxmarl.make(env_id, **kwargs), done_is_truncation=mpe, extra_step=1 if mpe else 0)
    return env, env.default_params
