"""The multi-agent environment contract: per-agent dicts, JaxMARL's ``MultiAgentEnv`` shape.

    obs, state = env.reset(key, params)
    obs, state, rewards, dones, info = env.step(key, state, actions, params)

* ``env.agents``: the agent names, in a fixed order (``["agent_0", "agent_1"]``).
* ``obs``, ``actions``, ``rewards``: dicts keyed by agent name; ``dones`` also has
  ``"__all__"`` (the episode is over for everyone).
* ``step`` auto-resets when ``dones["__all__"]``: the returned ``obs``/``state``
  already belong to the next episode, and ``info["final_observation"]`` (a dict by
  agent) holds the last observation of the finished one. ``info["terminated"]`` and
  ``info["truncated"]`` (scalars) say why it ended, so a value target bootstraps on
  truncation and not on termination (the single-agent contract of ``envs.core``).
* ``action_space(agent, params)``, ``observation_space(agent, params)``: per agent.

This is JaxMARL's ``MultiAgentEnv`` (``reset(key)``, ``step(key, state, actions)``
with auto-reset and ``dones["__all__"]``) plus the explicit ``params`` argument of
the gymnax contract, so a JaxMARL env adapts in a few lines (``envs.multiagent.mpe``).
Subclasses implement ``reset_env`` and ``step_env`` (no auto-reset) and the spaces.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp

from rljax.core.config import ConfigError


class MultiAgentEnv(abc.ABC):
    """Base class of every rljax multi-agent environment (see the module docstring)."""

    agents: tuple[str, ...] = ()

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def default_params(self) -> Any:
        return None

    def max_episode_steps(self, params: Any) -> int:
        return int(params.max_steps_in_episode)

    # -- to implement --------------------------------------------------------------

    @abc.abstractmethod
    def reset_env(self, key: jax.Array, params: Any) -> tuple[dict[str, jax.Array], Any]:
        """A fresh episode: ``(obs dict, state)``."""

    @abc.abstractmethod
    def step_env(self, key, state, actions, params):
        """One transition without auto-reset: ``(obs, state, rewards, dones, info)``.

        ``dones`` has every agent and ``"__all__"``; ``info`` has scalar
        ``"terminated"`` and ``"truncated"`` bools (their ``or`` is ``dones["__all__"]``).
        """

    @abc.abstractmethod
    def action_space(self, agent: str, params: Any = None):
        """``agent``'s action space."""

    @abc.abstractmethod
    def observation_space(self, agent: str, params: Any = None):
        """``agent``'s observation space."""

    # -- the contract --------------------------------------------------------------

    def check_actions(self, actions: Any) -> None:
        """Raise a ConfigError naming the problem if ``actions`` is not one entry per agent.

        Dict keys are static under jit, so this check costs nothing at run time.
        """
        if not isinstance(actions, dict):
            raise ConfigError(f"{self.name}.step: actions must be a dict keyed by agent name {list(self.agents)}, "
                              f"got {type(actions).__name__}")
        missing = [a for a in self.agents if a not in actions]
        unknown = [a for a in actions if a not in self.agents]
        if missing or unknown:
            raise ConfigError(f"{self.name}.step: actions keys must be the agents {list(self.agents)}; "
                              f"missing {missing}, unknown {unknown}")

    def reset(self, key: jax.Array, params: Any = None):
        return self.reset_env(key, self.default_params if params is None else params)

    def step(self, key: jax.Array, state: Any, actions: dict[str, jax.Array], params: Any = None):
        """One step with auto-reset (see the module docstring)."""
        params = self.default_params if params is None else params
        self.check_actions(actions)
        step_key, reset_key = jax.random.split(key)
        obs, next_state, rewards, dones, info = self.step_env(step_key, state, actions, params)
        reset_obs, reset_state = self.reset_env(reset_key, params)
        done = dones["__all__"]
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(done, a, b), new, old)  # noqa: E731
        info = dict(info, final_observation=obs)
        return pick(reset_obs, obs), pick(reset_state, next_state), rewards, dones, info


def stack_agents(values: dict[str, jax.Array], agents) -> jax.Array:
    """``{agent: x[...]}`` -> ``[num_agents, ...]`` in the order of ``agents``."""
    return jnp.stack([values[a] for a in agents])


def unstack_agents(values: jax.Array, agents) -> dict[str, jax.Array]:
    """``[num_agents, ...]`` -> ``{agent: x[...]}``; the leading axis must equal ``len(agents)``."""
    if values.shape[0] != len(agents):
        raise ConfigError(f"unstack_agents: leading axis has size {values.shape[0]}, expected {len(agents)} "
                          f"(one per agent {list(agents)})")
    return {a: values[i] for i, a in enumerate(agents)}
