"""MAMQL with continuous actions: multi-agent brax (JaxMARL MABrax), offline (Haynam et al. 2025).

The algorithm of ``rljax.agents.mamql`` (read that docstring first) with the continuous-action
soft-Q machinery of IQ-Learn's SAC agent (``rljax.agents.iq_learn``). Each agent ``i`` has

* a *marginal* critic ensemble ``Qbar_i(o_i, a_i)`` (the other agents are part of its
  environment), trained with the single-agent chi-squared IQ-Learn objective
  (``rljax.losses.imitation.iq_learn_loss``, offline: value term and regulariser over the
  expert transitions) on agent i's own observation and action;
* a tanh-Gaussian actor ``pi_i(a_i | o_i)``, the continuous stand-in for the Boltzmann policy
  ``pi_i ∝ exp(Qbar_i / T)``: SAC's actor loss on ``Qbar_i`` (``soft_q.actor_loss``), with
  ``V_i(o) = min_k Qbar_i,k(o, a') - T log pi_i(a'|o)``, ``a' ~ pi_i(.|o)`` (one sample), so
  ``T = 1 / lam`` of the discrete version;
* the recovered reward ``r_i = Qbar_i(o, a_i) - gamma (1 - terminated) V_i(o')`` (as in IQ-Learn).

Baselines (``method``): ``"joint_iq"``, per agent the same learner on the JOINT action
``Q_i(o_i, a)`` and ``pi_i(a | o_i)`` (as if agent i controlled everyone), acting with its own
component; ``"bc"``, per-agent maximum likelihood of ``a_i`` under ``pi_i(. | o_i)``.

Agents' parameters are stacked on a leading axis and updated by one ``vmap``, so the
observations and actions of all agents must have one shape: MABrax's
``homogenisation_method="max"`` (the agent's one-hot index and its zero-padded observation)
gives that for its ``*_Nx1`` mappings (hopper_3x1, halfcheetah_6x1: one joint per agent).

Demonstrations come from a single-agent expert on the underlying brax env (``make-demos`` on
``brax/hopper``): :meth:`MultiAgentDemonstrations.from_dataset` maps each global observation and
action onto the agents with the env's own mappings. Evaluation runs the agents' deterministic
actions (``tanh`` of the mean) together in the multi-agent env; the team return is the brax
env's return, so it compares with the expert's.

    env, env_params = envs.multiagent.make("jaxmarl/hopper_3x1", **MABRAX_KWARGS)
    demos = MultiAgentDemonstrations.from_dataset(dataset, env)
    trainer = make_train(MAMQLContinuousConfig(env="jaxmarl/hopper_3x1"), demos)
    state, metrics = jax.jit(trainer)(key, iq_learn.IQLearnHParams(critic_lr=3e-4, actor_lr=3e-4, temperature=1e-2))
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import envs.multiagent
from rljax.agents.iq_learn import IQLearnHParams
from rljax.core.config import ConfigError, require, require_one_of, require_positive
from rljax.core.networks import QEnsemble, SquashedGaussianActor
from rljax.core.trainer import Trainer
from rljax.losses import soft_q
from rljax.losses.imitation import bc_loss, iq_learn_loss

METHODS = ("mamql", "joint_iq", "bc")
# MABrax built for this learner: equal observation shapes across agents, and no auto-reset inside
# brax (the evaluation stops at each episode's end itself).
MABRAX_KWARGS = {"homogenisation_method": "max", "auto_reset": False}
ACTION_EDGE = 1.0 - 1e-6  # demonstrated actions on the box edge get finite tanh-Gaussian log-probs


@dataclasses.dataclass(frozen=True)
class MAMQLContinuousConfig:
    """Static settings of continuous-action MAMQL (Haynam et al. 2025) on a JaxMARL MABrax env, and its
    ``"joint_iq"`` / ``"bc"`` baselines. Each update runs ``gradient_steps`` minibatch Adam steps."""

    env: str = "jaxmarl/hopper_3x1"
    env_kwargs: tuple[tuple[str, Any], ...] = tuple(MABRAX_KWARGS.items())
    method: str = "mamql"
    num_updates: int = 100  # host-loop updates
    gradient_steps: int = 100  # Adam steps per update (metrics are their means)
    batch_size: int = 256
    hidden_sizes: tuple[int, ...] = (256, 256)
    num_q: int = 2
    eval_episodes: int = 10
    max_episode_steps: int = 1000  # evaluation horizon (brax's episode_length)

    def __post_init__(self):
        require_one_of(self, "method", METHODS)
        require_positive(self, "num_updates", "gradient_steps", "batch_size", "num_q", "eval_episodes",
                         "max_episode_steps")
        sizes = tuple(self.hidden_sizes)
        require(len(sizes) > 0 and all(int(h) > 0 for h in sizes),
                f"MAMQLContinuousConfig.hidden_sizes: expected one or more positive widths, got {sizes!r}")
        object.__setattr__(self, "hidden_sizes", sizes)
        object.__setattr__(self, "env_kwargs", tuple(tuple(kv) for kv in self.env_kwargs))


@struct.dataclass
class MultiAgentDemonstrations:
    """Expert transitions seen by each of ``A`` agents: ``obs``, ``next_obs`` ``[A, N, F]``, ``action``
    ``[A, N, d]`` (own), ``joint_action`` ``[N, D]`` (the whole env's), ``terminated`` ``[N]`` bool.
    Actions lie in [-1, 1] (brax's box)."""

    obs: jax.Array
    action: jax.Array
    joint_action: jax.Array
    next_obs: jax.Array
    terminated: jax.Array

    @property
    def num_transitions(self) -> int:
        return int(self.terminated.shape[0])

    @classmethod
    def from_dataset(cls, dataset, env) -> "MultiAgentDemonstrations":
        """A single-agent ``Dataset`` recorded on the brax env under a MABrax ``env`` (its global
        observations and actions), mapped onto the agents by the env's own observation and action maps."""
        mabrax = env.unwrapped
        for field, size in (("obs", mabrax.env.observation_size), ("action", mabrax.env.action_size)):
            shape = np.shape(getattr(dataset, field))
            if len(shape) != 2 or shape[1] != size:
                raise ConfigError(f"dataset.{field}: {env.name} is built on a brax env with {field} rows of size "
                                  f"{size}; the dataset's {field} has shape {shape}")
        action = np.asarray(dataset.action, np.float32)
        if np.abs(action).max() > 1.0:
            raise ConfigError(f"dataset.action: brax actions lie in [-1, 1], got values up to {np.abs(action).max()}")

        def per_agent(global_obs):
            views = jax.vmap(mabrax.map_global_obs_to_agents)(jnp.asarray(global_obs, jnp.float32))
            return jnp.stack([views[agent] for agent in env.agents])  # [A, N, F]

        own = [action[:, np.asarray(mabrax.agent_action_mapping[agent])] for agent in env.agents]
        if len({a.shape for a in own}) != 1:
            raise ConfigError(f"{env.name}: agents control different numbers of joints "
                              f"({[a.shape[1] for a in own]}); this learner stacks agents and needs equal ones")
        return cls(obs=per_agent(dataset.obs), action=jnp.asarray(np.stack(own)), joint_action=jnp.asarray(action),
                   next_obs=per_agent(dataset.next_obs), terminated=jnp.asarray(dataset.terminated, bool))


@struct.dataclass
class MAMQLContinuousState:
    """The whole training state, one pytree: per-agent critic ensembles and tanh-Gaussian actors (leading
    axis: agents), their Adam states, the demonstrations, and ``step`` (gradient steps done, scalar)."""

    critic_params: Any  # stacked over agents (None for bc)
    actor_params: Any  # stacked over agents
    critic_opt: Any
    actor_opt: Any
    demos: MultiAgentDemonstrations
    key: jax.Array
    step: jax.Array
    hparams: IQLearnHParams


def make_env(config: MAMQLContinuousConfig):
    """The JaxMARL MABrax env; its agents must share one observation shape (``homogenisation_method='max'``)."""
    env, params = envs.multiagent.make(config.env, **dict(config.env_kwargs))
    shapes = {tuple(env.observation_space(a).shape) for a in env.agents}
    require(len(shapes) == 1, f"MAMQLContinuousConfig.env = {config.env!r}: agents' observations differ in shape "
                              f"({sorted(shapes)}); build it with homogenisation_method='max'")
    return env, params


def make_train(config: MAMQLContinuousConfig, demos: MultiAgentDemonstrations) -> Trainer:
    """A :class:`Trainer` fitting ``config.method`` (MAMQL, BC or joint-action IQ-Learn) to ``demos``, offline.

    ``demos.obs [A, N, obs]``, ``demos.action [A, N, own]``: each agent's view and its own action. Each
    agent's critic ensemble and actor are updated by one ``vmap`` over agents, ``gradient_steps`` per
    update; ``evaluate`` runs ``eval_episodes`` episodes of the team (the agents' ``tanh(mean)`` actions):
    ``{"return": [E], "length": [E]}``, the team reward's return.
    """
    env, env_params = make_env(config)
    num_agents = len(env.agents)
    require(demos.obs.shape[0] == num_agents and demos.obs.shape[2:] == env.observation_space(env.agents[0]).shape,
            f"demos.obs: expected [{num_agents}, N, {env.observation_space(env.agents[0]).shape[0]}] for {config.env}, "
            f"got {tuple(demos.obs.shape)}")
    own_dim, joint_dim = demos.action.shape[-1], demos.joint_action.shape[-1]
    view_dim = joint_dim if config.method == "joint_iq" else own_dim
    agent_index = jnp.arange(num_agents)
    critic = QEnsemble(config.num_q, config.hidden_sizes)
    actor = SquashedGaussianActor(view_dim, config.hidden_sizes)
    batch = min(config.batch_size, demos.num_transitions)

    def action_view(d: MultiAgentDemonstrations, rows):
        """``[A, B, view_dim]``: each agent's own action, or the joint action for joint_iq."""
        if config.method == "joint_iq":
            return jnp.broadcast_to(d.joint_action[rows], (num_agents, rows.shape[0], joint_dim))
        return d.action[:, rows]

    def own_component(i, view_action):
        """Agent i's own action out of its policy's action (joint_iq: the i-th joint's slice)."""
        if config.method != "joint_iq":
            return view_action
        return jax.lax.dynamic_slice_in_dim(view_action, i * own_dim, own_dim, axis=-1)

    def value(critic_p, actor_p, temperature, obs, key):
        action, log_prob = actor.apply(actor_p, obs).sample_and_log_prob(seed=key)
        return critic.apply(critic_p, obs, action).min(axis=0) - temperature * log_prob

    # -- one agent's losses (vmapped over agents)

    def critic_objective(critic_p, actor_p, hp, obs, action, next_obs, terminated, key):
        v_key, next_key = jax.random.split(key)
        q = critic.apply(critic_p, obs, action)  # [K, B]
        v = value(critic_p, actor_p, hp.temperature, obs, v_key)
        next_v = value(critic_p, actor_p, hp.temperature, next_obs, next_key)
        expert = jnp.ones_like(terminated)
        per_member = jax.vmap(lambda q_k: iq_learn_loss(q_k, v, next_v, terminated, expert, gamma=hp.gamma,
                                                        alpha=hp.alpha))(q)
        return jax.tree.map(lambda x: x.mean(axis=0), per_member)

    def actor_objective(actor_p, critic_p, hp, obs, action, key):
        pi = actor.apply(actor_p, obs)
        if config.method == "bc":
            return bc_loss(pi.log_prob(jnp.clip(action, -ACTION_EDGE, ACTION_EDGE)))
        sample, log_prob = pi.sample_and_log_prob(seed=key)
        return soft_q.actor_loss(log_prob, critic.apply(critic_p, obs, sample), hp.temperature)

    # -- init and update

    def init(key: jax.Array, hp: IQLearnHParams) -> MAMQLContinuousState:
        critic_key, actor_key, key = jax.random.split(key, 3)
        obs, view = demos.obs[0, :1], jnp.zeros((1, view_dim))
        actor_params = jax.vmap(lambda k: actor.init(k, obs))(jax.random.split(actor_key, num_agents))
        critic_params = None
        if config.method != "bc":
            critic_params = jax.vmap(lambda k: critic.init(k, obs, view))(jax.random.split(critic_key, num_agents))
        return MAMQLContinuousState(
            critic_params=critic_params, actor_params=actor_params,
            critic_opt=None if critic_params is None else optax.adam(hp.critic_lr).init(critic_params),
            actor_opt=optax.adam(hp.actor_lr).init(actor_params), demos=demos, key=key,
            step=jnp.zeros((), jnp.int32), hparams=hp)  # fmt: skip

    def gradient_step(state: MAMQLContinuousState, key):
        hp, d = state.hparams, state.demos
        rows_key, critic_key, actor_key = jax.random.split(key, 3)
        rows = jax.random.choice(rows_key, d.num_transitions, (batch,), replace=False)
        obs, next_obs, action = d.obs[:, rows], d.next_obs[:, rows], action_view(d, rows)
        terminated = d.terminated[rows]
        critic_params, critic_opt, metrics = state.critic_params, state.critic_opt, {}
        if config.method != "bc":
            agent_keys = jax.random.split(critic_key, num_agents)

            def critic_total(p):  # agents' losses are independent: the sum's gradient is each agent's own
                losses, aux = jax.vmap(critic_objective, in_axes=(0, 0, None, 0, 0, 0, None, 0))(
                    p, state.actor_params, hp, obs, action, next_obs, terminated, agent_keys)
                return losses.sum(), aux

            (_, aux), grads = jax.value_and_grad(critic_total, has_aux=True)(critic_params)
            updates, critic_opt = optax.adam(hp.critic_lr).update(grads, critic_opt, critic_params)
            critic_params = optax.apply_updates(critic_params, updates)
            metrics |= {name: value.mean() for name, value in aux.items()}

        def actor_total(p):  # on the updated critic, as IQ-Learn's SAC agent
            losses, aux = jax.vmap(actor_objective, in_axes=(0, 0, None, 0, 0, 0))(
                p, critic_params, hp, obs, action, jax.random.split(actor_key, num_agents))
            return losses.sum(), aux

        (_, aux), grads = jax.value_and_grad(actor_total, has_aux=True)(state.actor_params)
        updates, actor_opt = optax.adam(hp.actor_lr).update(grads, state.actor_opt, state.actor_params)
        metrics |= {name: value.mean() for name, value in aux.items()}
        metrics["loss"] = metrics["iq_loss"] if config.method != "bc" else metrics["bc_loss"]
        return state.replace(critic_params=critic_params, critic_opt=critic_opt,
                             actor_params=optax.apply_updates(state.actor_params, updates), actor_opt=actor_opt,
                             step=state.step + 1), metrics

    def update(state: MAMQLContinuousState):
        key, steps_key = jax.random.split(state.key)
        state, metrics = jax.lax.scan(gradient_step, state.replace(key=key),
                                      jax.random.split(steps_key, config.gradient_steps))
        return state, {name: value.mean() for name, value in metrics.items()}

    # -- evaluation: all agents' deterministic actions together

    def joint_action(state: MAMQLContinuousState, obs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        stacked = jnp.stack([obs[agent] for agent in env.agents])  # [A, F]
        means = jax.vmap(lambda p, o: jnp.tanh(actor.apply(p, o).distribution.mean()))(state.actor_params, stacked)
        own = jax.vmap(own_component)(agent_index, means)  # [A, own_dim]
        return {agent: own[i] for i, agent in enumerate(env.agents)}

    def episode_return(state: MAMQLContinuousState, key):
        obs, env_state = env.reset(key, env_params)

        def step(carry, k):
            obs, env_state, total, length, done = carry
            next_obs, next_state, rewards, dones, _ = env.step_env(k, env_state, joint_action(state, obs), env_params)
            live = ~done
            total = total + jnp.where(live, rewards[env.agents[0]], 0.0)  # the team reward (brax's)
            carry = (next_obs, next_state, total, length + live, done | dones["__all__"])
            return carry, None

        init_carry = (obs, env_state, jnp.zeros(()), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
        (_, _, total, length, _), _ = jax.lax.scan(step, init_carry, jax.random.split(key, config.max_episode_steps))
        return total, length

    def evaluate(state: MAMQLContinuousState, key: jax.Array) -> dict[str, jax.Array]:
        """``{"return": [E], "length": [E]}``: team return of the agents' ``tanh(mean)`` actions."""
        returns, lengths = jax.vmap(lambda k: episode_return(state, k))(jax.random.split(key, config.eval_episodes))
        return {"return": returns, "length": lengths}

    return Trainer(config=config, init=init, update=update, evaluate=evaluate, num_updates=config.num_updates,
                   env_steps_per_update=config.gradient_steps)  # offline: counts gradient steps

