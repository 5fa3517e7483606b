"""ODICE: V-DICE with the orthogonal-gradient update (Mao, Xu, Zhang, Zhan; ICLR 2024).

Offline RL from a dataset ``D`` of transitions ``(s, a, r, s')``. The value network
minimises the V-DICE objective (the paper's semi-dual with the initial-state term
replaced by the dataset's states, weight ``1 - lambda``):

    L(V) = (1 - lambda) E_D[V(s)] + lambda E_D[f*_p(delta)],   delta = r + gamma V(s') - V(s)

with ``f*_p`` the conjugate over non-negative ratios (chi2: ``delta + delta^2/4`` for
``delta >= -2``, else -1; ``rljax.losses.dice.conjugate_nonnegative``). Its gradient in
the value parameters ``theta`` splits into

    grad_V = (1 - lambda) E[grad V(s)]
    grad_F = lambda E[f*_p'(delta) * (-grad V(s))]          the forward gradient (current state)
    grad_B = lambda E[f*_p'(delta) * gamma grad V(s')]      the backward gradient (next state)

and ``update_rule`` picks the direction the optimiser follows:

    "semi"        grad_V + grad_F                                              (semi-gradient)
    "true"        grad_V + grad_F + grad_B                                     (true gradient)
    "orthogonal"  grad_V + grad_F + eta (grad_B - <grad_B, grad_F>/|grad_F|^2 grad_F)

the projection taken once per batch on the flattened vector of all value parameters
(both heads together), as in the paper's definition and the official code.

**How the split is computed.** ``grad_F`` is the gradient of ``lambda E[f*_p(delta_F)]``
with ``delta_F = r + gamma Vbar(s') - V(s)``: ``V(s')`` enters only through the
(stop-gradient) target network ``Vbar``, so autodiff reaches ``theta`` only through
``-V(s)``. ``grad_B`` is the gradient of ``lambda E[f*_p(delta_B)]`` with
``delta_B = r + gamma V(s') - Vbar(s)``: only through ``gamma V(s')``. ``Vbar`` is an EMA
of ``theta`` with step ``tau`` (the official code's ``vf_target``, 0.005), and with twin
heads it is the min over the target's heads (as in the code). With ``tau = 1`` and one
head, ``Vbar = V`` at every step, ``delta_F = delta_B = delta``, and ``grad_F + grad_B`` is
exactly the autodiff gradient of ``lambda E[f*_p(delta)]`` (pinned by a test): the
paper's split of the true gradient. "semi" and "orthogonal" use these two residuals
(the official code's ``semi_g_update`` and ``orthogonal_true_g_update``). "true" is the
paper's true gradient as the code's ``true_g_update`` takes it: the autodiff gradient
of ``L(V)`` with one residual ``delta = r + gamma V(s') - V(s)``, the online ``V`` on
both sides (each head its own) and no target; its policy weight reads that residual.

**Policy extraction.** Weighted behaviour cloning ``-E_D[w log pi(a|s)]`` with the
paper's optimal density ratio ``w = (f')^{-1}(delta_F)`` clipped at ``[0, max_weight]``:
for chi2 ``max(0, delta_F / 2 + 1)`` (``rljax.losses.dice.optimal_ratio``). The official
code uses ``max(0, delta_F)`` instead (``policy_weight="code"`` selects it). With twin
heads the weight is the mean of the heads' weights (the code's mean over a ``[2, B]``
weight array). Gaussian policy with a state-independent log standard deviation, no tanh
(the code's ``GaussianPolicy``), Adam with L2 weight decay (PyTorch ``Adam(weight_decay)``);
evaluation runs the mean action clipped to [-1, 1].

Deviations from the official code (maoliyuan/ODICE-Pytorch @8d544c7; digest section 5):

* policy weight: the paper's ``max(0, delta/2 + 1)``, not the code's ``max(0, delta)``;
* "true" carries no ``eta`` (the paper's true gradient; the code's ``true_g`` has none either);
* ``project_orthogonal`` guards ``|grad_F|^2`` with 1e-12 (the code: 1e-10);
* ``divergence="kl"`` is ``f(x) = x log x`` (``f*_p = exp(delta - 1)``, weight ``exp(delta - 1)``),
  which is what the code's branch named ``"Reverse_KL"`` computes;
* network sizes and step counts are set by the caller (the code: 2x256 + LayerNorm twin V,
  2x1024 policy, batch 256, lr 2e-4, 1M steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import envs
from envs import wrappers
from rljax.core import offline
from rljax.core.config import (DISCOUNT, FRACTION, NON_NEGATIVE, OPEN_UNIT, POSITIVE, ConfigError, require,
                                require_in_ranges, require_one_of, require_positive)
from rljax.core.dataset import Dataset
from rljax.core.evaluation import episode_returns
from rljax.core.trainer import Trainer
from rljax.losses import dice

UPDATE_RULES = ("semi", "true", "orthogonal")
POLICY_WEIGHTS = ("paper", "code")
DIVERGENCES = ("chi2", "kl")  # f*_p finite everywhere and (f')^{-1} defined: what V-DICE needs


@dataclasses.dataclass(frozen=True)
class ODICEConfig:
    """Static settings. Defaults: the official code's value network (twin 2x256 V with LayerNorm) and
    batch 256; the policy is 2x256 (the code's is 2x1024)."""

    env: str = "toy/pointmass"
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    update_rule: str = "orthogonal"
    divergence: str = "chi2"
    policy_weight: str = "paper"  # "paper": (f')^{-1}(delta) = max(0, delta/2 + 1); "code": max(0, delta)
    num_updates: int = 100  # host-loop updates
    steps_per_update: int = 100  # gradient steps in each update (metrics are their means)
    batch_size: int = 256
    value_hidden_sizes: tuple[int, ...] = (256, 256)
    policy_hidden_sizes: tuple[int, ...] = (256, 256)
    num_v: int = 2  # twin V heads (the code's use_twin_v)
    layer_norm: bool = True  # LayerNorm after each hidden layer of V (the code's MuJoCo setting)
    eval_episodes: int = 16
    # A second, out-of-distribution evaluation (empty: none): ``envs.make`` keyword arguments that
    # update ``env_kwargs`` for it, e.g. (("start_perturbation", 0.4),) on toy/pointmass or
    # (("reset_noise_scale", 0.05),) on a brax env; evaluate() then also returns "return_ood".
    ood_env_kwargs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        require_one_of(self, "update_rule", UPDATE_RULES)
        require_one_of(self, "divergence", DIVERGENCES)
        require_one_of(self, "policy_weight", POLICY_WEIGHTS)
        require(self.policy_weight == "paper" or self.divergence == "chi2",
                f"ODICEConfig.policy_weight = 'code' is the official code's chi2 weight max(0, delta); "
                f"divergence is {self.divergence!r}")
        require_positive(self, "num_updates", "steps_per_update", "batch_size", "num_v", "eval_episodes")
        for name in ("value_hidden_sizes", "policy_hidden_sizes"):
            sizes = tuple(getattr(self, name))
            require(all(isinstance(s, (int, np.integer)) and s > 0 for s in sizes),
                    f"ODICEConfig.{name}: expected positive layer widths, got {sizes!r}")
            object.__setattr__(self, name, sizes)
        object.__setattr__(self, "env_kwargs", tuple(tuple(kv) for kv in self.env_kwargs))
        object.__setattr__(self, "ood_env_kwargs", tuple(tuple(kv) for kv in self.ood_env_kwargs))

    @property
    def gradient_steps(self) -> int:
        return self.num_updates * self.steps_per_update


@struct.dataclass
class ODICEHParams:
    """Dynamic hyperparameters (vmappable). Defaults: the official code's offline-RL settings."""

    lam: float = 0.6  # lambda: weight of E[f*(delta)] against (1 - lambda) E[V(s)]
    eta: float = 1.0  # weight of the projected backward gradient ("orthogonal" only)
    gamma: float = 0.99
    value_lr: float = 2e-4
    policy_lr: float = 2e-4
    policy_weight_decay: float = 1e-4
    tau: float = 0.005  # EMA step of the target V (1: the target is the online V)
    max_weight: float = 100.0  # clip of the BC weight (the code's EXP_ADV_MAX)


_HPARAM_RANGES = {
    "lam": OPEN_UNIT,
    "eta": NON_NEGATIVE,
    "gamma": DISCOUNT,
    "value_lr": POSITIVE,
    "policy_lr": POSITIVE,
    "policy_weight_decay": NON_NEGATIVE,
    "tau": FRACTION,
    "max_weight": POSITIVE,
}


def check_hparams(hp: ODICEHParams) -> None:
    """``ConfigError`` naming the field unless every hyperparameter (scalars or per-run arrays) is in range."""
    require_in_ranges(hp, _HPARAM_RANGES)


# ---------------------------------------------------------------- networks


class ValueMLP(nn.Module):
    """ReLU MLP ``obs -> V(s)`` with optional LayerNorm after each hidden layer (the code's ``mlp``)."""

    hidden_sizes: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, x):
        for size in self.hidden_sizes:
            x = nn.Dense(size)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.relu(x)
        return nn.Dense(1)(x)[..., 0]


class VEnsemble(nn.Module):
    """``num`` independent value heads: ``obs [..., d] -> [num, ...]``."""

    num: int = 2
    hidden_sizes: Sequence[int] = (256, 256)
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs):
        heads = nn.vmap(ValueMLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                        axis_size=self.num)
        return heads(self.hidden_sizes, self.layer_norm, name="v")(obs)


class GaussianPolicy(nn.Module):
    """``obs -> N(mean(obs), diag(exp(log_std)))``, a state-independent log std clipped to [-5, 2] (the code's)."""

    action_dim: int
    hidden_sizes: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs):
        x = obs
        for size in self.hidden_sizes:
            x = nn.relu(nn.Dense(size)(x))
        mean = nn.Dense(self.action_dim)(x)
        log_std = jnp.clip(self.param("log_std", nn.initializers.zeros, (self.action_dim,)), -5.0, 2.0)
        return distrax.MultivariateNormalDiag(mean, jnp.broadcast_to(jnp.exp(log_std), mean.shape))


# ---------------------------------------------------------------- the V-DICE loss and its gradients


def vdice_loss(v, next_v, reward, not_done, lam, gamma, divergence: str = "chi2"):
    """The V-DICE objective ``(1 - lambda) E[V(s)] + lambda E[f*_p(r + gamma V(s') - V(s))]`` (a scalar).

    ``v``, ``next_v``: ``[..., B]`` (leading axes: value heads, averaged like the batch);
    ``reward``, ``not_done``: ``[B]``. Differentiating it gives the true gradient.
    """
    delta = reward + gamma * not_done * next_v - v
    return (1.0 - lam) * v.mean() + lam * dice.conjugate_nonnegative(divergence, delta).mean()


def policy_weight(delta, divergence: str = "chi2", kind: str = "paper", max_weight=100.0):
    """The weighted-BC weight of a residual, clipped to ``[0, max_weight]``, stop-gradient.

    ``kind="paper"``: the optimal ratio ``max(0, (f')^{-1}(delta))`` (chi2: ``max(0, delta/2 + 1)``);
    ``kind="code"``: the official code's chi2 weight ``max(0, delta)``.
    """
    if kind == "paper":
        w = dice.optimal_ratio(divergence, delta)
    elif kind == "code":
        w = jnp.maximum(delta, 0.0)
    else:
        raise ConfigError(f"policy_weight: expected one of {POLICY_WEIGHTS}, got {kind!r}")
    return jax.lax.stop_gradient(jnp.clip(w, 0.0, max_weight))


class ValueBatch(struct.PyTreeNode):
    """The fields :func:`value_gradients` reads, for a batch without actions: ``obs``, ``next_obs`` ``[B, d]``,
    ``reward`` ``[B]``, ``terminated`` ``[B]`` bool. ``offline.Transitions`` has them too."""

    obs: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array


def value_gradients(v_fn: Callable[[Any, jax.Array], jax.Array], params: Any, target_params: Any, batch,
                    lam, gamma, eta, update_rule: str, divergence: str = "chi2"):
    """The update direction of one batch under ``update_rule`` and its parts.

    ``v_fn(params, obs [B, d]) -> [num_heads, B]``. Returns ``(direction, parts, aux)``:
    ``parts`` holds the pytrees ``value`` (grad of ``(1 - lambda) E[V(s)]``), ``forward``,
    ``backward`` and ``backward_orthogonal`` (``backward`` minus its projection on
    ``forward``); ``aux`` the residual the policy weight reads, ``delta_policy``
    ``[num_heads, B]`` (the forward one; for "true" its single residual), and scalars for
    logging (loss, cos(forward, backward), gradient norms).
    """
    if update_rule not in UPDATE_RULES:
        raise ConfigError(f"update_rule: expected one of {UPDATE_RULES}, got {update_rule!r}")
    not_done = 1.0 - batch.terminated.astype(jnp.float32)
    # Target values: min over the target's heads, no gradient.
    target_v = jax.lax.stop_gradient(v_fn(target_params, batch.obs).min(axis=0))
    target_next_v = jax.lax.stop_gradient(v_fn(target_params, batch.next_obs).min(axis=0))

    def losses(p):
        v, next_v = v_fn(p, batch.obs), v_fn(p, batch.next_obs)
        delta_f = batch.reward + gamma * not_done * target_next_v - v  # reaches theta through -V(s) only
        delta_b = batch.reward + gamma * not_done * next_v - target_v  # reaches theta through gamma V(s') only
        delta = batch.reward + gamma * not_done * next_v - v  # the true gradient's: online V on both sides
        terms = [(1.0 - lam) * v.mean(), lam * dice.conjugate_nonnegative(divergence, delta_f).mean(),
                 lam * dice.conjugate_nonnegative(divergence, delta_b).mean()]
        if update_rule == "true":
            terms.append(lam * dice.conjugate_nonnegative(divergence, delta).mean())
        return jnp.stack(terms), (v, delta_f, delta_b, delta)

    jac, (v, delta_f, delta_b, delta) = jax.jacrev(losses, has_aux=True)(params)
    loss_values, _ = losses(params)
    grads = [jax.tree.map(lambda x, i=i: x[i], jac) for i in range(len(loss_values))]
    grad_value, grad_f, grad_b = grads[:3]
    grad_b_orth = dice.project_orthogonal(grad_b, grad_f)
    if update_rule == "semi":
        direction = jax.tree.map(jnp.add, grad_value, grad_f)
    elif update_rule == "true":
        direction = jax.tree.map(jnp.add, grad_value, grads[3])
    else:
        direction = jax.tree.map(lambda a, b, c: a + b + eta * c, grad_value, grad_f, grad_b_orth)

    norm = lambda t: jnp.sqrt(dice.tree_dot(t, t))  # noqa: E731
    aux = {
        "delta_policy": delta if update_rule == "true" else delta_f,  # the residual the policy weight reads
        "loss": loss_values[0] + loss_values[-1 if update_rule == "true" else 1],  # V-DICE at the step's residual
        "v_mean": v.mean(),
        "delta_mean": delta_f.mean(), "delta_min": delta_f.min(), "delta_max": delta_f.max(),
        "delta_backward_mean": delta_b.mean(),
        "cos_forward_backward": dice.cosine_similarity(grad_f, grad_b),
        "grad_forward_norm": norm(grad_f), "grad_backward_norm": norm(grad_b),
        "grad_backward_orthogonal_norm": norm(grad_b_orth), "grad_norm": norm(direction),
    }
    parts = {"value": grad_value, "forward": grad_f, "backward": grad_b, "backward_orthogonal": grad_b_orth}
    return direction, parts, aux


# ---------------------------------------------------------------- the agent


@struct.dataclass
class ODICEState:
    """The whole ODICE training state, one pytree: V ensemble (and its EMA target), Gaussian policy, their Adam
    states, the dataset as ``offline.Transitions`` (actions in [-1, 1]), and ``step`` (gradient steps, scalar)."""

    v_params: Any
    target_v_params: Any
    policy_params: Any
    v_opt: Any
    policy_opt: Any
    data: offline.Transitions
    key: jax.Array
    step: jax.Array
    hparams: ODICEHParams


def make_env(config: ODICEConfig):
    """The raw env (for dataset checks) and the learner's view of it (actions in [-1, 1])."""
    env, env_params = envs.make(config.env, **dict(config.env_kwargs))
    if envs.is_discrete(env, env_params):
        raise ConfigError(f"ODICEConfig.env = {config.env!r} has discrete actions; this ODICE has a Gaussian policy")
    if envs.reward_shape(env) != ():
        raise ConfigError(f"ODICEConfig.env = {config.env!r} has vector rewards; ODICE needs a scalar reward")
    return env, wrappers.RescaleAction(env), env_params


def make_ood_env(config: ODICEConfig, env, env_params):
    """The learner's view of the out-of-distribution evaluation env (``config.env`` made with
    ``env_kwargs`` updated by ``ood_env_kwargs``) and its params, or ``(None, None)`` without them.
    Its observations and actions must match those of the training env ``env`` (checked)."""
    if not config.ood_env_kwargs:
        return None, None
    kwargs = dict(config.env_kwargs) | dict(config.ood_env_kwargs)
    try:
        ood_env, ood_params = envs.make(config.env, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"ODICEConfig.ood_env_kwargs: {dict(config.ood_env_kwargs)} are not arguments of "
                          f"{config.env!r} ({e})") from e
    for what, get in (("observation shape", envs.observation_shape), ("action dim", envs.action_dim)):
        expected, actual = get(env, env_params), get(ood_env, ood_params)
        require(expected == actual, f"ODICEConfig.ood_env_kwargs: the {what} changes from {expected} to {actual}")
    return wrappers.RescaleAction(ood_env), ood_params


def _optimizers(hp: ODICEHParams):
    # PyTorch Adam(weight_decay=wd) adds wd * params to the gradient before Adam (L2, not AdamW).
    return optax.adam(hp.value_lr), optax.chain(optax.add_decayed_weights(hp.policy_weight_decay),
                                                optax.adam(hp.policy_lr))


def make_train(config: ODICEConfig, data: Dataset) -> Trainer:
    """``data``: a ``rljax.core.dataset.Dataset`` recorded on ``config.env`` (checked; errors name the field)."""
    raw_env, env, env_params = make_env(config)
    transitions = offline.from_dataset(data, raw_env, env_params, name="dataset")
    ood_env, ood_params = make_ood_env(config, raw_env, env_params)
    obs_shape, action_dim = envs.observation_shape(env, env_params), envs.action_dim(env, env_params)
    value_net = VEnsemble(config.num_v, config.value_hidden_sizes, config.layer_norm)
    policy_net = GaussianPolicy(action_dim, config.policy_hidden_sizes)
    v_fn = value_net.apply

    def init(key: jax.Array, hp: ODICEHParams) -> ODICEState:
        v_key, pi_key, key = jax.random.split(key, 3)
        obs = jnp.zeros((1,) + obs_shape)
        v_params, policy_params = value_net.init(v_key, obs), policy_net.init(pi_key, obs)
        v_tx, pi_tx = _optimizers(hp)
        return ODICEState(
            v_params=v_params, target_v_params=v_params, policy_params=policy_params,
            v_opt=v_tx.init(v_params), policy_opt=pi_tx.init(policy_params), data=transitions,
            key=key, step=jnp.zeros((), jnp.int32), hparams=hp,
        )

    def gradient_step(state: ODICEState, key: jax.Array):
        hp = state.hparams
        v_tx, pi_tx = _optimizers(hp)
        batch = offline.sample(state.data, key, config.batch_size)

        # 1. Value: the update rule's direction, one Adam step, then the EMA target.
        direction, _, aux = value_gradients(v_fn, state.v_params, state.target_v_params, batch, hp.lam, hp.gamma,
                                            hp.eta, config.update_rule, config.divergence)
        updates, v_opt = v_tx.update(direction, state.v_opt, state.v_params)
        v_params = optax.apply_updates(state.v_params, updates)
        target_v_params = optax.incremental_update(v_params, state.target_v_params, hp.tau)

        # 2. Policy: weighted BC with the value step's residual (before the step, as in the code).
        weight = policy_weight(aux.pop("delta_policy"), config.divergence, config.policy_weight,
                               hp.max_weight).mean(axis=0)  # mean over heads

        def policy_loss(p):
            log_prob = policy_net.apply(p, batch.obs).log_prob(batch.action)
            return dice.weighted_bc_loss(log_prob, weight), -log_prob.mean()

        (pi_loss, nll), grads = jax.value_and_grad(policy_loss, has_aux=True)(state.policy_params)
        updates, policy_opt = pi_tx.update(grads, state.policy_opt, state.policy_params)
        policy_params = optax.apply_updates(state.policy_params, updates)

        metrics = {**aux, "cos_negative": (aux["cos_forward_backward"] < 0).astype(jnp.float32),
                   "policy_loss": pi_loss, "bc_nll": nll, "weight_mean": weight.mean(), "weight_max": weight.max(),
                   "weight_zero_fraction": (weight == 0).mean()}
        state = state.replace(v_params=v_params, target_v_params=target_v_params, policy_params=policy_params,
                              v_opt=v_opt, policy_opt=policy_opt, step=state.step + 1)
        return state, metrics

    def update(state: ODICEState):
        key, steps_key = jax.random.split(state.key)
        state, metrics = jax.lax.scan(gradient_step, state.replace(key=key),
                                      jax.random.split(steps_key, config.steps_per_update))
        # Means over the update's gradient steps; cos_negative is the fraction of batches with cos < 0.
        out = {name: value.mean() for name, value in metrics.items()}
        out["cos_forward_backward_min"] = metrics["cos_forward_backward"].min()
        out["cos_forward_backward_max"] = metrics["cos_forward_backward"].max()
        return state, out

    def act(state: ODICEState):
        def policy(obs, key):
            return jnp.clip(policy_net.apply(state.policy_params, obs).mean(), -1.0, 1.0)

        return policy

    def evaluate(state: ODICEState, key: jax.Array) -> dict[str, jax.Array]:
        """The mean action from the env's own starts (the dataset's start distribution when the data was
        collected from it) and, with ``ood_env_kwargs``, from the changed starts as well."""
        in_key, ood_key = jax.random.split(key)
        out = episode_returns(env, env_params, act(state), in_key, config.eval_episodes)
        if ood_env is not None:
            ood = episode_returns(ood_env, ood_params, act(state), ood_key, config.eval_episodes)
            out |= {"return_ood": ood["return"], "length_ood": ood["length"]}
        return out

    return Trainer(config=config, init=init, update=update, evaluate=evaluate,
                   num_updates=config.num_updates,
                   env_steps_per_update=config.steps_per_update)  # offline: counts gradient steps


def value_function(config: ODICEConfig, v_params: Any, obs: jax.Array) -> jax.Array:
    """The learned ``V(obs)`` (min over the heads, as the code's ``TwinV.forward``): ``[...]``."""
    return VEnsemble(config.num_v, config.value_hidden_sizes, config.layer_norm).apply(v_params, obs).min(axis=0)
