"""IQ-Learn: Inverse soft-Q Learning for Imitation (Garg et al., NeurIPS 2021).

One soft Q-function stands for both the policy and the reward. The policy is
the soft-greedy policy of Q, and the reward is Q's inverse soft Bellman image

    r(s, a) = Q(s, a) - gamma * (1 - terminated) * V(s'),

so no discriminator is trained and no inner RL loop is run. Q minimises the
chi-squared IQ-Learn loss ``rljax.losses.imitation.iq_learn_loss``.

* Discrete actions (the paper's "soft Q-learning" agent): a network gives
  ``Q(s, .)``; ``V(s) = T * logsumexp(Q(s, .) / T)`` with temperature ``T``;
  the policy is the Boltzmann ``softmax(Q(s, .) / T)``.
* Continuous actions (the paper's SAC agent): a critic ensemble ``Q_k(s, a)``
  and a tanh-Gaussian actor trained with SAC's actor loss on that critic;
  ``V(s) = min_k Q_k(s, a') - T * log pi(a'|s)``, ``a' ~ pi(.|s)`` (one sample),
  and every ensemble member gets the IQ loss with that shared ``V``.

Variants (``IQLearnConfig``):

* offline (``online=False``): expert transitions only, ``value_term="expert"``
  (the official ``value_expert``): no environment steps at all, except fresh
  reset states when ``value_term="v0"``;
* online (``online=True``): the learner's soft policy collects transitions into
  a replay buffer; each gradient step uses equal batches of learner and expert
  transitions, ``value_term="all"`` (the official ``value``), and
  ``regularize_on="all"`` puts the chi-squared regulariser on the mixture of
  both (the paper's choice online; the official ``method.regularize``).

Target network: off by default (the official ``train.use_target=False``);
with ``use_target`` V(s') comes from a target critic (no gradient), moved
``target <- tau * online + (1 - tau) * target`` every ``target_update_every``
gradient steps (``tau = 1`` is a hard copy).

Demonstrations are arrays (a :class:`Demonstrations` pytree) given to
``make_train`` and carried in the training state: the state stays the one
pytree the host loop checkpoints, the compiled update reads them as an input
rather than as embedded constants, and ``init_from(key, hparams, demos)``
starts a run on other demonstrations of the same shapes (vmap over demo sets).

    demos = Demonstrations.from_dataset(dataset, episodes=1, subsample=20)
    config, hparams = preset("gymnax/CartPole-v1")
    trainer = make_train(config, demos)
    state, metrics = jax.jit(trainer)(key, hparams)
    reward = trainer.recovered_reward(state, obs, action, next_obs, terminated, key)

Where the official code (Div99/IQ-Learn) and the paper differ, the paper is
followed: ``value_term="v0"`` uses states drawn from the environment's initial
distribution (the official loss uses the expert batch's states), and the
online regulariser uses the replay buffer's actions (the official one re-samples
actions from the current policy at learner states).
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
from rljax.core import replay as replay_lib
from rljax.core import rollout as rollout_lib
from rljax.core.config import (DISCOUNT, FRACTION, POSITIVE, ConfigError, require, require_in_ranges, require_one_of,
                                require_positive)
from rljax.core.dataset import DatasetError, check_matches_env
from rljax.core.evaluation import episode_returns
from rljax.core.networks import ACTIVATIONS, MLP, QEnsemble, SquashedGaussianActor
from rljax.core.trainer import Trainer
from rljax.losses import soft_q
from rljax.losses.imitation import REGULARIZE_ON, VALUE_TERMS, iq_learn_loss



@dataclasses.dataclass(frozen=True)
class IQLearnConfig:
    """Static settings. Defaults: the official offline CartPole example (1 demo, ``value_expert``, chi2)."""

    env: str = "gymnax/CartPole-v1"
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    online: bool = False  # collect learner transitions (and use them in the loss)
    value_term: str = "expert"  # "expert" (offline), "all" (online) or "v0" (initial states)
    regularize_on: str = "expert"  # chi-squared regulariser on expert rows, or on "all" rows (online)
    num_updates: int = 5_000
    gradient_steps: int = 1  # gradient steps per update
    num_envs: int = 1  # online: envs collecting side by side
    steps_per_update: int = 1  # online: env steps per env per update
    learning_starts: int = 1_280  # online: env steps collected before the first gradient step (official initial_mem)
    buffer_size: int = 50_000  # online: learner transitions kept
    batch_size: int = 32  # expert rows per step (all of them if fewer); as many learner rows online
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "elu"  # discrete Q network (official OfflineQNetwork); continuous networks use "relu"
    num_q: int = 2  # continuous actions: critic ensemble size (V uses the minimum)
    use_target: bool = False
    target_update_every: int = 1  # gradient steps between target moves
    eval_episodes: int = 10

    def __post_init__(self):
        name = type(self).__name__
        require_positive(self, "num_updates", "gradient_steps", "num_envs", "steps_per_update", "buffer_size",
                         "batch_size", "num_q", "target_update_every", "eval_episodes")
        require_one_of(self, "value_term", VALUE_TERMS)
        require_one_of(self, "regularize_on", REGULARIZE_ON)
        for field in ("value_term", "regularize_on"):
            require(self.online or getattr(self, field) != "all",
                    f"{name}.{field} = 'all' needs learner transitions: set online=True, or use 'expert'")
        require(self.learning_starts >= 0,
                f"{name}.learning_starts: expected a number >= 0, got {self.learning_starts!r}")
        require_one_of(self, "activation", ACTIVATIONS)
        collect = self.num_envs * self.steps_per_update
        require(not self.online or self.buffer_size >= collect,
                f"{name}.buffer_size = {self.buffer_size} cannot hold one update's {collect} transitions")
        object.__setattr__(self, "env_kwargs", tuple(tuple(kv) for kv in self.env_kwargs))
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    @property
    def env_steps_per_update(self) -> int:
        return self.num_envs * self.steps_per_update if self.online else 0


@struct.dataclass
class IQLearnHParams:
    """Dynamic hyperparameters (vmappable): learning rates, the fixed entropy temperature ``T``, ``gamma``, the
    chi-squared regulariser's ``alpha`` and the target step ``tau``. Ranges: :func:`check_hparams`."""

    critic_lr: float = 1e-4
    actor_lr: float = 3e-4  # continuous actions only
    temperature: float = 1e-3  # entropy temperature T of V and the policy (the official agent.init_temp), fixed
    gamma: float = 0.99
    alpha: float = 0.5  # chi-squared regulariser E[r^2] / (4 alpha)
    tau: float = 1.0  # target step (use_target only); 1 copies


_HPARAM_RANGES = {
    "critic_lr": POSITIVE,
    "actor_lr": POSITIVE,
    "temperature": POSITIVE,
    "alpha": POSITIVE,
    "gamma": DISCOUNT,
    "tau": FRACTION,
}


def check_hparams(hp: IQLearnHParams) -> None:
    """``ConfigError`` naming the field unless every hyperparameter (scalars or per-run arrays) is in range."""
    require_in_ranges(hp, _HPARAM_RANGES)


PRESETS: dict[str, tuple[IQLearnConfig, IQLearnHParams]] = {
    # Official README example: softq agent, init_temp 1e-3, critic lr 1e-4, batch 32,
    # method.chi + value_expert, no target network; 1 demo subsampled every 20 steps.
    "gymnax/CartPole-v1": (IQLearnConfig(), IQLearnHParams()),
    # Online, continuous: the official SAC agent settings (sac.yaml) with the MuJoCo
    # scripts' value + mixture regulariser and hopper.yaml's soft target and batch 256.
    "gymnax/Pendulum-v1": (
        IQLearnConfig(env="gymnax/Pendulum-v1", online=True, value_term="all", regularize_on="all",
                      num_updates=20_000, batch_size=256, hidden_sizes=(256, 256), activation="relu", num_q=2,
                      use_target=True, learning_starts=1_280, buffer_size=100_000),
        IQLearnHParams(critic_lr=3e-4, actor_lr=3e-4, temperature=1e-2, tau=0.005),
    ),
}
# Brax locomotion, sized for a GPU: the same online agent for 1e6 env steps (16 envs, one gradient step per env step).
PRESETS.update({
    name: (dataclasses.replace(PRESETS["gymnax/Pendulum-v1"][0], env=name, num_envs=16, gradient_steps=16,
                               num_updates=62_500, learning_starts=10_000, buffer_size=1_000_000),
           PRESETS["gymnax/Pendulum-v1"][1])
    for name in ("brax/hopper", "brax/halfcheetah")
})


def preset(env: str) -> tuple[IQLearnConfig, IQLearnHParams]:
    """The preset for ``env``, else the CartPole one (discrete) or the Pendulum one (continuous)."""
    if env in PRESETS:
        return PRESETS[env]
    e, p = envs.make(env)
    base = "gymnax/CartPole-v1" if envs.is_discrete(e, p) else "gymnax/Pendulum-v1"
    config, hparams = PRESETS[base]
    return dataclasses.replace(config, env=env), hparams


# ---------------------------------------------------------------- demonstrations


@struct.dataclass
class Demonstrations:
    """Expert transitions as arrays, ``N`` rows.

    ``obs``, ``next_obs``: ``[N, *obs_shape]`` float32; ``action``: ``[N]`` int32
    (discrete) or ``[N, action_dim]`` float32 in the env's action box (continuous);
    ``terminated``: ``[N]`` bool.
    """

    obs: jax.Array
    action: jax.Array
    next_obs: jax.Array
    terminated: jax.Array

    @property
    def num_transitions(self) -> int:
        return int(self.obs.shape[0])

    @classmethod
    def from_dataset(cls, dataset, *, episodes: int | None = None, subsample: int = 1) -> "Demonstrations":
        """The first ``episodes`` episodes of an ``rljax.core.dataset.Dataset`` (all if None), keeping rows
        0, k, 2k, ... of each episode for ``subsample = k`` (the official ``expert.subsample_freq``)."""
        require(subsample >= 1, f"Demonstrations.from_dataset: subsample: expected an integer >= 1, got {subsample!r}")
        available = dataset.num_episodes
        episodes = available if episodes is None else episodes
        require(1 <= episodes <= available,
                f"Demonstrations.from_dataset: episodes: expected 1 .. {available} (the dataset's episodes), "
                f"got {episodes!r}")
        ids = dataset.episode_id
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])  # first row of each episode
        offset = np.arange(len(ids)) - starts[ids]  # row index within its episode
        keep = (ids < episodes) & (offset % subsample == 0)
        action = dataset.action[keep]
        action = action.astype(np.int32) if action.dtype.kind in "iu" else action.astype(np.float32)
        return cls(
            obs=jnp.asarray(dataset.obs[keep], jnp.float32), action=jnp.asarray(action),
            next_obs=jnp.asarray(dataset.next_obs[keep], jnp.float32),
            terminated=jnp.asarray(dataset.terminated[keep], bool),
        )


def check_demonstrations(demos: Demonstrations, env, env_params) -> None:
    """``DatasetError`` naming the field unless ``demos`` fit the env (shapes, dtypes, action range)."""
    n = demos.obs.shape[0]
    if n < 1:
        raise DatasetError("demos: expected at least one transition, got 0")
    check_matches_env(demos, env, env_params, name="demos")
    if demos.next_obs.shape != demos.obs.shape:
        raise DatasetError(f"demos: field 'next_obs' has shape {demos.next_obs.shape}, expected {demos.obs.shape} (as obs)")
    if demos.terminated.shape != (n,) or demos.terminated.dtype != jnp.bool_:
        raise DatasetError(f"demos: field 'terminated': expected a bool array of shape {(n,)}, "
                           f"got {demos.terminated.dtype} {tuple(demos.terminated.shape)}")


# ---------------------------------------------------------------- state


@struct.dataclass
class Transition:
    """A transition without a reward (IQ-Learn recovers it from Q): a replay item, or a batch with leaves
    ``[B, ...]``. Actions are int32 (discrete) or in [-1, 1] (continuous)."""

    obs: jax.Array
    action: jax.Array
    next_obs: jax.Array  # pre-reset: bootstrap on truncation
    terminated: jax.Array


@struct.dataclass
class IQLearnState:
    """The whole IQ-Learn training state, one pytree: critic (and target), actor (continuous only), the expert
    demonstrations, and online the replay buffer and ``num_envs`` env carry. ``grad_steps`` and ``env_steps``
    (summed over envs) are scalar counters."""

    critic_params: Any
    target_critic_params: Any
    critic_opt: Any
    actor_params: Any  # None for discrete actions
    actor_opt: Any
    expert: Demonstrations  # continuous actions already mapped onto [-1, 1]
    replay: Any  # replay_lib.ReplayState of learner transitions online, else None
    env: Any  # rollout_lib.EnvCarry online, else None
    key: jax.Array
    grad_steps: jax.Array
    env_steps: jax.Array
    hparams: IQLearnHParams


@dataclasses.dataclass(frozen=True)
class IQLearnTrainer(Trainer):
    """A :class:`Trainer` plus what IQ-Learn exposes beside training.

    * ``init_from(key, hparams, demos)``: ``init`` on other demonstrations of the same shapes;
    * ``recovered_reward(state, obs, action, next_obs, terminated, key) -> [B]``: ``Q(s, a) - gamma (1 - term) V(s')``;
    * ``q_values(state, obs, action) -> [K, B]`` (``K = 1`` for discrete actions, ``num_q`` otherwise);
    * ``soft_value(state, obs, key) -> [B]`` and ``act(state, obs, key, greedy) -> actions``.

    Continuous actions are in [-1, 1] (the env's box rescaled) throughout.
    """

    init_from: Callable[..., IQLearnState]
    recovered_reward: Callable[..., jax.Array]
    q_values: Callable[..., jax.Array]
    soft_value: Callable[..., jax.Array]
    act: Callable[..., jax.Array]


# ---------------------------------------------------------------- networks

def make_env(config: IQLearnConfig, *, training: bool = True):
    """Continuous actions rescaled to [-1, 1]; episode statistics while training online."""
    env, env_params = envs.make(config.env, **dict(config.env_kwargs))
    if envs.reward_shape(env) != ():
        raise ConfigError(f"IQLearnConfig.env = {config.env!r} has vector rewards; IQ-Learn imitates one expert")
    if not envs.is_discrete(env, env_params):
        env = wrappers.RescaleAction(env)
    if training and config.online:
        env = wrappers.EpisodeStatistics(env)
    return env, env_params


# ---------------------------------------------------------------- the algorithm


def make_train(config: IQLearnConfig, demos: Demonstrations) -> IQLearnTrainer:
    """IQ-Learn's :class:`IQLearnTrainer` imitating ``demos`` on ``config.env``.

    Discrete actions: one Q network, ``V = T logsumexp(Q / T)``; continuous ones: a Q ensemble and a SAC
    actor. Offline (``online=False``) each update is ``gradient_steps`` steps on expert batches; online,
    it also collects ``env_steps_per_update`` steps into a learner replay buffer. ``demos`` that do not
    fit the env (shapes, dtypes, action range) raise an error naming the field.
    """
    env, env_params = make_env(config)
    eval_env, _ = make_env(config, training=False)
    raw_env, _ = envs.make(config.env, **dict(config.env_kwargs))
    check_demonstrations(demos, raw_env, env_params)
    discrete = envs.is_discrete(env, env_params)
    action_dim = envs.action_dim(env, env_params)
    obs_shape = envs.observation_shape(env, env_params)
    action_box = raw_env.action_space(env_params)
    num_expert = demos.num_transitions
    expert_batch = min(config.batch_size, num_expert)  # the official buffer samples all rows when it holds fewer
    learner_batch = config.batch_size if config.online else 0
    collect = config.env_steps_per_update

    if discrete:
        # The official OfflineQNetwork: ELU, PyTorch's default init. The orthogonal(sqrt 2) init
        # generalised far worse from one subsampled CartPole demo (see experiments/iqlearn.py).
        q_network = MLP(config.hidden_sizes, action_dim, config.activation, initializer="torch")
        actor = None
    else:
        q_network = QEnsemble(config.num_q, config.hidden_sizes, config.activation)
        actor = SquashedGaussianActor(action_dim, config.hidden_sizes, config.activation)
    critic_tx = lambda hp: optax.adam(hp.critic_lr)  # noqa: E731  (rebuilt from possibly traced rates)
    actor_tx = lambda hp: optax.adam(hp.actor_lr)  # noqa: E731

    def prepare(d: Demonstrations) -> Demonstrations:
        """Discrete actions as int32; continuous ones mapped from the env's box onto [-1, 1]."""
        action = d.action.astype(jnp.int32) if discrete else wrappers.from_box(d.action.astype(jnp.float32), action_box)
        return d.replace(action=action)

    # -- the soft-Q functions: Q, V, reward, policy

    def q_of(critic_params, obs, action):
        """``[K, B]``: Q(s, a) at the given actions (``K = 1`` for the discrete network)."""
        if discrete:
            q_all = q_network.apply(critic_params, obs)  # [B, A]
            return jnp.take_along_axis(q_all, action[:, None], axis=-1)[None, :, 0]
        return q_network.apply(critic_params, obs, action)

    def value_of(critic_params, actor_params, temperature, obs, key):
        """``[B]``: V(s) = T logsumexp(Q/T) (discrete) or min_k Q_k(s, a') - T log pi(a'|s), a' ~ pi (continuous)."""
        if discrete:
            return temperature * jax.nn.logsumexp(q_network.apply(critic_params, obs) / temperature, axis=-1)
        action, log_prob = actor.apply(actor_params, obs).sample_and_log_prob(seed=key)
        return q_network.apply(critic_params, obs, action).min(axis=0) - temperature * log_prob

    def policy_action(critic_params, actor_params, temperature, obs, key, greedy):
        if discrete:
            q = q_network.apply(critic_params, obs)
            return jnp.argmax(q, axis=-1) if greedy else jax.random.categorical(key, q / temperature, axis=-1)
        pi = actor.apply(actor_params, obs)
        return jnp.tanh(pi.distribution.mean()) if greedy else pi.sample(seed=key)

    def recovered_reward(state: IQLearnState, obs, action, next_obs, terminated, key):
        """``[B]``: r = Q(s, a) - gamma (1 - terminated) V(s'), with the minimum over the critic ensemble."""
        hp = state.hparams
        q = q_of(state.critic_params, obs, action).min(axis=0)
        next_v = value_of(state.critic_params, state.actor_params, hp.temperature, next_obs, key)
        return q - hp.gamma * (1.0 - terminated.astype(q.dtype)) * next_v

    # -- init

    def init_from(key: jax.Array, hp: IQLearnHParams, expert: Demonstrations) -> IQLearnState:
        for field in ("obs", "action", "next_obs", "terminated"):
            want, got = getattr(demos, field).shape, getattr(expert, field).shape
            require(want == got, f"init_from: demos.{field} must have shape {want} as in make_train, got {got}")
        critic_key, actor_key, env_key, key = jax.random.split(key, 4)
        obs = jnp.zeros((1,) + obs_shape)
        action = jnp.zeros((1,), jnp.int32) if discrete else jnp.zeros((1, action_dim))
        critic_params = q_network.init(critic_key, obs) if discrete else q_network.init(critic_key, obs, action)
        actor_params = None if discrete else actor.init(actor_key, obs)
        replay, env_carry = None, None
        if config.online:
            example = Transition(obs[0], action[0], obs[0], jnp.zeros((), bool))
            replay = replay_lib.init(example, config.buffer_size)
            env_carry = rollout_lib.reset(env, env_params, env_key, config.num_envs)
        return IQLearnState(
            critic_params=critic_params, target_critic_params=critic_params,
            critic_opt=critic_tx(hp).init(critic_params), actor_params=actor_params,
            actor_opt=None if discrete else actor_tx(hp).init(actor_params), expert=prepare(expert),
            replay=replay, env=env_carry, key=key, grad_steps=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32), hparams=hp,
        )  # fmt: skip

    def init(key: jax.Array, hp: IQLearnHParams) -> IQLearnState:
        return init_from(key, hp, demos)

    # -- one gradient step

    def sample_batch(state: IQLearnState, key):
        """Expert rows (without replacement) then, online, as many learner rows; and the is_expert mask."""
        expert_key, learner_key = jax.random.split(key)
        rows = jax.random.choice(expert_key, num_expert, (expert_batch,), replace=False)
        e = state.expert
        batch = Transition(e.obs[rows], e.action[rows], e.next_obs[rows], e.terminated[rows])
        is_expert = jnp.ones((expert_batch,), bool)
        if config.online:
            learner, _ = replay_lib.sample(state.replay, learner_key, learner_batch)
            batch = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), learner, batch)
            is_expert = jnp.concatenate([jnp.zeros((learner_batch,), bool), is_expert])
        return batch, is_expert

    def initial_states(key):
        """``[batch_size, *obs_shape]`` fresh draws from the initial-state distribution (value_term="v0")."""
        keys = jax.random.split(key, config.batch_size)
        return jax.vmap(lambda k: eval_env.reset(k, env_params)[0])(keys)

    def critic_objective(critic_params, state: IQLearnState, batch: Transition, is_expert, key):
        hp = state.hparams
        v_key, next_key, s0_key, v0_key = jax.random.split(key, 4)
        value = lambda p, obs, k: value_of(p, state.actor_params, hp.temperature, obs, k)  # noqa: E731
        q = q_of(critic_params, batch.obs, batch.action)  # [K, B]
        v = value(critic_params, batch.obs, v_key)
        if config.use_target:  # V(s') from the target critic, a constant here
            next_v = jax.lax.stop_gradient(value(state.target_critic_params, batch.next_obs, next_key))
        else:  # the paper's objective: gradients flow through V(s') as well
            next_v = value(critic_params, batch.next_obs, next_key)
        initial_v = value(critic_params, initial_states(s0_key), v0_key) if config.value_term == "v0" else None
        per_member = jax.vmap(
            lambda q_k: iq_learn_loss(q_k, v, next_v, batch.terminated, is_expert, gamma=hp.gamma, alpha=hp.alpha,
                                      value_term=config.value_term, regularize_on=config.regularize_on,
                                      initial_v=initial_v)
        )(q)
        loss, aux = jax.tree.map(lambda x: x.mean(axis=0), per_member)  # each critic member its own IQ loss
        return loss, aux

    def gradient_step(state: IQLearnState, key: jax.Array):
        hp = state.hparams
        batch_key, critic_key, actor_key = jax.random.split(key, 3)
        batch, is_expert = sample_batch(state, batch_key)

        (_, aux), grads = jax.value_and_grad(critic_objective, has_aux=True)(
            state.critic_params, state, batch, is_expert, critic_key)
        updates, critic_opt = critic_tx(hp).update(grads, state.critic_opt, state.critic_params)
        critic_params = optax.apply_updates(state.critic_params, updates)
        metrics = {"loss": aux["iq_loss"], **aux}
        if discrete:  # how often the greedy policy picks the expert's action
            greedy = jnp.argmax(q_network.apply(critic_params, batch.obs), axis=-1)
            metrics["expert_action_accuracy"] = ((greedy == batch.action) * is_expert).sum() / is_expert.sum()

        actor_params, actor_opt = state.actor_params, state.actor_opt
        if not discrete:
            # SAC's actor loss on the updated critic, at every state of the batch: expert states
            # offline, learner and expert states online (as the official code).
            def actor_objective(p):
                action, log_prob = actor.apply(p, batch.obs).sample_and_log_prob(seed=actor_key)
                q = q_network.apply(critic_params, batch.obs, action)
                return soft_q.actor_loss(log_prob, q, hp.temperature)

            (_, actor_aux), grads = jax.value_and_grad(actor_objective, has_aux=True)(actor_params)
            updates, actor_opt = actor_tx(hp).update(grads, state.actor_opt, actor_params)
            actor_params = optax.apply_updates(actor_params, updates)
            metrics |= actor_aux

        grad_steps = state.grad_steps + 1
        target = state.target_critic_params
        if config.use_target:
            moved = optax.incremental_update(critic_params, target, hp.tau)
            target = jax.tree.map(lambda m, t: jnp.where(grad_steps % config.target_update_every == 0, m, t), moved, target)
        state = state.replace(critic_params=critic_params, critic_opt=critic_opt, actor_params=actor_params,
                              actor_opt=actor_opt, target_critic_params=target, grad_steps=grad_steps)
        return state, metrics

    def learn(state: IQLearnState, key: jax.Array):
        state, metrics = jax.lax.scan(gradient_step, state, jax.random.split(key, config.gradient_steps))
        return state, {name: value.mean() for name, value in metrics.items()}

    # -- one update

    def update(state: IQLearnState):
        key, rollout_key, grad_key = jax.random.split(state.key, 3)
        if not config.online:
            state, metrics = learn(state.replace(key=key), grad_key)
            return state, metrics

        # 1. Collect with the soft policy (the official code samples from the start: no random warm-up).
        hp = state.hparams

        def policy(obs, k):
            return policy_action(state.critic_params, state.actor_params, hp.temperature, obs, k, False), {}

        env_carry, traj = rollout_lib.rollout(env, env_params, policy, state.env, rollout_key, config.steps_per_update)
        flat = lambda x: x.reshape((collect,) + x.shape[2:])  # noqa: E731
        transitions = Transition(flat(traj.obs), flat(traj.action), flat(traj.next_obs), flat(traj.terminated))
        state = state.replace(replay=replay_lib.add(state.replay, transitions), env=env_carry, key=key,
                              env_steps=state.env_steps + collect)

        # 2. Learn once learning_starts transitions are in the buffer.
        def skip(s, k):
            _, metrics = jax.eval_shape(learn, s, k)
            return s, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), metrics)

        state, metrics = jax.lax.cond(state.env_steps >= config.learning_starts, learn, skip, state, grad_key)
        metrics |= wrappers.episode_metrics(traj.info)
        return state, metrics

    def evaluate(state: IQLearnState, key: jax.Array) -> dict[str, jax.Array]:
        """Greedy (discrete) or mean (continuous) actions, ``eval_episodes`` episodes."""
        def act(obs, k):
            return policy_action(state.critic_params, state.actor_params, state.hparams.temperature, obs, k, True)

        return episode_returns(eval_env, env_params, act, key, config.eval_episodes)

    return IQLearnTrainer(
        config=config, init=init, update=update, evaluate=evaluate, num_updates=config.num_updates,
        env_steps_per_update=collect, init_from=init_from, recovered_reward=recovered_reward,
        q_values=lambda state, obs, action: q_of(state.critic_params, obs, action),
        soft_value=lambda state, obs, key: value_of(state.critic_params, state.actor_params,
                                                    state.hparams.temperature, obs, key),
        act=lambda state, obs, key, greedy=True: policy_action(state.critic_params, state.actor_params,
                                                               state.hparams.temperature, obs, key, greedy),
    )  # fmt: skip
