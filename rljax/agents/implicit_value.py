"""Offline RL with implicit value maximisers: IQL, XQL and f-DVL in one module.

* IQL (Kostrikov, Nair, Levine; ICLR 2022): V by expectile regression.
* XQL (Garg, Hejna, Geist, Ermon; ICLR 2023): V by Gumbel regression.
* f-DVL (Sikchi, Zheng, Zhang, Niekum; ICLR 2024, "Dual RL"): V by the dual-V
  objective of an f-divergence (chi-squared or total variation). Its reverse-KL
  instance is XQL's Gumbel regression (the f-DVL code's ``reverse-kl`` branch calls
  XQL's loss), so f-DVL with reverse KL is the ``xql`` preset.

The three share everything but the value loss (``ImplicitValueConfig.value_loss``)::

    V:  min_V  E_{(s,a)~D}[ l(Qbar(s, a) - V(s)) ]      Qbar = min of the twin *target* critics
    Q:  min_Q  E_D[(r + gamma (1 - terminated) V(s') - Q(s, a))^2]     (each twin; V from this step)
    pi: max_pi E_D[ min(exp(awr_beta (Qbar - V)), 100) log pi(a|s) ]   (AWR, weights stop-gradient)

with ``diff = Qbar - V`` and (``alpha`` = ``hp.temperature``, ``lam`` = ``hp.lam``):

=============  ===========================================  ====================================
value_loss     l(diff)                                      minimiser over V (a fixed s)
=============  ===========================================  ====================================
``expectile``  |tau - 1(diff < 0)| diff^2                    the tau-expectile of Q over D's actions
``gumbel``     exp(z) - z - 1,  z = diff / alpha            alpha log E[exp(Q / alpha)]
``chi2``       lam alpha f*_p(diff / alpha) - (1 - lam) diff  E[max(0, 1 + (Q - V)/(2 alpha))] = (1-lam)/lam
``tv``         the same with TV's f*_p                       P(Q > V - alpha/2) = (1 - lam)/lam
=============  ===========================================  ====================================

f-DVL's value objective (Dual RL, the dual-V problem with ``d^O`` in place of the
initial-state distribution and the temperature-lambda weighting; the official
code's ``loss_temp``) is ``(1 - lam) E_{d^O}[V(s)] + lam E_{d^O}[f*_p(Q(s, a) - V(s))]``.
The dual-V problem of ``max_d E_d[r] - alpha D_f(d || d^O)`` carries the
regularisation strength alpha as ``alpha f*_p(./alpha)``; we keep it, so
``alpha`` is a temperature for every method here (small alpha: closer to the max over
dataset actions; large alpha: closer to the behaviour value), except TV, whose bounded
ratio makes alpha only shift V by alpha/2 (the table's last row): every advantage drops
by alpha/2 and the AWR weights by exp(-awr_beta alpha/2). XQL's Gumbel loss
is this form with ``f*(y) = exp(y)`` and ``lam = 1/2`` (times ``2/alpha``, minus
a constant), so XQL's beta is alpha.

``f*_p(y) = sup_{w >= 0} w y - f(w)`` (``rljax.losses.dice.conjugate_nonnegative``):
chi2 ``y + y^2/4`` for ``y >= -2``, ``-1`` below; tv ``max(y, -1/2)`` (the conjugate
with the ratio bounded in [0, 1]; the unconstrained TV conjugate is +inf above 1/2,
a hard constraint a gradient step cannot follow).

**Deviations from the official f-DVL code** (hari-sikchi/DVL, offline/critic.py; our
``dice.fdvl_value_loss`` is that code's form), toward the paper:

1. The code passes the temperature as ``lam`` itself (``alpha f*(diff) - (1 - alpha)
   diff``), which has no minimiser for ``lam > 1`` with TV (V -> +inf) and puts V
   above max Q for chi2; here ``lam`` is a separate weight in (0, 1) and alpha
   scales the residual as in the dual-V problem.
2. The code's chi2 "f*_p" is ``max(y + y^2/4, 0)``: 0 on [-4, 0] and *growing* below
   -4, not the conjugate over non-negative ratios (-1 below -2). Its TV ``max(y, 0)``
   equals the conjugate's ``max(y, -1/2)`` with V shifted by alpha/2
   (``tests/test_implicit_value.py`` pins the identity).
3. Q regresses with a squared loss (the paper's); the code uses Huber(20)
   (``huber_delta`` reproduces it).
4. The code's ``--sample_random_times`` (uniform random actions in the V loss) is
   not implemented.

XQL's Gumbel loss keeps the official XQL/DVL code's stabilisers (``max_clip`` on z,
the batch-max rescaling ``gumbel_rescale``): the papers' comparisons ran XQL with them.
The V network has LayerNorm after each hidden layer (``value_layer_norm``): XQL's
``configs/mujoco_config.py`` sets ``layernorm = True`` and its learner passes it to
``ValueCritic``; DVL, built on that code, runs its MuJoCo tasks with a config file of
the same name (its contents not read). The actor is IQL's: a Gaussian whose mean is
``tanh`` of the network output, with a state-independent log standard deviation in
[-5, 2], and a cosine-decayed learning rate; evaluation runs its mean action.

Same shape as every rljax agent::

    data = offline.from_dataset(dataset_lib.load("data/pendulum_mixed"), env, env_params)
    trainer = make_train(preset("xql"), data)
    state, metrics = jax.jit(jax.vmap(trainer))(keys, broadcast_hparams(hp, len(keys)))

Everything in ``ImplicitValueHParams`` (temperature, lam, expectile, AWR beta, ...) is
traced, so a sweep over the temperature runs in one vmapped program.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import envs
from envs import wrappers
from rljax.core import offline
from rljax.core.config import (DISCOUNT, FRACTION, OPEN_UNIT, POSITIVE, ConfigError, require, require_in_ranges,
                                require_one_of, require_positive)
from rljax.core.evaluation import episode_returns
from rljax.core.networks import QEnsemble, TanhMeanGaussianActor
from rljax.core.trainer import Trainer
from rljax.losses import dice

VALUE_LOSSES = ("expectile", "gumbel", "chi2", "tv")


@dataclasses.dataclass(frozen=True)
class ImplicitValueConfig:
    """Static settings. Defaults follow IQL / the f-DVL code (2x256 networks, lr 3e-4, tau 0.005);
    the batch is 256 (IQL's; the f-DVL code's is 1024)."""

    env: str = "gymnax/Pendulum-v1"
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    value_loss: str = "expectile"
    num_updates: int = 100_000  # gradient steps (each: V, actor, Q, targets)
    batch_size: int = 256
    hidden_sizes: tuple[int, ...] = (256, 256)
    num_q: int = 2
    value_layer_norm: bool = True
    max_clip: float | None = 7.0  # gumbel only: z = diff / alpha clipped above (XQL/DVL code)
    gumbel_rescale: bool = True  # gumbel only: divide by exp(max z) over the batch (XQL/DVL code)
    huber_delta: float | None = None  # None: squared Q loss (paper); 20.0: the f-DVL code's Huber
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    eval_episodes: int = 10

    def __post_init__(self):
        require_one_of(self, "value_loss", VALUE_LOSSES)
        require_positive(self, "num_updates", "batch_size", "num_q", "eval_episodes")
        require(self.max_clip is None or self.max_clip > 0,
                f"ImplicitValueConfig.max_clip: expected None or a positive number, got {self.max_clip!r}")
        require(self.huber_delta is None or self.huber_delta > 0,
                f"ImplicitValueConfig.huber_delta: expected None or a positive number, got {self.huber_delta!r}")
        require(self.log_std_min < self.log_std_max,
                f"ImplicitValueConfig.log_std_min ({self.log_std_min}) must be below log_std_max ({self.log_std_max})")
        object.__setattr__(self, "env_kwargs", tuple(tuple(kv) for kv in self.env_kwargs))
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        require(len(self.hidden_sizes) > 0 and all(h > 0 for h in self.hidden_sizes),
                f"ImplicitValueConfig.hidden_sizes: expected positive layer sizes, got {self.hidden_sizes!r}")


@struct.dataclass
class ImplicitValueHParams:
    """Dynamic hyperparameters (vmappable), shared by IQL, XQL and f-DVL; each method reads its own value-loss
    fields (``expectile``; ``temperature``; ``temperature`` and ``lam``). See :data:`PRESETS`."""

    temperature: float = 1.0  # alpha: XQL's beta; f-DVL's dual-V temperature (unused by expectile)
    lam: float = 0.5  # f-DVL's weight: (1 - lam) E[V] + lam E[alpha f*_p(diff/alpha)], in (0, 1)
    expectile: float = 0.7  # IQL's tau
    awr_beta: float = 3.0  # AWR inverse temperature
    max_weight: float = 100.0  # AWR weight clip
    gamma: float = 0.99
    tau: float = 0.005  # Polyak step of the target critics
    actor_lr: float = 3e-4  # cosine-decayed to 0 over num_updates
    critic_lr: float = 3e-4
    value_lr: float = 3e-4


# name -> (value_loss, hparams). lam: 1/2 for chi2 (the ratio's normalisation E[w*] = 1);
# TV has no minimiser at 1/2 (its ratio is bounded by 1), so 0.8, the f-DVL code's AntMaze
# value (V at the 75% quantile, shifted by alpha/2).
PRESETS: dict[str, tuple[str, ImplicitValueHParams]] = {
    "iql": ("expectile", ImplicitValueHParams(expectile=0.7)),
    "xql": ("gumbel", ImplicitValueHParams(temperature=2.0)),
    "fdvl_chi2": ("chi2", ImplicitValueHParams(temperature=1.0, lam=0.5)),
    "fdvl_tv": ("tv", ImplicitValueHParams(temperature=1.0, lam=0.8)),
}


def preset(name: str, **config_changes: Any) -> tuple[ImplicitValueConfig, ImplicitValueHParams]:
    """``(config, hparams)`` of a named method: ``iql``, ``xql``, ``fdvl_chi2`` or ``fdvl_tv``."""
    if name not in PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    value_loss, hp = PRESETS[name]
    return ImplicitValueConfig(value_loss=value_loss, **config_changes), hp


# ---------------------------------------------------------------- value losses


def fdvl_loss(diff, alpha, lam, divergence: str):
    """f-DVL's per-sample value loss ``lam alpha f*_p(diff / alpha) - (1 - lam) diff``, ``diff = Q - V``.

    Its mean over ``(s, a) ~ d^O`` is ``(1 - lam) E[V] + lam E[alpha f*_p((Q - V)/alpha)]`` up to
    a constant in V. Stationary in V where ``E[w*((Q - V)/alpha)] = (1 - lam)/lam`` (``w*``:
    ``dice.optimal_ratio``). TV uses ``max(y, -1/2)``: the conjugate with ratios in [0, 1].
    """
    y = diff / alpha
    if divergence == "chi2":
        conj = dice.conjugate_nonnegative("chi2", y)
    elif divergence == "tv":
        conj = jnp.maximum(y, -0.5)
    else:
        raise ConfigError(f"fdvl_loss: divergence must be 'chi2' or 'tv', got {divergence!r}")
    return lam * alpha * conj - (1.0 - lam) * diff


def plain_gumbel_loss(diff, beta, max_clip: float | None = None):
    """XQL's Gumbel regression ``exp(z) - z - 1``, ``z = diff / beta`` (optionally clipped), unrescaled."""
    z = diff / beta
    if max_clip is not None:
        z = jnp.minimum(z, max_clip)
    return jnp.exp(z) - z - 1.0


def value_loss(config: ImplicitValueConfig, diff, hp: ImplicitValueHParams):
    """The per-sample implicit-maximiser loss of ``diff = Q - V`` (shape ``[B]``) for ``config.value_loss``."""
    if config.value_loss == "expectile":
        return dice.expectile_loss(diff, hp.expectile)
    if config.value_loss == "gumbel":
        if config.gumbel_rescale:
            return dice.gumbel_loss(diff, hp.temperature, config.max_clip)
        return plain_gumbel_loss(diff, hp.temperature, config.max_clip)
    return fdvl_loss(diff, hp.temperature, hp.lam, config.value_loss)


def check_hparams(config: ImplicitValueConfig, hp: ImplicitValueHParams) -> None:
    """Errors naming the field for concrete (not traced) hyperparameters outside their range."""
    ranges = {"expectile": OPEN_UNIT} if config.value_loss == "expectile" else {"temperature": POSITIVE}
    if config.value_loss == "chi2":
        ranges["lam"] = OPEN_UNIT
    if config.value_loss == "tv":
        ranges["lam"] = (lambda x: (x > 0.5) & (x < 1), "a number in (1/2, 1) (TV has no minimiser at or below 1/2)")
    require_in_ranges(hp, ranges | {"gamma": DISCOUNT, "tau": FRACTION})


# ---------------------------------------------------------------- networks


class ValueMLP(nn.Module):
    """``V(s)``: Dense -> (LayerNorm) -> relu per hidden layer, then a linear output. ``[...]``."""

    hidden_sizes: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs):
        x = obs
        for size in self.hidden_sizes:
            x = nn.Dense(size, kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.relu(x)
        return nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(x)[..., 0]


class Networks(NamedTuple):
    """The flax modules (no parameters): tanh-mean Gaussian actor, twin Q ensemble and V network, plus the
    observation shape and action dimension they were built for (static)."""

    actor: TanhMeanGaussianActor
    critic: QEnsemble
    value: ValueMLP
    obs_shape: tuple[int, ...]
    action_dim: int


def make_networks(config: ImplicitValueConfig, obs_shape: tuple[int, ...], action_dim: int) -> Networks:
    """Actor (tanh-mean Gaussian), Q ensemble and V network for ``obs_shape`` and ``action_dim`` actions."""
    return Networks(
        actor=TanhMeanGaussianActor(action_dim, config.hidden_sizes, log_std_min=config.log_std_min,
                                    log_std_max=config.log_std_max),
        critic=QEnsemble(config.num_q, config.hidden_sizes),
        value=ValueMLP(config.hidden_sizes, config.value_layer_norm),
        obs_shape=tuple(obs_shape), action_dim=action_dim,
    )


# ---------------------------------------------------------------- learner


@struct.dataclass
class Learner:
    """Parameters and optimiser states of actor, twin critic (plus its Polyak target) and V; ``step`` counts
    gradient steps. The ``peak_abs_*`` scalars track divergence."""

    actor_params: Any
    critic_params: Any
    target_critic_params: Any
    value_params: Any
    actor_opt: Any
    critic_opt: Any
    value_opt: Any
    step: jax.Array
    peak_abs_v: jax.Array  # max |V| over training batches (inf once non-finite)
    peak_abs_q: jax.Array  # max |Q| over training batches, online and target twins (inf once non-finite)


def _optimizers(config: ImplicitValueConfig, hp: ImplicitValueHParams):
    # Rebuilt from (possibly traced) rates; their states do not depend on them.
    return offline.actor_optimizer(hp.actor_lr, config.num_updates), optax.adam(hp.critic_lr), optax.adam(hp.value_lr)


def init_learner(config: ImplicitValueConfig, nets: Networks, key: jax.Array, hp: ImplicitValueHParams) -> Learner:
    """Fresh parameters, target critic (= critic) and optimiser states; peak |V| and |Q| trackers at 0."""
    actor_key, critic_key, value_key = jax.random.split(key, 3)
    obs = jnp.zeros((1,) + nets.obs_shape)
    actor_params = nets.actor.init(actor_key, obs)
    critic_params = nets.critic.init(critic_key, obs, jnp.zeros((1, nets.action_dim)))
    value_params = nets.value.init(value_key, obs)
    actor_tx, critic_tx, value_tx = _optimizers(config, hp)
    return Learner(
        actor_params=actor_params, critic_params=critic_params, target_critic_params=critic_params,
        value_params=value_params, actor_opt=actor_tx.init(actor_params), critic_opt=critic_tx.init(critic_params),
        value_opt=value_tx.init(value_params), step=jnp.zeros((), jnp.int32),
        peak_abs_v=jnp.zeros(()), peak_abs_q=jnp.zeros(()),
    )


def _peak(previous, x):
    """Running max of ``|x|``; NaN counts as inf."""
    m = jnp.max(jnp.abs(x))
    return jnp.maximum(previous, jnp.where(jnp.isnan(m), jnp.inf, m))


def learner_step(config: ImplicitValueConfig, nets: Networks, learner: Learner, hp: ImplicitValueHParams,
                 batch: offline.Transitions):
    """One gradient step in the official order: V (on target Qbar), actor (AWR), Q (on the new V), targets."""
    actor_tx, critic_tx, value_tx = _optimizers(config, hp)
    target_q = nets.critic.apply(learner.target_critic_params, batch.obs, batch.action)  # [num_q, B]
    q_bar = jax.lax.stop_gradient(target_q.min(axis=0))

    # V: the implicit maximiser of Qbar over the dataset's actions.
    def v_objective(p):
        v = nets.value.apply(p, batch.obs)
        return value_loss(config, q_bar - v, hp).mean(), v

    (v_loss, v), grads = jax.value_and_grad(v_objective, has_aux=True)(learner.value_params)
    updates, value_opt = value_tx.update(grads, learner.value_opt, learner.value_params)
    value_params = optax.apply_updates(learner.value_params, updates)

    # Policy: advantage-weighted regression with the new V.
    advantage = q_bar - nets.value.apply(value_params, batch.obs)
    weights = dice.awr_weights(advantage, hp.awr_beta, hp.max_weight)

    def actor_objective(p):
        return dice.weighted_bc_loss(nets.actor.apply(p, batch.obs).log_prob(batch.action), weights)

    actor_loss, grads = jax.value_and_grad(actor_objective)(learner.actor_params)
    updates, actor_opt = actor_tx.update(grads, learner.actor_opt, learner.actor_params)
    actor_params = optax.apply_updates(learner.actor_params, updates)

    # Q: regress every twin onto r + gamma (1 - terminated) V(s').
    next_v = nets.value.apply(value_params, batch.next_obs)
    target = jax.lax.stop_gradient(batch.reward + hp.gamma * (1.0 - batch.terminated) * next_v)

    def critic_objective(p):
        q = nets.critic.apply(p, batch.obs, batch.action)
        err = q - target
        if config.huber_delta is None:
            per = err**2
        else:
            per = 2.0 * optax.huber_loss(err, delta=config.huber_delta)  # 2x: err^2 near 0, as the squared loss
        return per.mean(axis=-1).sum(), q

    (critic_loss, q), grads = jax.value_and_grad(critic_objective, has_aux=True)(learner.critic_params)
    updates, critic_opt = critic_tx.update(grads, learner.critic_opt, learner.critic_params)
    critic_params = optax.apply_updates(learner.critic_params, updates)
    target_critic_params = optax.incremental_update(critic_params, learner.target_critic_params, hp.tau)

    new = Learner(
        actor_params=actor_params, critic_params=critic_params, target_critic_params=target_critic_params,
        value_params=value_params, actor_opt=actor_opt, critic_opt=critic_opt, value_opt=value_opt,
        step=learner.step + 1, peak_abs_v=_peak(learner.peak_abs_v, v),
        peak_abs_q=_peak(_peak(learner.peak_abs_q, q), target_q),
    )
    finite = jnp.isfinite(v).all() & jnp.isfinite(q).all() & jnp.isfinite(target_q).all()
    metrics = {
        "value_loss": v_loss, "critic_loss": critic_loss, "actor_loss": actor_loss,
        "v_mean": v.mean(), "q_mean": q.mean(), "advantage_mean": advantage.mean(),
        "awr_weight_mean": weights.mean(), "max_abs_v": jnp.max(jnp.abs(v)), "max_abs_q": jnp.max(jnp.abs(q)),
        "finite": finite.astype(jnp.float32),
    }
    return new, metrics


def mean_action(nets: Networks, actor_params: Any, obs: jax.Array) -> jax.Array:
    """The policy's mean action in [-1, 1]: ``[B, action_dim]``."""
    return nets.actor.apply(actor_params, obs).mean()


# ---------------------------------------------------------------- trainer


@struct.dataclass
class ImplicitValueState:
    """The dataset is not in the state: ``make_train`` closes over it, so a vmapped sweep of many
    runs shares one copy on the device and checkpoints hold only the learner."""

    learner: Learner
    key: jax.Array
    hparams: ImplicitValueHParams


def make_env(config: ImplicitValueConfig):
    """The env as the policy sees it: actions in [-1, 1] (``offline.from_dataset``'s convention)."""
    env, env_params = envs.make(config.env, **dict(config.env_kwargs))
    if envs.is_discrete(env, env_params):
        raise ConfigError(f"ImplicitValueConfig.env = {config.env!r} has discrete actions; these agents need continuous")
    return wrappers.RescaleAction(env), env_params


def check_data(config: ImplicitValueConfig, data: offline.Transitions, obs_shape, action_dim: int) -> None:
    """``DatasetError``-style checks on the device transitions, naming the field."""
    if not isinstance(data, offline.Transitions):
        raise ConfigError(f"data: expected rljax.core.offline.Transitions, got {type(data).__name__}")
    n = data.obs.shape[0]
    expected = {"obs": (n,) + tuple(obs_shape), "action": (n, action_dim), "reward": (n,),
                "next_obs": (n,) + tuple(obs_shape), "terminated": (n,)}
    for name, shape in expected.items():
        got = tuple(getattr(data, name).shape)
        if got != shape:
            raise ConfigError(f"data.{name}: expected shape {shape} for {config.env}, got {got}")
    require(n > 0, "data: holds no transitions")


def make_train(config: ImplicitValueConfig, data: offline.Transitions) -> Trainer:
    """``data``: ``offline.from_dataset(dataset, raw_env, env_params)`` of ``config.env``."""
    env, env_params = make_env(config)
    obs_shape, action_dim = envs.observation_shape(env, env_params), envs.action_dim(env, env_params)
    check_data(config, data, obs_shape, action_dim)
    nets = make_networks(config, obs_shape, action_dim)

    def init(key: jax.Array, hp: ImplicitValueHParams) -> ImplicitValueState:
        check_hparams(config, hp)
        learner_key, key = jax.random.split(key)
        return ImplicitValueState(learner=init_learner(config, nets, learner_key, hp), key=key, hparams=hp)

    def update(state: ImplicitValueState):
        key, sample_key = jax.random.split(state.key)
        batch = offline.sample(data, sample_key, config.batch_size)
        learner, metrics = learner_step(config, nets, state.learner, state.hparams, batch)
        return state.replace(learner=learner, key=key), metrics

    def evaluate(state: ImplicitValueState, key: jax.Array) -> dict[str, jax.Array]:
        def act(obs, k):
            return mean_action(nets, state.learner.actor_params, obs)

        out = episode_returns(env, env_params, act, key, config.eval_episodes)
        return {**out, "peak_abs_v": state.learner.peak_abs_v, "peak_abs_q": state.learner.peak_abs_q}

    return Trainer(config=config, init=init, update=update, evaluate=evaluate,
                   num_updates=config.num_updates, env_steps_per_update=1)  # offline: counts gradient steps
