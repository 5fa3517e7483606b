"""ReCOIL: offline imitation from arbitrary off-policy data (Sikchi, Zheng, Zhang, Niekum, ICLR 2024, "Dual RL").

**The objective.** With expert occupancy ``d^E``, an arbitrary (suboptimal,
reward-free) data occupancy ``d^S`` and a mixing weight ``beta`` in (0, 1],
ReCOIL matches *mixtures*, so that ``d^S`` need not cover the expert:

    min_pi  D_f( beta d^pi + (1 - beta) d^S  ||  beta d^E + (1 - beta) d^S ).

Written as an LP over ``d`` with the Bellman-flow constraints of ``pi`` and the
divergence weighted by ``1/beta`` (a constant: the same optimum), the Lagrangian
dual over multipliers ``Q(s, a)``, multiplied by ``beta``, is

    max_pi min_Q  beta (1 - gamma) E_{s0~d0, a0~pi}[Q(s0, a0)]
                  + E_{d^mix_{E,S}}[ f*( y(s, a) ) ]  -  (1 - beta) E_{d^S}[ y(s, a) ],      (dual)
    y(s, a) = gamma E_{s'~P(s,a), a'~pi}[Q(s', a')] - Q(s, a),   d^mix_{E,S} = beta d^E + (1 - beta) d^S,

and for every ``pi`` its value is ``min_Q = -D_f(beta d^pi + (1 - beta) d^S || d^mix_{E,S})``
(strong duality; ``tests/test_recoil.py`` checks it on a tabular MDP), so the
max over ``pi`` is the expert (value 0), whatever ``d^S`` covers. At the inner
optimum ``(f*)'(y)`` is the density ratio of the two mixtures. Expanded per
source, for chi2 (``f*(y) = y + y^2/4``) the linear parts cancel on ``d^S``:
``E_mix[y] - (1-beta) E_S[y] = beta E_E[y]``, so expert pairs are pushed to
implied reward ``Q - gamma V' = 2`` and suboptimal ones to 0 (no discriminator,
no reward).

**The practical algorithm** (as f-DVL, the paper's dual-V recipe): three networks,

* ``Q`` (twin critics) minimises the (dual) with ``E_pi Q(s', .)`` replaced by a
  stop-gradient state value ``V(s')`` (semi-gradient, as the official code):
  ``beta E_E[f*(y)] + (1 - beta) E_S[f*(y)] - (1 - beta) E_S[y]``,
  ``y = gamma (1 - terminated) V(s') - Q(s, a)``  (:func:`recoil_critic_loss`);
  the initial-state term has no gradient in ``Q(s, a)`` here: with the max over
  ``pi`` it is a term in ``V``, which the implicit maximiser below stands for;
* ``V`` fits an implicit maximiser (expectile or Gumbel) of the target critics'
  ``min_k Q_k(s, a)`` over the mixture's actions: the max over ``pi``, in-sample;
* ``pi`` is extracted by advantage-weighted regression on the mixture,
  ``-E_mix[min(exp(k (Q - V)), 100) log pi(a|s)]``, with IQL's policy
  (``rljax.core.networks.TanhMeanGaussianActor``) and its learning rate decayed to 0 by a
  cosine over training, as f-DVL and the DVL/IQL code.

Expectations over ``d^mix_{E,S}`` are taken with equal-size batches from each
source, weighted ``beta`` and ``1 - beta``: ``beta`` is a traced hyperparameter
(a sweep over it is one ``vmap``).

**Behaviour cloning baselines** share the trainer (``method``): ``bc_all``
clones every transition of both sources alike (each source weighted by its
share of the rows), ``bc_expert`` the expert's alone: ``weighted_bc_loss`` with
unit weights, no critic.

**Where this differs from the official code** (a public JAX ReCOIL critic in the
DVL family, not the paper): that code regresses ``Q`` on expert rows to a
constant ``200`` and on mixture rows to ``-2 + gamma V(s')`` (absorbing target
``-200``), an LS-IQ-style bounded regression; its ``+200/-2/-200`` constants
are not in the paper. Here the critic minimises the paper's dual itself (chi2:
implied rewards 2 and 0, values bounded by ``2 / (1 - gamma)`` without any
constant). The official value loss uses the Gumbel maximiser on the mixture;
here expectile (the default) or Gumbel.

    trainer = make_train(ReCOILConfig(), expert, suboptimal)      # offline.Transitions, actions in [-1, 1]
    state, metrics = jax.jit(jax.vmap(trainer))(keys, broadcast_hparams(ReCOILHParams(), len(keys)))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs
from envs import wrappers
from rljax.core import offline
from rljax.core.config import (DISCOUNT, FRACTION, NON_NEGATIVE, OPEN_UNIT, POSITIVE, ConfigError, require,
                                require_in_ranges, require_one_of, require_positive)
from rljax.core.dataset import DatasetError, check_matches_env
from rljax.core.evaluation import episode_returns
from rljax.core.networks import ACTIVATIONS, MLP, QEnsemble, TanhMeanGaussianActor
from rljax.core.trainer import Trainer
from rljax.losses import dice

DIVERGENCES = ("chi2", "kl")  # f* finite on the whole line (tv, reverse_kl and js have bounded domains)
IMPLICIT_MAXIMISERS = ("expectile", "gumbel")
METHODS = ("recoil", "bc_all", "bc_expert")
MAX_AWR_WEIGHT = 100.0


# ---------------------------------------------------------------- the loss


def _weighted_mean(x, weights):
    """``E[x]`` under ``weights`` (probabilities over rows), or the plain mean."""
    return x.mean() if weights is None else (weights * x).sum() / weights.sum()


def recoil_critic_loss(q_expert, target_expert, q_suboptimal, target_suboptimal, beta, divergence: str = "chi2", *,
                       nonnegative: bool = False, initial_term=0.0, expert_weights=None, suboptimal_weights=None):
    """ReCOIL's dual objective over ``Q`` (see the module docstring), from per-source rows.

        J = beta * initial_term + beta E_E[f*(y)] + (1 - beta) E_S[f*(y)] - (1 - beta) E_S[y],
        y = target - q,   target = gamma E_{pi} Q(s', .)  (or gamma (1 - terminated) V(s'))

    ``initial_term``: ``(1 - gamma) E_{d0, pi}[Q(s0, a0)]`` when the exact dual is wanted (a
    tabular check); 0 in the semi-gradient critic update, where it has no gradient in ``Q(s, a)``.
    ``expert_weights``/``suboptimal_weights``: probabilities over the rows (exact expectations);
    default: sample means. ``nonnegative`` uses ``f*_p`` (the conjugate over ratios >= 0) instead
    of the paper's ``f*``. Returns ``(J, aux)``; ``aux["ratio_*"]`` is the implied density ratio
    ``(f*)'(y)`` of the agent's mixture to the expert's.
    """
    if divergence not in DIVERGENCES:
        raise ConfigError(f"divergence: expected one of {DIVERGENCES}, got {divergence!r}")
    conj = dice.conjugate_nonnegative if nonnegative else dice.conjugate
    y_e, y_s = target_expert - q_expert, target_suboptimal - q_suboptimal
    f_e, f_s = conj(divergence, y_e), conj(divergence, y_s)
    loss = (beta * initial_term + beta * _weighted_mean(f_e, expert_weights)
            + (1.0 - beta) * _weighted_mean(f_s, suboptimal_weights)
            - (1.0 - beta) * _weighted_mean(y_s, suboptimal_weights))
    aux = {
        "critic_loss": loss,
        "q_expert": _weighted_mean(q_expert, expert_weights),
        "q_suboptimal": _weighted_mean(q_suboptimal, suboptimal_weights),
        # -y = Q - gamma V': the reward the critic implies (chi2 optimum: 2 beta d^E / d^mix)
        "implied_reward_expert": -_weighted_mean(y_e, expert_weights),
        "implied_reward_suboptimal": -_weighted_mean(y_s, suboptimal_weights),
        "ratio_expert": _weighted_mean(dice.optimal_ratio(divergence, y_e), expert_weights),
        "ratio_suboptimal": _weighted_mean(dice.optimal_ratio(divergence, y_s), suboptimal_weights),
    }
    return loss, aux


# ---------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class ReCOILConfig:
    """Static settings (shapes, counts, choices)."""

    env: str = "gymnax/Pendulum-v1"
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    method: str = "recoil"  # "recoil", or the baselines "bc_all" / "bc_expert"
    divergence: str = "chi2"  # f of D_f: "chi2" or "kl"
    nonnegative: bool = False  # f*_p (ratios >= 0) instead of the paper's f*
    implicit: str = "expectile"  # V's implicit maximiser: "expectile" or "gumbel"
    gumbel_max_clip: float = 7.0  # Gumbel only: z clipped at this (XQL/f-DVL)
    num_updates: int = 1_000
    gradient_steps: int = 10  # gradient steps per update (metrics are their mean)
    batch_size: int = 128  # rows from *each* source per step (expert and suboptimal)
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    num_q: int = 2  # twin critics; V and the policy use the minimum of the targets
    eval_episodes: int = 10

    def __post_init__(self):
        name = type(self).__name__
        require_positive(self, "num_updates", "gradient_steps", "batch_size", "num_q", "eval_episodes",
                         "gumbel_max_clip")
        require_one_of(self, "method", METHODS)
        require_one_of(self, "divergence", DIVERGENCES)
        require_one_of(self, "implicit", IMPLICIT_MAXIMISERS)
        require_one_of(self, "activation", ACTIVATIONS)
        require(len(self.hidden_sizes) > 0 and all(int(h) > 0 for h in self.hidden_sizes),
                f"{name}.hidden_sizes: expected positive layer widths, got {self.hidden_sizes!r}")
        object.__setattr__(self, "env_kwargs", tuple(tuple(kv) for kv in self.env_kwargs))
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))


@struct.dataclass
class ReCOILHParams:
    """Dynamic hyperparameters (vmappable): the mixing weight ``beta``, ``gamma``, learning rates, the target
    step, the implicit maximiser's ``expectile`` / ``value_temperature`` and AWR's inverse temperature."""

    beta: float = 0.5  # the paper's beta: weight of the expert in both mixtures
    gamma: float = 0.99
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    actor_lr: float = 3e-4  # cosine-decayed to 0 over all gradient steps (BC baselines too)
    tau: float = 0.005  # target-critic step
    expectile: float = 0.7  # implicit="expectile"
    value_temperature: float = 1.0  # implicit="gumbel": V -> T log E[exp(Q / T)]
    inverse_temperature: float = 3.0  # AWR: weights min(exp(k (Q - V)), 100)


_HPARAM_RANGES = {
    "beta": FRACTION,
    "gamma": DISCOUNT,
    "critic_lr": POSITIVE,
    "value_lr": POSITIVE,
    "actor_lr": POSITIVE,
    "tau": FRACTION,
    "expectile": OPEN_UNIT,
    "value_temperature": POSITIVE,
    "inverse_temperature": NON_NEGATIVE,
}


def check_hparams(hp: ReCOILHParams) -> None:
    """``ConfigError`` naming the field unless every hyperparameter (scalars or per-run arrays) is in range."""
    require_in_ranges(hp, _HPARAM_RANGES)


# ---------------------------------------------------------------- networks and state


@struct.dataclass
class ReCOILState:
    """The whole ReCOIL training state, one pytree: twin critics (and targets), V and the actor with their Adam
    states (critic and V are None for the BC baselines), both data sources, and ``grad_steps`` (scalar)."""

    critic_params: Any  # None for the BC baselines
    target_critic_params: Any
    critic_opt: Any
    value_params: Any
    value_opt: Any
    actor_params: Any
    actor_opt: Any
    expert: offline.Transitions  # actions in [-1, 1]
    suboptimal: offline.Transitions
    key: jax.Array
    grad_steps: jax.Array
    hparams: ReCOILHParams


@dataclasses.dataclass(frozen=True)
class ReCOILTrainer(Trainer):
    """A :class:`Trainer` plus ``init_from(key, hparams, expert, suboptimal)`` (other data of the same
    shapes), ``act(state, obs) -> mean action in [-1, 1]``, ``q_values(state, obs, action) -> [K, B]``
    and ``value(state, obs) -> [B]``."""

    init_from: Callable[..., ReCOILState]
    act: Callable[..., jax.Array]
    q_values: Callable[..., jax.Array]
    value: Callable[..., jax.Array]


def check_transitions(data: offline.Transitions, env, env_params, name: str) -> None:
    """``DatasetError`` naming the field unless ``data`` fits the env (actions in [-1, 1])."""
    n = data.obs.shape[0]
    if n < 1:
        raise DatasetError(f"{name}: expected at least one transition, got 0")
    check_matches_env(data, env, env_params, name=name)
    if data.next_obs.shape != data.obs.shape:
        raise DatasetError(f"{name}: field 'next_obs' has shape {data.next_obs.shape}, expected {data.obs.shape} (as obs)")
    for field in ("reward", "terminated"):
        shape = getattr(data, field).shape
        if shape != (n,):
            raise DatasetError(f"{name}: field {field!r} has shape {shape}, expected {(n,)}")


def make_env(config: ReCOILConfig):
    """The env with its action box rescaled onto [-1, 1] (the policy's range)."""
    env, env_params = envs.make(config.env, **dict(config.env_kwargs))
    if envs.is_discrete(env, env_params):
        raise ConfigError(f"ReCOILConfig.env = {config.env!r} has discrete actions; this ReCOIL agent is for "
                          "continuous actions (a Gaussian AWR policy)")
    return wrappers.RescaleAction(env), env_params


# ---------------------------------------------------------------- the algorithm


def make_train(config: ReCOILConfig, expert: offline.Transitions, suboptimal: offline.Transitions) -> ReCOILTrainer:
    """ReCOIL (or a BC baseline, ``config.method``) on ``expert`` and ``suboptimal`` transitions."""
    env, env_params = make_env(config)
    check_transitions(expert, env, env_params, "expert")
    check_transitions(suboptimal, env, env_params, "suboptimal")
    obs_shape = envs.observation_shape(env, env_params)
    action_dim = envs.action_dim(env, env_params)
    num_expert, num_suboptimal = expert.size, suboptimal.size
    n = config.batch_size
    with_critic = config.method == "recoil"

    critic = QEnsemble(config.num_q, config.hidden_sizes, config.activation)
    value_net = MLP(config.hidden_sizes, 1, config.activation)
    actor = TanhMeanGaussianActor(action_dim, config.hidden_sizes, config.activation)
    critic_tx = lambda hp: optax.adam(hp.critic_lr)  # noqa: E731  (rebuilt from possibly traced rates)
    value_tx = lambda hp: optax.adam(hp.value_lr)  # noqa: E731
    actor_tx = lambda hp: offline.actor_optimizer(hp.actor_lr, config.num_updates * config.gradient_steps)  # noqa: E731

    def v_of(params, obs):
        return value_net.apply(params, obs)[..., 0]

    def source_weight(hp: ReCOILHParams):
        """Weight of the expert source in the policy's mixture: beta (ReCOIL), the expert's share of
        the rows (bc_all: every transition alike) or 1 (bc_expert)."""
        if config.method == "bc_all":
            return num_expert / (num_expert + num_suboptimal)
        if config.method == "bc_expert":
            return 1.0
        return hp.beta

    def init_from(key: jax.Array, hp: ReCOILHParams, expert_data: offline.Transitions,
                  suboptimal_data: offline.Transitions) -> ReCOILState:
        for name, want, got in (("expert", expert, expert_data), ("suboptimal", suboptimal, suboptimal_data)):
            for field in ("obs", "action", "reward", "next_obs", "terminated"):
                a, b = getattr(want, field).shape, getattr(got, field).shape
                require(a == b, f"init_from: {name}.{field} must have shape {a} as in make_train, got {b}")
        critic_key, value_key, actor_key, key = jax.random.split(key, 4)
        obs, action = jnp.zeros((1,) + obs_shape), jnp.zeros((1, action_dim))
        actor_params = actor.init(actor_key, obs)
        critic_params = critic.init(critic_key, obs, action) if with_critic else None
        value_params = value_net.init(value_key, obs) if with_critic else None
        return ReCOILState(
            critic_params=critic_params, target_critic_params=critic_params,
            critic_opt=critic_tx(hp).init(critic_params) if with_critic else None,
            value_params=value_params, value_opt=value_tx(hp).init(value_params) if with_critic else None,
            actor_params=actor_params, actor_opt=actor_tx(hp).init(actor_params),
            expert=expert_data, suboptimal=suboptimal_data, key=key, grad_steps=jnp.zeros((), jnp.int32), hparams=hp,
        )  # fmt: skip

    def init(key: jax.Array, hp: ReCOILHParams) -> ReCOILState:
        return init_from(key, hp, expert, suboptimal)

    def gradient_step(state: ReCOILState, key: jax.Array):
        hp = state.hparams
        e_key, s_key = jax.random.split(key)
        e, s = offline.sample(state.expert, e_key, n), offline.sample(state.suboptimal, s_key, n)
        batch = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), e, s)  # expert rows first
        w_e = source_weight(hp)
        # mean(row_weight * x) = w_e E_E[x] + (1 - w_e) E_S[x] over equal-size halves
        row_weight = jnp.concatenate([jnp.full((n,), 2.0 * w_e), jnp.full((n,), 2.0 * (1.0 - w_e))])
        metrics = {}

        if with_critic:
            # 1. V: implicit maximiser of the target critics' min_k Q_k over the mixture's actions.
            q_target = critic.apply(state.target_critic_params, batch.obs, batch.action).min(axis=0)

            def value_objective(p):
                diff = q_target - v_of(p, batch.obs)
                if config.implicit == "expectile":
                    per_row = dice.expectile_loss(diff, hp.expectile)
                else:
                    per_row = dice.gumbel_loss(diff, hp.value_temperature, config.gumbel_max_clip)
                return (row_weight * per_row).mean(), diff

            (value_loss, diff), grads = jax.value_and_grad(value_objective, has_aux=True)(state.value_params)
            updates, value_opt = value_tx(hp).update(grads, state.value_opt, state.value_params)
            value_params = optax.apply_updates(state.value_params, updates)

            # 2. Q: the dual with E_pi Q(s', .) -> V(s') (stop-gradient): semi-gradient.
            next_v = jax.lax.stop_gradient(v_of(value_params, batch.next_obs))
            target = hp.gamma * (1.0 - batch.terminated.astype(jnp.float32)) * next_v

            def critic_objective(p):
                q = critic.apply(p, batch.obs, batch.action)  # [K, 2n]
                losses, aux = jax.vmap(lambda q_k: recoil_critic_loss(
                    q_k[:n], target[:n], q_k[n:], target[n:], hp.beta, config.divergence,
                    nonnegative=config.nonnegative))(q)
                return losses.sum(), jax.tree.map(lambda x: x.mean(axis=0), aux)  # each member its own loss

            (_, critic_aux), grads = jax.value_and_grad(critic_objective, has_aux=True)(state.critic_params)
            updates, critic_opt = critic_tx(hp).update(grads, state.critic_opt, state.critic_params)
            critic_params = optax.apply_updates(state.critic_params, updates)
            target_critic_params = optax.incremental_update(critic_params, state.target_critic_params, hp.tau)

            advantage = q_target - v_of(value_params, batch.obs)
            weights = dice.awr_weights(advantage, hp.inverse_temperature, MAX_AWR_WEIGHT)
            metrics |= {"loss/value": value_loss, **{f"critic/{k}": v for k, v in critic_aux.items()},
                        "v_mean": v_of(value_params, batch.obs).mean(), "advantage_expert": advantage[:n].mean(),
                        "advantage_suboptimal": advantage[n:].mean(), "awr_weight_expert": weights[:n].mean(),
                        "awr_weight_suboptimal": weights[n:].mean(), "value_gap": diff.mean()}
            state = state.replace(critic_params=critic_params, target_critic_params=target_critic_params,
                                  critic_opt=critic_opt, value_params=value_params, value_opt=value_opt)
        else:
            weights = jnp.ones((2 * n,))

        # 3. pi: weighted BC on the mixture (AWR weights for ReCOIL, unit weights for BC).
        def actor_objective(p):
            log_prob = actor.apply(p, batch.obs).log_prob(batch.action)
            return dice.weighted_bc_loss(log_prob, weights * row_weight), log_prob

        (actor_loss, log_prob), grads = jax.value_and_grad(actor_objective, has_aux=True)(state.actor_params)
        updates, actor_opt = actor_tx(hp).update(grads, state.actor_opt, state.actor_params)
        actor_params = optax.apply_updates(state.actor_params, updates)
        metrics |= {"loss": actor_loss, "loss/actor": actor_loss, "log_prob_expert": log_prob[:n].mean(),
                    "log_prob_suboptimal": log_prob[n:].mean()}
        state = state.replace(actor_params=actor_params, actor_opt=actor_opt, grad_steps=state.grad_steps + 1)
        return state, metrics

    def update(state: ReCOILState):
        key, step_key = jax.random.split(state.key)
        state, metrics = jax.lax.scan(gradient_step, state.replace(key=key),
                                      jax.random.split(step_key, config.gradient_steps))
        return state, {name: value.mean() for name, value in metrics.items()}

    def act(state: ReCOILState, obs):
        return actor.apply(state.actor_params, obs).mean()

    def evaluate(state: ReCOILState, key: jax.Array) -> dict[str, jax.Array]:
        """The policy's mean action, ``eval_episodes`` episodes."""
        return episode_returns(env, env_params, lambda obs, k: act(state, obs), key, config.eval_episodes)

    def q_values(state: ReCOILState, obs, action):
        require(with_critic, f"q_values: method {config.method!r} has no critic")
        return critic.apply(state.critic_params, obs, action)

    def value(state: ReCOILState, obs):
        require(with_critic, f"value: method {config.method!r} has no value network")
        return v_of(state.value_params, obs)

    return ReCOILTrainer(config=config, init=init, update=update, evaluate=evaluate, num_updates=config.num_updates,
                         env_steps_per_update=0, init_from=init_from, act=act, q_values=q_values, value=value)
