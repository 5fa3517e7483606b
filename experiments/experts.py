"""Trained agents behind datasets and demonstrations: PPO for discrete actions, SAC for continuous ones.

``train(env, agent, key)`` trains the env's preset run (or ``agent_steps`` env
steps of it, or the first ``fraction`` of its updates: D4RL's "medium") and
returns an ``Expert``: sampling and deterministic policies that act on the
env's *raw* observations and return the actions the raw env executes (PPO's
observation normalisation applied inside; SAC's [-1, 1] actions mapped onto
the action box), so datasets hold what happened in the env.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs import wrappers
from rljax.agents import ppo, sac
from rljax.core import rollout as rollout_lib
from rljax.core.checkpoint import Checkpointer
from rljax.core.config import ConfigError, broadcast_hparams, from_dict, require, to_dict
from rljax.core.evaluation import episode_returns

AGENTS = ("auto", "ppo", "sac")
EVAL_EPISODES = 16  # episodes behind the returns recorded in metadata


@dataclasses.dataclass(frozen=True)
class Expert:
    """A trained agent's policies on the raw env ``envs.make(env)``."""

    env: Any
    env_params: Any
    sample: rollout_lib.Policy  # (obs [N, ...], key) -> (action [N, ...], {}): stochastic
    greedy: rollout_lib.Policy  # the mean (continuous) or most likely (discrete) action
    metadata: dict[str, Any]  # agent, agent_steps, its config and hparams


def resolve_agent(agent: str, env, env_params) -> str:
    """``"auto"``: PPO for discrete actions, SAC for continuous ones."""
    require(agent in AGENTS, f"agent: expected one of {AGENTS}, got {agent!r}")
    if agent == "auto":
        return "ppo" if envs.is_discrete(env, env_params) else "sac"
    return agent


def random_policy(env, env_params) -> rollout_lib.Policy:
    space = env.action_space(env_params)

    def policy(obs, key):
        return jax.vmap(space.sample)(jax.random.split(key, obs.shape[0])), {}

    return policy


def _ppo_expert(config: ppo.PPOConfig, state: ppo.PPOState, metadata: dict[str, Any]) -> Expert:
    env, env_params = ppo.make_env(config, training=False)
    discrete = envs.is_discrete(env, env_params)
    network = ppo.make_network(config, env, env_params)
    normalize = ppo.observation_normalizer(config, state)
    space = env.action_space(env_params)

    def distribution(obs):
        return network.apply(state.params, normalize(obs))[0]

    def sample(obs, key):
        action = distribution(obs).sample(seed=key)
        return (action if discrete else jnp.clip(action, space.low, space.high)), {}

    def greedy(obs, key):
        pi = distribution(obs)
        return (pi.mode() if discrete else jnp.clip(pi.mean(), space.low, space.high)), {}

    return Expert(env, env_params, sample, greedy, {"agent": "ppo", **metadata})


def _sac_expert(config: sac.SACConfig, state: sac.SACState, metadata: dict[str, Any]) -> Expert:
    env, env_params = envs.make(config.env, **dict(config.env_kwargs))
    obs_shape, action_dim = envs.observation_shape(env, env_params), envs.action_dim(env, env_params)
    nets = sac.make_networks(config, obs_shape, action_dim)
    actor_params, space = state.learner.actor_params, env.action_space(env_params)

    def sample(obs, key):
        return wrappers.to_box(sac.sample_action(nets, actor_params, obs, key), space), {}

    def greedy(obs, key):
        return wrappers.to_box(sac.mean_action(nets, actor_params, obs), space), {}

    return Expert(env, env_params, sample, greedy, {"agent": "sac", **metadata})


_AGENTS = {"ppo": (ppo, ppo.PPOConfig, ppo.PPOHParams, _ppo_expert),
           "sac": (sac, sac.SACConfig, sac.SACHParams, _sac_expert)}


def train(env: str, key: jax.Array, *, agent: str = "auto", agent_steps: int | None = None,
          fraction: float = 1.0, config: Any = None, hparams: Any = None) -> Expert:
    """Train ``agent`` on ``env`` and return its policies.

    The run is the agent's preset for ``env`` (``rljax.agents.{ppo,sac}.preset``)
    with ``total_timesteps = agent_steps`` if given, or ``config``/``hparams``
    (a ``PPOConfig`` or ``SACConfig``; the agent follows from its type). Training
    stops after the first ``fraction`` of the run's updates (D4RL's "medium").
    """
    require(0 < fraction <= 1, f"fraction: expected a number in (0, 1], got {fraction}")
    if config is not None:
        agent = "ppo" if isinstance(config, ppo.PPOConfig) else "sac"
        require(config.env == env, f"config.env: expected {env!r} (the env asked for), got {config.env!r}")
    else:
        raw_env, raw_params = envs.make(env)
        agent = resolve_agent(agent, raw_env, raw_params)
    module = _AGENTS[agent][0]
    preset_config, preset_hparams = module.preset(env)
    config = config or preset_config
    hparams = hparams or preset_hparams
    if agent_steps:
        config = dataclasses.replace(config, total_timesteps=agent_steps)
    try:
        trainer = module.make_train(config)
    except ConfigError as e:
        raise ConfigError(f"agent {agent!r} cannot train on {env!r}: {e}") from e
    num_updates = max(1, round(fraction * trainer.num_updates))
    state = jax.jit(trainer.init)(key, hparams)
    state, _ = jax.jit(trainer.run_updates, static_argnums=1)(state, num_updates)
    metadata = {"agent_steps": num_updates * trainer.env_steps_per_update,
                f"{agent}_config": to_dict(config), f"{agent}_hparams": to_dict(hparams)}
    return _AGENTS[agent][3](config, state, metadata)


def load(run_dir: str, seed_index: int = 0) -> Expert:
    """The policy of seed ``seed_index`` in the latest checkpoint of a ``python -m experiments {ppo,sac}`` run."""
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path}: no such file; expected the directory of a ppo or sac run")
    with open(config_path) as f:
        run_config = json.load(f)
    agent = run_config.get("experiment")
    if agent not in _AGENTS:
        raise ConfigError(f"{config_path}: experiment is {agent!r}; expected one of {sorted(_AGENTS)}")
    module, config_cls, hparams_cls, build = _AGENTS[agent]
    config, hparams = from_dict(config_cls, run_config["config"]), from_dict(hparams_cls, run_config["hparams"])
    seeds = run_config["seeds"]
    require(0 <= seed_index < seeds, f"seed_index: expected 0 <= seed_index < {seeds} (the run's seeds), got {seed_index}")
    trainer = module.make_train(config)
    like = jax.eval_shape(jax.vmap(trainer.init), jax.random.split(jax.random.PRNGKey(0), seeds),
                          broadcast_hparams(hparams, seeds))
    checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"), run_config)
    try:
        states, meta = checkpointer.restore(like)
    finally:
        checkpointer.close()
    state = jax.tree.map(lambda x: x[seed_index], states)
    metadata = {"agent_steps": int(meta["env_steps"]),
                "expert_run": os.path.abspath(run_dir), "expert_seed_index": seed_index,
                f"{agent}_config": to_dict(config), f"{agent}_hparams": to_dict(hparams)}
    return build(config, state, metadata)


def mean_return(env, env_params, policy: rollout_lib.Policy, key: jax.Array) -> Any:
    """Mean return of ``policy`` over ``EVAL_EPISODES`` fresh episodes (a list for vector rewards)."""
    act = lambda obs, k: policy(obs, k)[0]  # noqa: E731
    returns = jax.jit(lambda k: episode_returns(env, env_params, act, k, EVAL_EPISODES)["return"])(key)
    return np.asarray(returns).mean(axis=0).tolist()
