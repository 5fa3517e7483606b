"""Proximal Policy Optimisation (Schulman et al., 2017), discrete and continuous.

Reads top to bottom like PureJaxRL's ``ppo.py``, whose defaults it matches, with
a typed static config, a vmappable hyperparameter pytree, correct bootstrapping
on truncation, and the pieces exposed for the host loop:

    trainer = make_train(PPOConfig())
    state, metrics = jax.jit(trainer)(key, PPOHParams())                  # one run
    state, metrics = jax.jit(jax.vmap(trainer))(keys, hparams_per_seed)   # many
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs
from envs import wrappers
from rljax.core import rollout as rollout_lib
from rljax.core.config import ConfigError, require, require_positive
from rljax.core.evaluation import episode_returns
from rljax.core.networks import ActorCritic
from rljax.core.returns import gae
from rljax.core.trainer import Trainer
from rljax.losses.policy_gradient import PPOBatch, Surrogate, ppo_clip_surrogate, ppo_loss


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Static settings (shapes and counts). Defaults: PureJaxRL's CartPole PPO."""

    env: str = "gymnax/CartPole-v1"
    env_kwargs: tuple[tuple[str, Any], ...] = ()  # e.g. (("backend", "generalized"),)
    num_envs: int = 4
    num_steps: int = 128  # rollout length per env per update
    total_timesteps: int = 500_000
    update_epochs: int = 4
    num_minibatches: int = 4
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    # "torch": PyTorch's nn.Linear init. On CPU hosts with forced devices, XLA's runtime can hang when the
    # orthogonal init's QR runs inside a population sharded over those devices; "torch" needs no QR.
    initializer: str = "orthogonal"
    anneal_lr: bool = True  # linear decay to 0 over the run
    normalize_obs: bool = False
    normalize_reward: bool = False  # scale rewards by the running std of the discounted return
    reward_normalization_gamma: float = 0.99
    normalize_advantages: bool = True
    eval_episodes: int = 16
    deterministic_eval: bool = True  # evaluate the mode of the policy

    def __post_init__(self):
        require_positive(self, "num_envs", "num_steps", "total_timesteps", "update_epochs", "num_minibatches")
        batch = self.num_envs * self.num_steps
        require(
            batch % self.num_minibatches == 0,
            f"PPOConfig: the batch num_envs * num_steps = {self.num_envs} * {self.num_steps} = {batch} "
            f"does not divide into num_minibatches = {self.num_minibatches} minibatches",
        )
        require(
            self.total_timesteps >= batch,
            f"PPOConfig.total_timesteps = {self.total_timesteps} is less than one update's batch "
            f"num_envs * num_steps = {batch}",
        )
        object.__setattr__(self, "env_kwargs", tuple(tuple(kv) for kv in self.env_kwargs))
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // (self.num_envs * self.num_steps)


@struct.dataclass
class PPOHParams:
    """Dynamic hyperparameters: a pytree, so runs can be vmapped over them."""

    learning_rate: float = 2.5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5


# Per-environment settings. CartPole: PureJaxRL's ppo.py. Continuous control:
# PureJaxRL's ppo_continuous_action.py network (256x256 tanh, no annealing, ent 0)
# with a smaller batch that suits CPU budgets of 1e5-1e6 steps.
PRESETS: dict[str, tuple[PPOConfig, PPOHParams]] = {
    "gymnax/CartPole-v1": (PPOConfig(), PPOHParams()),
    "brax/inverted_pendulum": (
        PPOConfig(
            env="brax/inverted_pendulum", num_envs=32, num_steps=64, total_timesteps=500_000,
            update_epochs=4, num_minibatches=8, hidden_sizes=(256, 256), anneal_lr=False,
            normalize_obs=True, normalize_reward=True, eval_episodes=8,
        ),
        PPOHParams(learning_rate=3e-4, ent_coef=0.0),
    ),
}


def preset(env: str) -> tuple[PPOConfig, PPOHParams]:
    """Tuned defaults for ``env`` if we have them, else PureJaxRL's for its action type."""
    if env in PRESETS:
        return PRESETS[env]
    environment, params = envs.make(env)
    if envs.is_discrete(environment, params):
        return PPOConfig(env=env), PPOHParams()
    return dataclasses.replace(PRESETS["brax/inverted_pendulum"][0], env=env), PRESETS["brax/inverted_pendulum"][1]


@struct.dataclass
class PPOState:
    """The whole PPO training state, one pytree: actor-critic params, optimiser state, the ``num_envs`` env
    carry (obs ``[num_envs, *obs_shape]``), PRNG key, ``update_step`` (updates done, scalar) and the hparams."""

    params: Any
    opt_state: Any
    env: rollout_lib.EnvCarry
    key: jax.Array
    update_step: jax.Array
    hparams: PPOHParams


def make_env(config: PPOConfig, *, training: bool = True):
    """The env as PPO sees it: clipped actions, optional normalised observations, statistics."""
    env, env_params = envs.make(config.env, **dict(config.env_kwargs))
    if envs.reward_shape(env) != ():
        raise ConfigError(
            f"PPOConfig.env = {config.env!r} has vector rewards of shape {envs.reward_shape(env)}; "
            "wrap it in envs.wrappers.ScalarizeReward or use a multi-objective agent"
        )
    if not envs.is_discrete(env, env_params):
        env = wrappers.ClipAction(env)
    env = wrappers.flatten_images(env, env_params)
    if training:
        if config.normalize_obs:
            env = wrappers.NormalizeObservation(env, axis_name=rollout_lib.ENV_AXIS)
        env = wrappers.EpisodeStatistics(env)
        if config.normalize_reward:
            env = wrappers.NormalizeReward(env, config.reward_normalization_gamma, axis_name=rollout_lib.ENV_AXIS)
    return env, env_params


def make_network(config: PPOConfig, env, env_params) -> ActorCritic:
    """The actor-critic for ``env``'s action space (categorical or Gaussian head)."""
    return ActorCritic(
        action_dim=envs.action_dim(env, env_params), discrete=envs.is_discrete(env, env_params),
        hidden_sizes=config.hidden_sizes, activation=config.activation, initializer=config.initializer,
    )


def observation_normalizer(config: PPOConfig, state: PPOState):
    """``obs -> network input`` with the run's observation statistics (identity without normalize_obs).

    For acting on raw observations outside training (evaluation, data collection).
    """
    if not config.normalize_obs:
        return lambda obs: obs
    stats = wrappers.find_state(state.env.env_state, wrappers.NormalizeObservationState).obs_stats
    stats = jax.tree.map(lambda x: x[0], stats)  # pooled over envs: every env holds the same
    return stats.normalize


def make_train(config: PPOConfig, surrogate: Surrogate = ppo_clip_surrogate) -> Trainer:
    """PPO's trainer. ``surrogate`` replaces the clipped policy objective (LPO's learned drift, MDPO's KL);
    it is given the exact KL to the policy that collected the batch (``state.params`` before the update)."""
    env, env_params = make_env(config)
    eval_env, _ = make_env(config, training=False)
    network = make_network(config, env, env_params)
    batch_size = config.num_envs * config.num_steps
    minibatch_size = batch_size // config.num_minibatches
    num_updates = config.num_updates

    def optimizer(hp: PPOHParams) -> optax.GradientTransformation:
        # Built from the (possibly traced) hparams each time it is used; its state
        # does not depend on them, so it lives in the training state as usual.
        def learning_rate(count):
            if not config.anneal_lr:
                return hp.learning_rate
            updates_done = count // (config.num_minibatches * config.update_epochs)
            return hp.learning_rate * (1.0 - updates_done / num_updates)

        return optax.chain(
            optax.clip_by_global_norm(hp.max_grad_norm),
            optax.scale_by_adam(eps=1e-5),
            optax.scale_by_learning_rate(learning_rate),
        )

    def init(key: jax.Array, hp: PPOHParams) -> PPOState:
        net_key, env_key, key = jax.random.split(key, 3)
        dummy_obs = jnp.zeros((1,) + envs.observation_shape(env, env_params))
        params = network.init(net_key, dummy_obs)
        return PPOState(
            params=params, opt_state=optimizer(hp).init(params),
            env=rollout_lib.reset(env, env_params, env_key, config.num_envs),
            key=key, update_step=jnp.zeros((), jnp.int32), hparams=hp,
        )

    def update(state: PPOState):
        hp = state.hparams
        key, rollout_key, epoch_key = jax.random.split(state.key, 3)

        # 1. Collect num_steps transitions in each of num_envs envs.
        def policy(obs, k):
            pi, value = network.apply(state.params, obs)
            action = pi.sample(seed=k)
            return action, {"log_prob": pi.log_prob(action), "value": value}

        env_carry, traj = rollout_lib.rollout(env, env_params, policy, state.env, rollout_key, config.num_steps)

        # 2. Advantages: GAE, bootstrapping on truncation from the pre-reset observation.
        _, next_value = network.apply(state.params, traj.next_obs)
        advantage, target = gae(
            traj.reward, traj.extras["value"], next_value, traj.terminated, traj.truncated, hp.gamma, hp.gae_lambda
        )
        batch = jax.tree.map(
            lambda x: x.reshape((batch_size,) + x.shape[2:]),
            PPOBatch(traj.obs, traj.action, traj.extras["log_prob"], traj.extras["value"], advantage, target),
        )

        # 3. update_epochs passes over shuffled minibatches.
        tx = optimizer(hp)
        grad_fn = jax.value_and_grad(ppo_loss, has_aux=True)
        progress = state.update_step / num_updates  # n / N, for temporally-aware surrogates

        def minibatch_step(carry, minibatch):
            params, opt_state = carry
            (loss, aux), grads = grad_fn(
                params, network.apply, minibatch, hp, config.normalize_advantages, surrogate, progress, state.params
            )
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), {"loss": loss, **aux}

        def epoch(carry, k):
            permutation = jax.random.permutation(k, batch_size)
            minibatches = jax.tree.map(
                lambda x: x[permutation].reshape((config.num_minibatches, minibatch_size) + x.shape[1:]), batch
            )
            return jax.lax.scan(minibatch_step, carry, minibatches)

        (params, opt_state), losses = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(epoch_key, config.update_epochs)
        )

        metrics = {name: value.mean() for name, value in losses.items()}
        metrics |= wrappers.episode_metrics(traj.info)
        new_state = PPOState(
            params=params, opt_state=opt_state, env=env_carry, key=key,
            update_step=state.update_step + 1, hparams=hp,
        )
        return new_state, metrics

    def evaluate(state: PPOState, key: jax.Array) -> dict[str, jax.Array]:
        normalize = observation_normalizer(config, state)

        def act(obs, k):
            pi, _ = network.apply(state.params, normalize(obs))
            return pi.mode() if config.deterministic_eval else pi.sample(seed=k)

        return episode_returns(eval_env, env_params, act, key, config.eval_episodes)

    return Trainer(
        config=config, init=init, update=update, evaluate=evaluate,
        num_updates=num_updates, env_steps_per_update=batch_size,
    )
