"""Soft Actor-Critic (Haarnoja et al., 2018a; automatic temperature, 2018b).

Continuous actions, twin Q networks with Polyak-averaged targets, a
tanh-squashed Gaussian policy and automatic entropy tuning. Same shape as
every rljax agent:

    trainer = make_train(SACConfig(env="gymnax/Pendulum-v1"))
    state, metrics = jax.jit(trainer)(key, SACHParams())
    states, metrics = jax.jit(jax.vmap(trainer))(keys, broadcast_hparams(SACHParams(), len(keys)))

One ``update`` collects ``num_envs * steps_per_update`` transitions into the
replay buffer, then (after ``learning_starts`` env steps of uniform random
actions) takes ``gradient_steps`` gradient steps on minibatches from it.
Actions are learned in [-1, 1] and rescaled onto the env's action box.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs
from envs import wrappers
from rljax.core import replay as replay_lib
from rljax.core import rollout as rollout_lib
from rljax.core.config import ConfigError, require, require_positive
from rljax.core.evaluation import episode_returns
from rljax.core.networks import QEnsemble, SquashedGaussianActor
from rljax.core.trainer import Trainer
from rljax.losses import soft_q


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """Static settings. Defaults follow the SAC paper (Haarnoja et al., 2018b, table 1)."""

    env: str = "gymnax/Pendulum-v1"
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    num_envs: int = 1
    steps_per_update: int = 1  # env steps per env between gradient phases
    gradient_steps: int = 1  # gradient steps per update
    total_timesteps: int = 20_000
    learning_starts: int = 1_000  # env steps (all envs) of uniform random actions first
    buffer_size: int = 100_000
    batch_size: int = 256
    hidden_sizes: tuple[int, ...] = (256, 256)
    num_q: int = 2
    target_entropy_scale: float = 1.0  # target entropy = -scale * action_dim
    eval_episodes: int = 8

    def __post_init__(self):
        require_positive(self, "num_envs", "steps_per_update", "gradient_steps", "total_timesteps",
                         "buffer_size", "batch_size", "num_q")
        batch = self.num_envs * self.steps_per_update
        require(
            self.total_timesteps >= batch,
            f"SACConfig.total_timesteps = {self.total_timesteps} is less than one update's "
            f"num_envs * steps_per_update = {batch}",
        )
        require(
            self.buffer_size >= batch,
            f"SACConfig.buffer_size = {self.buffer_size} cannot hold one update's {batch} transitions",
        )
        object.__setattr__(self, "env_kwargs", tuple(tuple(kv) for kv in self.env_kwargs))
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // (self.num_envs * self.steps_per_update)


@struct.dataclass
class SACHParams:
    """Dynamic hyperparameters (vmappable): Adam rates of actor, critics and temperature, ``gamma``, the target
    step ``tau`` and the initial temperature ``init_alpha``."""

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005  # Polyak step of the target critics
    init_alpha: float = 1.0


PRESETS: dict[str, tuple[SACConfig, SACHParams]] = {
    "gymnax/Pendulum-v1": (SACConfig(), SACHParams()),
    "brax/inverted_pendulum": (
        # One gradient step per env step, as in the paper, with 4 envs collecting.
        SACConfig(env="brax/inverted_pendulum", num_envs=4, steps_per_update=1, gradient_steps=4,
                  total_timesteps=100_000, learning_starts=4_000, eval_episodes=4),
        SACHParams(),
    ),
}
# Brax locomotion, sized for a GPU: the SAC paper's 1e6 env steps (its Hopper budget) and one gradient
# step per env step, with 16 envs collecting and 16 gradient steps per update; 1000-step episodes.
PRESETS.update({
    name: (SACConfig(env=name, num_envs=16, steps_per_update=1, gradient_steps=16, total_timesteps=1_000_000,
                     learning_starts=10_000, buffer_size=1_000_000, eval_episodes=8), SACHParams())
    for name in ("brax/hopper", "brax/halfcheetah")
})


def preset(env: str) -> tuple[SACConfig, SACHParams]:
    """``(config, hparams)`` tuned for ``env`` in ``PRESETS``; else Pendulum's preset on ``env``."""
    if env in PRESETS:
        return PRESETS[env]
    return dataclasses.replace(PRESETS["gymnax/Pendulum-v1"][0], env=env), SACHParams()


@struct.dataclass
class Transition:
    """One replay item ``(s, a, r, s', terminated)``, or a batch of them with leaves ``[B, ...]``; actions in
    [-1, 1]. Also AILBoost's replay item (its rewards are relabelled by the discriminator)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array  # pre-reset: bootstrap target on truncation
    terminated: jax.Array


@struct.dataclass
class SACLearner:
    """The learning part of SAC: networks, targets, temperature and their optimiser states.

    Kept apart from the data (replay, envs) so that other agents train a SAC
    learner on their own batches (AILBoost relabels rewards with a discriminator).
    """

    actor_params: Any
    critic_params: Any
    target_critic_params: Any
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any


@struct.dataclass
class SACState:
    """The whole SAC training state, one pytree: the :class:`SACLearner`, the replay buffer (one segment), the
    ``num_envs`` env carry, PRNG key, ``env_steps`` (scalar) and the hparams."""

    learner: SACLearner
    replay: replay_lib.ReplayState
    env: rollout_lib.EnvCarry
    key: jax.Array
    env_steps: jax.Array  # transitions collected so far, all envs
    hparams: SACHParams


class SACNetworks(NamedTuple):
    """The networks and the constants one gradient step needs."""

    actor: SquashedGaussianActor
    critic: QEnsemble
    target_entropy: float  # -scale * action_dim
    obs_shape: tuple[int, ...]
    action_dim: int


def make_networks(config: SACConfig, obs_shape: tuple[int, ...], action_dim: int) -> SACNetworks:
    """Squashed-Gaussian actor and Q ensemble; target entropy ``-target_entropy_scale * action_dim``."""
    return SACNetworks(
        actor=SquashedGaussianActor(action_dim, config.hidden_sizes),
        critic=QEnsemble(config.num_q, config.hidden_sizes),
        target_entropy=-config.target_entropy_scale * action_dim,
        obs_shape=tuple(obs_shape), action_dim=action_dim,
    )


def _optimizers(hp: SACHParams):
    # Rebuilt from (possibly traced) learning rates; their states do not depend on them.
    return optax.adam(hp.actor_lr), optax.adam(hp.critic_lr), optax.adam(hp.alpha_lr)


def init_learner(nets: SACNetworks, key: jax.Array, hp: SACHParams) -> SACLearner:
    """Fresh parameters, target critic (= critic), ``log alpha = log init_alpha`` and optimiser states."""
    actor_key, critic_key = jax.random.split(key)
    obs = jnp.zeros((1,) + nets.obs_shape)
    actor_params = nets.actor.init(actor_key, obs)
    critic_params = nets.critic.init(critic_key, obs, jnp.zeros((1, nets.action_dim)))
    log_alpha = jnp.log(jnp.asarray(hp.init_alpha, jnp.float32))
    actor_tx, critic_tx, alpha_tx = _optimizers(hp)
    return SACLearner(
        actor_params=actor_params, critic_params=critic_params, target_critic_params=critic_params,
        log_alpha=log_alpha, actor_opt=actor_tx.init(actor_params), critic_opt=critic_tx.init(critic_params),
        alpha_opt=alpha_tx.init(log_alpha),
    )


def learner_step(nets: SACNetworks, learner: SACLearner, hp: SACHParams, batch: Transition, key: jax.Array):
    """One SAC gradient step (critic, actor, temperature, targets) on ``batch`` (leaves ``[B, ...]``)."""
    actor_tx, critic_tx, alpha_tx = _optimizers(hp)
    next_key, actor_key = jax.random.split(key)
    alpha = jnp.exp(learner.log_alpha)

    # Critic: regress every Q_i onto the soft TD target from the target critics.
    next_action, next_log_prob = nets.actor.apply(learner.actor_params, batch.next_obs).sample_and_log_prob(
        seed=next_key
    )
    next_q = nets.critic.apply(learner.target_critic_params, batch.next_obs, next_action)
    target = soft_q.soft_td_target(batch.reward, batch.terminated, next_q, next_log_prob, alpha, hp.gamma)
    (_, critic_aux), grads = jax.value_and_grad(
        lambda p: soft_q.critic_loss(nets.critic.apply(p, batch.obs, batch.action), target), has_aux=True
    )(learner.critic_params)
    updates, critic_opt = critic_tx.update(grads, learner.critic_opt, learner.critic_params)
    critic_params = optax.apply_updates(learner.critic_params, updates)

    # Actor: reparameterised actions scored by the updated critics.
    def actor_objective(p):
        action, log_prob = nets.actor.apply(p, batch.obs).sample_and_log_prob(seed=actor_key)
        loss, aux = soft_q.actor_loss(log_prob, nets.critic.apply(critic_params, batch.obs, action), alpha)
        return loss, (aux, log_prob)

    (_, (actor_aux, log_prob)), grads = jax.value_and_grad(actor_objective, has_aux=True)(learner.actor_params)
    updates, actor_opt = actor_tx.update(grads, learner.actor_opt, learner.actor_params)
    actor_params = optax.apply_updates(learner.actor_params, updates)

    # Temperature: move alpha so the policy's entropy tracks the target.
    (_, alpha_aux), grad = jax.value_and_grad(soft_q.temperature_loss, has_aux=True)(
        learner.log_alpha, log_prob, nets.target_entropy
    )
    updates, alpha_opt = alpha_tx.update(grad, learner.alpha_opt, learner.log_alpha)
    log_alpha = optax.apply_updates(learner.log_alpha, updates)

    target_critic_params = optax.incremental_update(critic_params, learner.target_critic_params, hp.tau)
    learner = SACLearner(
        actor_params=actor_params, critic_params=critic_params, target_critic_params=target_critic_params,
        log_alpha=log_alpha, actor_opt=actor_opt, critic_opt=critic_opt, alpha_opt=alpha_opt,
    )
    return learner, {**critic_aux, **actor_aux, **alpha_aux}


def sample_action(nets: SACNetworks, actor_params: Any, obs: jax.Array, key: jax.Array) -> jax.Array:
    """A stochastic action in [-1, 1]: ``[B, action_dim]``."""
    return nets.actor.apply(actor_params, obs).sample(seed=key)


def mean_action(nets: SACNetworks, actor_params: Any, obs: jax.Array) -> jax.Array:
    """The deterministic action in [-1, 1] (the Gaussian mean, squashed): ``[B, action_dim]``."""
    return jnp.tanh(nets.actor.apply(actor_params, obs).distribution.mean())


def make_env(config: SACConfig, *, training: bool = True):
    """Actions in [-1, 1] rescaled onto the env's box; episode statistics for training."""
    env, env_params = envs.make(config.env, **dict(config.env_kwargs))
    if envs.is_discrete(env, env_params):
        raise ConfigError(f"SACConfig.env = {config.env!r} has discrete actions; SAC needs continuous ones")
    if envs.reward_shape(env) != ():
        raise ConfigError(f"SACConfig.env = {config.env!r} has vector rewards; wrap it in ScalarizeReward")
    env = wrappers.RescaleAction(env)
    if training:
        env = wrappers.EpisodeStatistics(env)
    return env, env_params


def make_train(config: SACConfig) -> Trainer:
    """SAC's :class:`Trainer`: each update collects ``num_envs x steps_per_update`` env steps into the replay
    buffer, then takes ``gradient_steps`` gradient steps (twin-Q targets, automatic temperature); the first
    ``learning_starts`` env steps take uniform random actions.
    """
    env, env_params = make_env(config)
    eval_env, _ = make_env(config, training=False)
    nets = make_networks(config, envs.observation_shape(env, env_params), envs.action_dim(env, env_params))
    collect = config.num_envs * config.steps_per_update

    def init(key: jax.Array, hp: SACHParams) -> SACState:
        learner_key, env_key, key = jax.random.split(key, 3)
        obs = jnp.zeros(nets.obs_shape)
        example = Transition(obs, jnp.zeros((nets.action_dim,)), jnp.zeros(()), obs, jnp.zeros((), bool))
        return SACState(
            learner=init_learner(nets, learner_key, hp), replay=replay_lib.init(example, config.buffer_size),
            env=rollout_lib.reset(env, env_params, env_key, config.num_envs), key=key,
            env_steps=jnp.zeros((), jnp.int32), hparams=hp,
        )

    def gradient_step(state: SACState, key: jax.Array):
        sample_key, step_key = jax.random.split(key)
        batch, _ = replay_lib.sample(state.replay, sample_key, config.batch_size)
        learner, metrics = learner_step(nets, state.learner, state.hparams, batch, step_key)
        return state.replace(learner=learner), metrics

    def update(state: SACState):
        key, rollout_key, grad_key = jax.random.split(state.key, 3)
        warmup = state.env_steps < config.learning_starts

        # 1. Collect: uniform random actions until learning_starts, then the stochastic policy.
        def policy(obs, k):
            policy_key, random_key = jax.random.split(k)
            action = sample_action(nets, state.learner.actor_params, obs, policy_key)
            random_action = jax.random.uniform(random_key, action.shape, minval=-1.0, maxval=1.0)
            return jnp.where(warmup, random_action, action), {}

        env_carry, traj = rollout_lib.rollout(env, env_params, policy, state.env, rollout_key, config.steps_per_update)
        flat = lambda x: x.reshape((collect,) + x.shape[2:])  # noqa: E731
        transitions = Transition(flat(traj.obs), flat(traj.action), flat(traj.reward), flat(traj.next_obs),
                                 flat(traj.terminated))
        state = state.replace(
            replay=replay_lib.add(state.replay, transitions), env=env_carry, key=key,
            env_steps=state.env_steps + collect,
        )

        # 2. Learn, once enough data has been collected.
        def learn(s):
            return jax.lax.scan(gradient_step, s, jax.random.split(grad_key, config.gradient_steps))

        def skip(s):
            _, losses = jax.eval_shape(learn, s)
            return s, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), losses)

        state, losses = jax.lax.cond(state.env_steps >= config.learning_starts, learn, skip, state)
        metrics = {name: value.mean() for name, value in losses.items()}
        metrics |= wrappers.episode_metrics(traj.info)
        return state, metrics

    def evaluate(state: SACState, key: jax.Array) -> dict[str, jax.Array]:
        def act(obs, k):
            return mean_action(nets, state.learner.actor_params, obs)

        return episode_returns(eval_env, env_params, act, key, config.eval_episodes)

    return Trainer(
        config=config, init=init, update=update, evaluate=evaluate,
        num_updates=config.num_updates, env_steps_per_update=collect,
    )
