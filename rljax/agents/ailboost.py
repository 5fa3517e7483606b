"""AILBoost: adversarial imitation learning via boosting (Chang, Sreenivas, Huang, Brantley, Sun; ICLR 2024).

The learner is a mixture of weak learners ``pi_bar = sum_i w_i pi_i``. Each
round (one ``update``):

1. the current SAC actor is snapshotted as weak learner ``pi_t`` and rolls out
   ``episodes_per_round`` episodes into its own segment of the replay buffer;
2. the mixture weights decay, ``w <- (1 - eta) w``, and ``pi_t`` enters with
   ``eta`` (the first learner has weight 1); only the ``max_learners`` most
   recent keep their weight, and the mixture normalises the kept weights;
3. the discriminator ``D(s, a)`` is trained on expert samples against samples
   of the *mixture*: a learner drawn by its weight, then a transition of that
   learner (the weighted replay buffer, the paper's core idea), minimising
   ``E_E[exp(-D)] + E_mix[D] + 10 GP``, whose minimiser is ``log(d^E / d^mix)``
   (within ``(-1, 1)``: the official discriminator ends in a tanh);
4. the SAC learner (not reset between rounds) takes ``sac_steps_per_round``
   gradient steps on the *whole* buffer with rewards ``D(s, a)`` from the
   current discriminator (stop-gradient): the functional gradient of
   ``KL(d^mix || d^E)``. ``sac_replay="mixture"`` replays only the data of the
   learners still in the mixture (uniform over their transitions): the
   discriminator is not trained on the data of dropped learners, so its ``D``
   there drifts (the official code reloads SAC's buffer from the weighted
   buffer every round, which with its defaults keeps every learner, so there
   the two coincide).

Evaluation samples one weak learner per episode by its weight and runs its mean action
(DAC, which has no mixture, runs its current actor).

Variants (``AILBoostConfig.variant``), each on the same rounds and SAC budget:

* ``"ailboost"``: the above.
* ``"uniform"``: the ablation: the same K learners with equal weights.
* ``"dac"``: the DAC baseline (Kostrikov et al. 2019): a binary cross-entropy
  discriminator trained against the whole buffer sampled uniformly (SAC replays the
  whole buffer whatever ``sac_replay`` says), reward
  ``log D - log(1 - D)``, i.e. the logit. DAC's absorbing-state wrapper is not
  implemented (the target envs end only by time limit, where it does not apply).

The discriminator is the official code's ``Discriminator`` (``nets.py``): ReLU
hidden layers and a tanh output, so ``D`` and SAC's reward lie in ``(-1, 1)``, for
every variant (DAC's logit too). The paper does not fix the architecture; without
the bound (``disc_tanh_output=False``) the reverse-KL loss's ``E_mix[D]`` term, which
never saturates, keeps pushing ``D`` down on the learners' data, held back only by
the gradient penalty.

Deviations from the official code (digest: papers/control-rl.md section 3), all
toward the paper: truncating to the K most recent learners keeps the ratios
of the remaining weights (the code divides the oldest by eta; K = 10 is its config's
``n_learners``, which its ``train_state.py`` then overrides with
``replay_buffer_size // n_samples``, so its runs keep every learner); a new learner enters
every round of whole episodes (the code's default ``disc_every_frames: 10``
makes one every 5 agent steps). SAC networks and batch follow ``SACConfig``
(the code uses 1024x2 networks and batch 1024; too slow for the CPU runs here).
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
from rljax.agents import sac
from rljax.core import replay as replay_lib
from rljax.core import rollout as rollout_lib
from rljax.core.config import ConfigError, require_one_of, require_positive
from rljax.core.dataset import check_matches_env
from rljax.core.evaluation import episode_returns
from rljax.core.networks import ACTIVATIONS, MLP
from rljax.core.trainer import Trainer
from rljax.losses import imitation

VARIANTS = ("ailboost", "uniform", "dac")
SAC_REPLAYS = ("buffer", "mixture")


@dataclasses.dataclass(frozen=True)
class AILBoostConfig:
    """Static settings. Boosting and discriminator defaults follow the official code (digest section 3)."""

    env: str = "gymnax/Pendulum-v1"
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    variant: str = "ailboost"
    num_rounds: int = 75  # weak learners trained
    episodes_per_round: int = 2  # rollout episodes of each new weak learner
    max_learners: int = 10  # K: learners that keep weight
    sac_steps_per_round: int = 400  # SAC gradient steps between rounds
    disc_steps_per_round: int = 100
    disc_batch_size: int = 512  # expert and mixture samples each
    disc_hidden_sizes: tuple[int, ...] = (64, 64)
    disc_activation: str = "relu"  # the official Discriminator's hidden layers
    disc_tanh_output: bool = True  # D = tanh(.) in (-1, 1), as the official Discriminator (both variants)
    sac: sac.SACConfig = sac.SACConfig()  # networks and batch size of the weak learner (its env is ignored)
    eval_episodes: int = 8
    sac_replay: str = "buffer"  # "buffer": SAC replays every stored transition; "mixture": only the kept learners'

    def __post_init__(self):
        require_one_of(self, "variant", VARIANTS)
        require_one_of(self, "sac_replay", SAC_REPLAYS)
        require_one_of(self, "disc_activation", ACTIVATIONS)
        require_positive(self, "num_rounds", "episodes_per_round", "max_learners", "sac_steps_per_round",
                         "disc_steps_per_round", "disc_batch_size", "eval_episodes")
        object.__setattr__(self, "env_kwargs", tuple(tuple(kv) for kv in self.env_kwargs))
        object.__setattr__(self, "disc_hidden_sizes", tuple(self.disc_hidden_sizes))
        if isinstance(self.sac, dict):  # from a saved config.json
            object.__setattr__(self, "sac", sac.SACConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                            for k, v in self.sac.items()}))


@struct.dataclass
class AILBoostHParams:
    """Dynamic hyperparameters (vmappable): boosting step ``eta``, the discriminator's Adam rate and gradient
    penalty weight, and the SAC weak learner's own :class:`~rljax.agents.sac.SACHParams`."""

    eta: float = 0.05  # weight of each new weak learner
    disc_lr: float = 1e-4
    grad_penalty: float = 10.0
    sac: sac.SACHParams = sac.SACHParams()


@struct.dataclass
class AILBoostState:
    """The whole AILBoost training state, one pytree: SAC learner, weak-learner snapshots and boosting weights,
    discriminator, and a replay buffer with one segment per round. ``round``: rounds done (scalar)."""

    learner: sac.SACLearner  # the SAC weak learner being trained
    snapshots: Any  # actor params of the last K weak learners, leaves [K, ...] (a ring)
    snapshot_round: jax.Array  # [K] round that made each snapshot, -1 if empty
    weights: jax.Array  # [num_rounds] boosting weight of each round's learner (0: not yet, or dropped); see add_learner
    disc_params: Any
    disc_opt: Any
    replay: replay_lib.ReplayState  # one segment per round: the data of that round's learner
    round: jax.Array
    key: jax.Array
    hparams: AILBoostHParams


def add_learner(weights: jax.Array, new: jax.Array, eta: jax.Array, max_learners: int) -> jax.Array:
    """Boosting weights after learner ``new`` enters: ``(1 - eta) w`` and ``w_new = eta`` (the first
    learner: 1), so learner ``j`` of ``t`` has ``eta (1 - eta)^(t - j)``; learners older than the
    ``max_learners`` most recent get 0. ``weights``: ``[num_rounds]``, learners by round, *not*
    renormalised after a drop (renormalising, then adding ``eta``, would skew the newest learner's
    share); ``mixture`` normalises them."""
    first = ~(weights > 0).any()
    weights = jnp.where(first, 0.0, (1.0 - eta) * weights).at[new].set(jnp.where(first, 1.0, eta))
    kept = jnp.arange(weights.shape[0]) > new - max_learners
    return jnp.where(kept, weights, 0.0)


def mixture(weights: jax.Array) -> jax.Array:
    """The mixture's probabilities of its learners: the kept boosting weights, normalised to sum to 1."""
    return weights / weights.sum()


def episode_learners(key: jax.Array, snapshot_round: jax.Array, round_weights: jax.Array,
                     num_episodes: int) -> jax.Array:
    """The ring slots of the weak learners that play ``num_episodes`` evaluation episodes, one learner
    per episode, each drawn with its mixture probability: ``[num_episodes]`` ints.

    ``snapshot_round`` ``[max_learners]``: the round whose learner sits in each slot (-1: empty, never
    drawn); ``round_weights`` ``[num_rounds]``: the mixture's weights by round (normalised or not).
    """
    slot_weights = jnp.where(snapshot_round >= 0, round_weights[jnp.maximum(snapshot_round, 0)], 0.0)
    return jax.random.categorical(key, jnp.log(slot_weights), shape=(num_episodes,))


def make_env(config: AILBoostConfig):
    """The env as the SAC learner sees it: actions in [-1, 1]."""
    env, env_params = envs.make(config.env, **dict(config.env_kwargs))
    if envs.is_discrete(env, env_params):
        raise ConfigError(f"AILBoostConfig.env = {config.env!r} has discrete actions; the SAC learner needs continuous")
    return wrappers.RescaleAction(env), env_params


def expert_inputs(demos, action_space) -> jax.Array:
    """Discriminator inputs ``[N, obs_dim + action_dim]`` of a demonstration ``Dataset``
    (raw env actions in ``action_space`` mapped onto the learner's [-1, 1])."""
    actions = wrappers.from_box(jnp.asarray(demos.action, jnp.float32), action_space)
    return jnp.concatenate([jnp.asarray(demos.obs, jnp.float32), actions], axis=-1)


def make_train(config: AILBoostConfig, demos) -> Trainer:
    """``demos``: a ``rljax.core.dataset.Dataset`` of expert demonstrations for ``config.env``."""
    env, env_params = make_env(config)
    raw_env, _ = envs.make(config.env, **dict(config.env_kwargs))
    check_matches_env(demos, raw_env, env_params, name="demos")
    expert_x = expert_inputs(demos, raw_env.action_space(env_params))
    obs_shape, action_dim = envs.observation_shape(env, env_params), envs.action_dim(env, env_params)
    nets = sac.make_networks(config.sac, obs_shape, action_dim)
    disc = MLP(config.disc_hidden_sizes, 1, config.disc_activation)
    episode_steps = envs.max_episode_steps(env, env_params)
    per_round = config.episodes_per_round * episode_steps
    K = config.max_learners

    def discriminate(params, x):
        d = disc.apply(params, x)[..., 0]
        return jnp.tanh(d) if config.disc_tanh_output else d

    def init(key: jax.Array, hp: AILBoostHParams) -> AILBoostState:
        learner_key, disc_key, key = jax.random.split(key, 3)
        learner = sac.init_learner(nets, learner_key, hp.sac)
        disc_params = disc.init(disc_key, expert_x[:1])
        obs = jnp.zeros(obs_shape)
        example = sac.Transition(obs, jnp.zeros((action_dim,)), jnp.zeros(()), obs, jnp.zeros((), bool))
        return AILBoostState(
            learner=learner,
            snapshots=jax.tree.map(lambda p: jnp.zeros((K,) + p.shape, p.dtype), learner.actor_params),
            snapshot_round=jnp.full((K,), -1, jnp.int32),
            weights=jnp.zeros((config.num_rounds,)),
            disc_params=disc_params, disc_opt=optax.adam(hp.disc_lr).init(disc_params),
            replay=replay_lib.init(example, per_round, num_segments=config.num_rounds),
            round=jnp.zeros((), jnp.int32), key=key, hparams=hp,
        )

    def collect(actor_params, key: jax.Array) -> sac.Transition:
        """``episodes_per_round`` fresh episodes of the weak learner (its stochastic policy)."""
        reset_key, rollout_key = jax.random.split(key)
        carry = rollout_lib.reset(env, env_params, reset_key, config.episodes_per_round)
        policy = lambda obs, k: (sac.sample_action(nets, actor_params, obs, k), {})  # noqa: E731
        _, traj = rollout_lib.rollout(env, env_params, policy, carry, rollout_key, episode_steps)
        flat = lambda x: x.reshape((per_round,) + x.shape[2:])  # noqa: E731
        return sac.Transition(flat(traj.obs), flat(traj.action), flat(traj.reward), flat(traj.next_obs),
                              flat(traj.terminated))

    def mixture_weights(state: AILBoostState):
        """Per-segment sampling weights of the discriminator's learner samples (None: uniform over items)."""
        if config.variant == "dac":
            return None
        if config.variant == "uniform":
            return (state.weights > 0).astype(jnp.float32)
        return mixture(state.weights)

    def sac_segment_weights(state: AILBoostState):
        """Per-segment sampling weights of the SAC learner's batches: None (the whole buffer, uniformly),
        or with ``sac_replay="mixture"`` uniform over the items of the learners the discriminator is
        trained on, the kept ones. The relabelling reward ``D`` is fitted only there: on the data of a
        dropped learner it drifts towards that of the current near-expert data (measured on Pendulum)."""
        if config.variant == "dac" or config.sac_replay == "buffer":
            return None
        return jnp.where(state.weights > 0, state.replay.size, 0).astype(jnp.float32)

    def disc_step(state: AILBoostState, key: jax.Array):
        expert_key, mix_key, gp_key = jax.random.split(key, 3)
        hp = state.hparams
        expert = expert_x[jax.random.randint(expert_key, (config.disc_batch_size,), 0, expert_x.shape[0])]
        batch, _ = replay_lib.sample(state.replay, mix_key, config.disc_batch_size, mixture_weights(state))
        mixture = jnp.concatenate([batch.obs, batch.action], axis=-1)

        def loss_fn(params):
            d_expert, d_mixture = discriminate(params, expert), discriminate(params, mixture)
            if config.variant == "dac":
                loss, aux = imitation.dac_discriminator_loss(d_expert, d_mixture)
            else:
                loss, aux = imitation.reverse_kl_discriminator_loss(d_expert, d_mixture)
            penalty = imitation.gradient_penalty(lambda x: discriminate(params, x), expert, mixture, gp_key)
            # The divergence estimate of every variant: 1 - E_E[exp(-D)] - E_mix[D] <= KL(d^mix || d^E).
            kl = 1.0 - jnp.exp(-d_expert).mean() - d_mixture.mean()
            return loss + hp.grad_penalty * penalty, {**aux, "grad_penalty": penalty, "kl_estimate": kl}

        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.disc_params)
        updates, disc_opt = optax.adam(hp.disc_lr).update(grads, state.disc_opt, state.disc_params)
        return state.replace(disc_params=optax.apply_updates(state.disc_params, updates), disc_opt=disc_opt), aux

    def sac_step(state: AILBoostState, key: jax.Array):
        sample_key, step_key = jax.random.split(key)
        batch, _ = replay_lib.sample(state.replay, sample_key, config.sac.batch_size, sac_segment_weights(state))
        reward = discriminate(state.disc_params, jnp.concatenate([batch.obs, batch.action], axis=-1))
        batch = batch.replace(reward=jax.lax.stop_gradient(reward))
        learner, metrics = sac.learner_step(nets, state.learner, state.hparams.sac, batch, step_key)
        return state.replace(learner=learner), {**metrics, "imitation_reward": reward.mean()}

    def update(state: AILBoostState):
        key, collect_key, disc_key, sac_key = jax.random.split(state.key, 4)
        t = state.round
        # 1. Snapshot the SAC actor as weak learner t; its episodes fill segment t.
        slot = t % K
        snapshots = jax.tree.map(lambda ring, p: ring.at[slot].set(p), state.snapshots, state.learner.actor_params)
        transitions = collect(state.learner.actor_params, collect_key)
        replay = replay_lib.add(state.replay.replace(current=t), transitions)
        # 2. Reweight the mixture.
        weights = add_learner(state.weights, t, state.hparams.eta, K)
        state = state.replace(snapshots=snapshots, snapshot_round=state.snapshot_round.at[slot].set(t),
                              weights=weights, replay=replay, round=t + 1, key=key)
        # 3. Discriminator: expert vs mixture.
        state, disc_metrics = jax.lax.scan(disc_step, state, jax.random.split(disc_key, config.disc_steps_per_round))
        # 4. Weak learner: SAC on the whole buffer, rewards from the current discriminator.
        state, sac_metrics = jax.lax.scan(sac_step, state, jax.random.split(sac_key, config.sac_steps_per_round))
        metrics = {k: v.mean() for k, v in sac_metrics.items()}
        metrics |= {k: v[-1] for k, v in disc_metrics.items()}  # after this round's discriminator training
        metrics["episode_return"] = transitions.reward.sum() / config.episodes_per_round  # the new learner's
        metrics["num_learners"] = (weights > 0).sum()
        return state, metrics

    def evaluate(state: AILBoostState, key: jax.Array) -> dict[str, jax.Array]:
        """The variant's policy, acting by its mean action.

        AILBoost and the ablation: their mixture, one weak learner per episode drawn by its
        weight (boosting's, or equal). DAC has no mixture: its current SAC actor. Before
        the first round every episode runs the initial actor.
        """
        pick_key, run_key = jax.random.split(key)
        current = jax.tree.map(lambda p: jnp.broadcast_to(p, (config.eval_episodes,) + p.shape),
                               state.learner.actor_params)
        if config.variant == "dac":
            params = current
        else:
            slots = episode_learners(pick_key, state.snapshot_round, mixture_weights(state), config.eval_episodes)
            params = jax.tree.map(  # one learner per episode
                lambda ring, now: jnp.where(state.round > 0, ring[slots], now), state.snapshots, current
            )

        def act(obs, k):
            return jax.vmap(lambda p, o: sac.mean_action(nets, p, o[None])[0])(params, obs)

        return episode_returns(env, env_params, act, run_key, config.eval_episodes)

    return Trainer(config=config, init=init, update=update, evaluate=evaluate,
                   num_updates=config.num_rounds, env_steps_per_update=per_round)
