"""Multi-objective PPO (MOPPO): PPO with a vector critic and a linearly scalarised advantage.

The building block of PGMORL (Xu et al., 2020) and of C-MORL's first stage (Liu et
al., ICLR 2025): one policy per preference ``w`` on the simplex, trained with

    V(s) in R^k                        one value head per objective (ActorCritic.value_dim = k)
    A_j = GAE(r_j, V_j)                per objective (rljax.core.returns.gae on [T, N, k])
    A_w = w . A                        the scalarised advantage fed to PPO's clipped surrogate

and the value loss summed over objectives. The preference is part of the hparams
pytree, so M preferences train in ONE vmapped call:

    trainer = make_train(MOPPOConfig())
    hp = preference_hparams(simplex_grid(2, 0.2))          # [6, 2] preferences, checked
    states, metrics = jax.jit(jax.vmap(trainer))(jax.random.split(key, 6), hp)

Evaluation reports per-objective undiscounted returns ``[episodes, k]``.

Preference-conditioned variant (``MOPPOConfig.conditioned``): ONE network for the
whole simplex. Every env draws its own ``w ~ Dirichlet(preference_concentration * 1)``
at each episode start (``SamplePreference``: ``w`` lives in the env state, is fixed
within an episode and resampled when an episode ends), policy and critic see
``concat(obs, w)``, and each transition's advantage is scalarised by its own ``w``.
``make_evaluate_preferences(config)(state, key, preferences [m, k])`` then gives
returns ``[m, episodes, k]``: a front from one trained network.

The rollout / advantage / minibatch-optimisation pieces are module functions
(``collect``, ``optimize``, ``evaluate_params``) so that C-MORL's constrained
extension (``rljax.agents.cmorl``) runs the same PPO machinery with its own loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import envs
from envs import wrappers
from envs.core import Box
from rljax.agents.ppo import PPOHParams, PPOState
from rljax.core import rollout as rollout_lib
from rljax.core.config import ConfigError, broadcast_hparams, require, require_positive
from rljax.core.evaluation import episode_returns
from rljax.core.networks import ActorCritic
from rljax.core.pareto import check_preference
from rljax.core.returns import gae
from rljax.core.trainer import Trainer
from rljax.losses.policy_gradient import PPOBatch, clipped_surrogate, clipped_value_loss, normalize


@dataclasses.dataclass(frozen=True)
class MOPPOConfig:
    """Static settings. Defaults: PureJaxRL's PPO, sized for Deep Sea Treasure."""

    env: str = "mo/deep-sea-treasure-concave"
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    num_envs: int = 16
    num_steps: int = 128
    total_timesteps: int = 200_000
    update_epochs: int = 4
    num_minibatches: int = 4
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    anneal_lr: bool = False  # C-MORL continues training the stage-1 policies: no schedule to resume
    # Per-objective multipliers applied to the rewards the critic and the advantages see
    # (returns, evaluation and constraints stay in raw units). None: all 1.
    reward_scale: tuple[float, ...] | None = None
    normalize_advantages: bool = True
    eval_episodes: int = 4
    deterministic_eval: bool = True
    # One network conditioned on concat(obs, w), w ~ Dirichlet(preference_concentration * 1) per episode;
    # MOPPOHParams.preference must then be None.
    conditioned: bool = False
    preference_concentration: float = 1.0

    def __post_init__(self):
        require_positive(self, "num_envs", "num_steps", "total_timesteps", "update_epochs", "num_minibatches",
                         "eval_episodes", "preference_concentration")
        batch = self.num_envs * self.num_steps
        require(batch % self.num_minibatches == 0,
                f"{type(self).__name__}: the batch num_envs * num_steps = {self.num_envs} * {self.num_steps} = "
                f"{batch} does not divide into num_minibatches = {self.num_minibatches} minibatches")
        require(self.total_timesteps >= batch,
                f"{type(self).__name__}.total_timesteps = {self.total_timesteps} is less than one update's batch "
                f"num_envs * num_steps = {batch}")
        object.__setattr__(self, "env_kwargs", tuple(tuple(kv) for kv in self.env_kwargs))
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        if self.reward_scale is not None:
            scale = tuple(float(s) for s in self.reward_scale)
            require(all(s > 0 for s in scale),
                    f"{type(self).__name__}.reward_scale: expected positive multipliers, got {scale}")
            object.__setattr__(self, "reward_scale", scale)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size


@struct.dataclass
class MOPPOHParams(PPOHParams):
    """PPO's hyperparameters plus ``preference`` ([k], on the simplex), traced, so it can be vmapped."""

    preference: Any = None


def check_preferences(weights, num_objectives: int, name: str = "MOPPOHParams.preference") -> np.ndarray:
    """``[k]`` or ``[M, k]`` preferences, each on the simplex, or a ConfigError naming ``name``."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        return check_preference(w, num_objectives, name)
    if w.ndim != 2:
        raise ConfigError(f"{name}: expected [k] or [M, k] weights with k = {num_objectives}, got shape {w.shape}")
    return np.stack([check_preference(row, num_objectives, f"{name}[{i}]") for i, row in enumerate(w)])


def preference_hparams(weights, num_objectives: int | None = None, **kwargs) -> MOPPOHParams:
    """Hparams batched over the rows of ``weights [M, k]`` (checked), the other fields broadcast to ``[M]``."""
    w = np.asarray(weights, dtype=np.float64)
    k = num_objectives if num_objectives is not None else (w.shape[-1] if w.ndim else 0)
    w = check_preferences(np.atleast_2d(w), k)
    return broadcast_hparams(MOPPOHParams(preference=jnp.asarray(w, jnp.float32), **kwargs), len(w))


def _check_hparams_preference(preference, num_objectives: int, conditioned: bool = False) -> None:
    name = "MOPPOHParams.preference"
    if conditioned:
        if preference is not None:
            raise ConfigError(f"{name}: must be None with MOPPOConfig.conditioned = True (every episode samples "
                              f"its own preference)")
        return
    if preference is None:
        raise ConfigError(f"{name}: required, a [{num_objectives}] weight vector on the simplex (got None)")
    if jnp.shape(preference) != (num_objectives,):
        raise ConfigError(f"{name}: expected {num_objectives} weights (one per objective), got shape "
                          f"{jnp.shape(preference)}")
    if not isinstance(preference, jax.core.Tracer):
        check_preference(preference, num_objectives, name)


# ---------------------------------------------------------------- losses (pure)


def scalarize(advantages: jax.Array, preference: jax.Array) -> jax.Array:
    """``w . A``: the linear scalarisation of per-objective advantages ``[..., k]`` by ``w`` ``[k]`` or ``[..., k]``."""
    return (advantages * preference).sum(axis=-1)


def observed_preference(obs: jax.Array, num_objectives: int) -> jax.Array:
    """The preference a conditioned observation ``concat(obs, w)`` carries: its last ``k`` entries."""
    return obs[..., -num_objectives:]


def vector_value_loss(value, old_value, target, clip_eps):
    """PPO's clipped value loss for each objective's head ``[B, k]``, summed over objectives."""
    return jax.vmap(clipped_value_loss, in_axes=(1, 1, 1, None))(value, old_value, target, clip_eps).sum()


def moppo_loss(params, apply_fn: Callable, batch: PPOBatch, hp: MOPPOHParams, normalize_advantages: bool = True,
               conditioned: bool = False):
    """PPO-clip on the scalarised advantage ``w . A`` + vf_coef * summed vector value loss - ent_coef * entropy.

    ``batch.advantage``, ``batch.value`` and ``batch.target`` are ``[B, k]``. ``w`` is
    ``hp.preference``, or with ``conditioned`` each transition's own, read off its observation.
    """
    pi, value = apply_fn(params, batch.obs)
    log_prob = pi.log_prob(batch.action)
    k = batch.advantage.shape[-1]
    preference = observed_preference(batch.obs, k) if conditioned else hp.preference
    advantage = scalarize(batch.advantage, preference)
    advantage = normalize(advantage) if normalize_advantages else advantage
    policy_loss, aux = clipped_surrogate(log_prob, batch.log_prob, advantage, hp.clip_eps)
    value_loss = vector_value_loss(value, batch.value, batch.target, hp.clip_eps)
    entropy = pi.entropy().mean()
    total = policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
    return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy, **aux}


# ---------------------------------------------------------------- preference-conditioned envs


def condition(obs: jax.Array, preference: jax.Array) -> jax.Array:
    """``concat(obs, w)``, the conditioned network's input (``obs [..., d]``, ``w [..., k]``)."""
    return jnp.concatenate([obs, jnp.broadcast_to(preference, obs.shape[:-1] + preference.shape[-1:])], axis=-1)


@struct.dataclass
class PreferenceState:
    """:class:`SamplePreference`'s state of one env: the wrapped env's state and the episode's preference
    ``w`` (``[k]``, on the simplex)."""

    env_state: Any
    preference: jax.Array  # [k], fixed within an episode


class SamplePreference(wrappers.Wrapper):
    """Draws ``w ~ Dirichlet(concentration * 1)`` at every episode start and observes ``concat(obs, w)``.

    The wrapped env auto-resets inside ``step``, so a new ``w`` is drawn on the step that
    ends an episode (``terminated | truncated``); ``info["final_observation"]`` keeps the
    finished episode's ``w``.
    """

    def __init__(self, env, concentration: float):
        super().__init__(env)
        self.concentration = concentration

    def _sample(self, key):
        return jax.random.dirichlet(key, jnp.full(self.reward_shape, self.concentration, jnp.float32))

    def observation_space(self, params=None):
        space = super().observation_space(params)
        shape = (space.shape[0] + self.reward_shape[0],)
        return Box(-jnp.inf, jnp.inf, shape, space.dtype)

    def reset(self, key, params=None):
        w_key, key = jax.random.split(key)
        obs, env_state = super().reset(key, params)
        w = self._sample(w_key)
        return condition(obs, w), PreferenceState(env_state, w)

    def step(self, key, state, action, params=None):
        w_key, key = jax.random.split(key)
        obs, env_state, reward, terminated, truncated, info = super().step(key, state.env_state, action, params)
        w = jnp.where(terminated | truncated, self._sample(w_key), state.preference)
        info = {**info, "final_observation": condition(info["final_observation"], state.preference)}
        return condition(obs, w), PreferenceState(env_state, w), reward, terminated, truncated, info


# ---------------------------------------------------------------- shared machinery


@dataclasses.dataclass(frozen=True)
class Components:
    """What MOPPO (and C-MORL) build once from a config: the training env (with :class:`SamplePreference`
    when ``conditioned``, and episode statistics), the plain evaluation env, the actor-critic with a ``[k]``
    value head, ``k`` and the per-objective reward multipliers the critic learns in."""

    env: Any  # training env: clipped actions, episode statistics
    env_params: Any
    eval_env: Any
    network: ActorCritic
    num_objectives: int
    reward_scale: np.ndarray  # [k]


def make_components(config: MOPPOConfig) -> Components:
    """The env (clipped actions, episode statistics), evaluation env, vector-valued actor-critic and reward scale."""
    base, env_params = envs.make(config.env, **dict(config.env_kwargs))
    shape = envs.reward_shape(base)
    if len(shape) != 1:
        raise ConfigError(f"{type(config).__name__}.env = {config.env!r}: expected vector rewards of shape (k,), "
                          f"got reward shape {shape}; use PPO for scalar rewards")
    k = shape[0]
    if config.reward_scale is not None and len(config.reward_scale) != k:
        raise ConfigError(f"{type(config).__name__}.reward_scale: expected {k} multipliers (one per objective), "
                          f"got {len(config.reward_scale)}")
    discrete = envs.is_discrete(base, env_params)
    eval_env = base if discrete else wrappers.ClipAction(base)
    network = ActorCritic(action_dim=envs.action_dim(base, env_params), discrete=discrete,
                          hidden_sizes=config.hidden_sizes, activation=config.activation, value_dim=k)
    scale = np.ones(k) if config.reward_scale is None else np.asarray(config.reward_scale)
    train_env = SamplePreference(eval_env, config.preference_concentration) if config.conditioned else eval_env
    if config.conditioned and len(envs.observation_shape(eval_env, env_params)) != 1:
        raise ConfigError(f"{type(config).__name__}.conditioned: needs flat observations to append the preference "
                          f"to, got shape {envs.observation_shape(eval_env, env_params)}")
    return Components(wrappers.EpisodeStatistics(train_env), env_params, eval_env, network, k, scale)


def make_optimizer(config: MOPPOConfig, hp: Any, num_updates: int) -> optax.GradientTransformation:
    """PureJaxRL's PPO optimiser, built from the (possibly traced) hparams."""

    def learning_rate(count):
        if not config.anneal_lr:
            return hp.learning_rate
        updates_done = count // (config.num_minibatches * config.update_epochs)
        return hp.learning_rate * (1.0 - updates_done / num_updates)

    return optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.scale_by_adam(eps=1e-5),
                       optax.scale_by_learning_rate(learning_rate))


def init_params(comp: Components, key: jax.Array):
    """Actor-critic parameters for one observation of ``comp.env``."""
    return comp.network.init(key, jnp.zeros((1,) + envs.observation_shape(comp.env, comp.env_params)))


def collect(comp: Components, config: MOPPOConfig, params, env_carry, key, hp):
    """Roll out ``num_steps`` in each env; per-objective GAE on the scaled rewards.

    Returns ``(env_carry, batch, stats)``: a flat ``PPOBatch`` with ``[B, k]`` values,
    advantages and targets, and rollout statistics in raw reward units:
    ``episode_return`` [k] (mean undiscounted return of the episodes that finished
    in this rollout; 0 where none did), ``episodes`` (how many finished).
    """

    def policy(obs, k):
        pi, value = comp.network.apply(params, obs)
        action = pi.sample(seed=k)
        return action, {"log_prob": pi.log_prob(action), "value": value}

    env_carry, traj = rollout_lib.rollout(comp.env, comp.env_params, policy, env_carry, key, config.num_steps)
    _, next_value = comp.network.apply(params, traj.next_obs)
    rewards = traj.reward * jnp.asarray(comp.reward_scale, traj.reward.dtype)
    advantage, target = gae(rewards, traj.extras["value"], next_value, traj.terminated, traj.truncated,
                            hp.gamma, hp.gae_lambda)
    batch = jax.tree.map(
        lambda x: x.reshape((config.batch_size,) + x.shape[2:]),
        PPOBatch(traj.obs, traj.action, traj.extras["log_prob"], traj.extras["value"], advantage, target),
    )
    finished = traj.info["returned_episode"]
    episodes = finished.sum()
    total = (traj.info["returned_episode_return"] * finished[..., None]).sum(axis=(0, 1))
    stats = {
        "episode_return": total / jnp.maximum(episodes, 1),
        "episode_length": (traj.info["returned_episode_length"] * finished).sum() / jnp.maximum(episodes, 1),
        "episodes": episodes,
    }
    if config.conditioned:  # mean w . G over finished episodes, each under its own w (fixed in the episode)
        utility = scalarize(traj.info["returned_episode_return"], observed_preference(traj.obs, comp.num_objectives))
        stats["episode_utility"] = (utility * finished).sum() / jnp.maximum(episodes, 1)
    return env_carry, batch, stats


def optimize(config: MOPPOConfig, tx, params, opt_state, batch, key, loss: Callable):
    """``update_epochs`` passes over shuffled minibatches of ``batch`` with ``loss(params, minibatch)``."""
    minibatch_size = config.batch_size // config.num_minibatches
    grad_fn = jax.value_and_grad(loss, has_aux=True)

    def minibatch_step(carry, minibatch):
        params, opt_state = carry
        (value, aux), grads = grad_fn(params, minibatch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": value, **aux}

    def epoch(carry, k):
        permutation = jax.random.permutation(k, config.batch_size)
        minibatches = jax.tree.map(
            lambda x: x[permutation].reshape((config.num_minibatches, minibatch_size) + x.shape[1:]), batch)
        return jax.lax.scan(minibatch_step, carry, minibatches)

    (params, opt_state), losses = jax.lax.scan(epoch, (params, opt_state),
                                               jax.random.split(key, config.update_epochs))
    return params, opt_state, {name: value.mean() for name, value in losses.items()}


def evaluate_params(comp: Components, config: MOPPOConfig, params, key) -> dict[str, jax.Array]:
    """Per-objective undiscounted returns ``{"return": [episodes, k], "length": [episodes]}``."""

    def act(obs, k):
        pi, _ = comp.network.apply(params, obs)
        return pi.mode() if config.deterministic_eval else pi.sample(seed=k)

    return episode_returns(comp.eval_env, comp.env_params, act, key, config.eval_episodes)


def evaluate_conditioned(comp: Components, config: MOPPOConfig, params, key, preferences) -> dict[str, jax.Array]:
    """A conditioned network's returns under each row of ``preferences [m, k]``:
    ``{"return": [m, episodes, k], "length": [m, episodes]}``."""

    def under(w, k):
        def act(obs, k_act):
            pi, _ = comp.network.apply(params, condition(obs, w))
            return pi.mode() if config.deterministic_eval else pi.sample(seed=k_act)

        return episode_returns(comp.eval_env, comp.env_params, act, k, config.eval_episodes)

    return jax.vmap(under)(preferences, jax.random.split(key, preferences.shape[0]))


def make_evaluate_preferences(config: MOPPOConfig) -> Callable[[PPOState, jax.Array, Any], dict[str, jax.Array]]:
    """``evaluate_preferences(state, key, preferences [m, k])`` for a conditioned trainer's state; concrete
    preferences are checked (shape, simplex) with errors naming ``preferences[i]``."""
    if not config.conditioned:
        raise ConfigError(f"{type(config).__name__}.conditioned: evaluate_preferences needs a conditioned network")
    comp = make_components(config)

    def evaluate_preferences(state: PPOState, key: jax.Array, preferences) -> dict[str, jax.Array]:
        if not isinstance(preferences, jax.core.Tracer):
            preferences = check_preferences(np.atleast_2d(preferences), comp.num_objectives, "preferences")
        return evaluate_conditioned(comp, config, state.params, key, jnp.asarray(preferences, jnp.float32))

    return evaluate_preferences


# ---------------------------------------------------------------- the trainer


def make_train(config: MOPPOConfig) -> Trainer:
    """MOPPO's :class:`Trainer`: PPO with a ``[k]`` critic and advantages scalarised by ``hparams.preference``.

    ``preference`` is a traced ``[k]`` simplex vector, so M preferences train in one ``vmap``; with
    ``conditioned=True`` each episode draws its own preference and the network sees it.
    """
    comp = make_components(config)
    num_updates = config.num_updates

    def init(key: jax.Array, hp: MOPPOHParams) -> PPOState:
        _check_hparams_preference(hp.preference, comp.num_objectives, config.conditioned)
        net_key, env_key, key = jax.random.split(key, 3)
        params = init_params(comp, net_key)
        return PPOState(params=params, opt_state=make_optimizer(config, hp, num_updates).init(params),
                        env=rollout_lib.reset(comp.env, comp.env_params, env_key, config.num_envs),
                        key=key, update_step=jnp.zeros((), jnp.int32), hparams=hp)

    def update(state: PPOState):
        hp = state.hparams
        key, rollout_key, epoch_key = jax.random.split(state.key, 3)
        env_carry, batch, stats = collect(comp, config, state.params, state.env, rollout_key, hp)
        loss = lambda p, mb: moppo_loss(p, comp.network.apply, mb, hp, config.normalize_advantages,  # noqa: E731
                                        config.conditioned)
        params, opt_state, metrics = optimize(config, make_optimizer(config, hp, num_updates), state.params,
                                              state.opt_state, batch, epoch_key, loss)
        for j in range(comp.num_objectives):
            metrics[f"episode_return_{j}"] = stats["episode_return"][j]
        metrics["episode_return"] = (stats["episode_utility"] if config.conditioned
                                     else scalarize(stats["episode_return"], hp.preference))
        metrics["episode_length"] = stats["episode_length"]
        metrics["episodes_finished"] = stats["episodes"]
        return PPOState(params=params, opt_state=opt_state, env=env_carry, key=key,
                        update_step=state.update_step + 1, hparams=hp), metrics

    def evaluate(state: PPOState, key: jax.Array) -> dict[str, jax.Array]:
        if config.conditioned:  # the equal-weights preference; make_evaluate_preferences for a front
            uniform = jnp.full((1, comp.num_objectives), 1.0 / comp.num_objectives)
            return jax.tree.map(lambda x: x[0], evaluate_conditioned(comp, config, state.params, key, uniform))
        return evaluate_params(comp, config, state.params, key)

    return Trainer(config=config, init=init, update=update, evaluate=evaluate,
                   num_updates=num_updates, env_steps_per_update=config.batch_size)
