"""Learned Policy Gradient (Oh et al., NeurIPS 2020) and temporally-aware LPG (Jackson et al., ICLR 2024).

The agent has a policy pi_theta(a|s) and a prediction vector y_theta(s), a
softmax over m bins whose meaning nobody fixes: a meta-network eta decides what
y should predict and how the policy should move. Over a rollout of T steps in
each env the meta-network runs a GRU BACKWARD in time (t = T-1 .. 0), so the
output at step t can depend on everything that follows it in the rollout:

    x_t = [r_t, d_t, gamma, pi(a_t|s_t), e(y(s_t)), e(y(s_{t+1}))]          (LPG)
    x_t = [ ...the same..., n / N, log N]                                   (TA-LPG)
    (h_t, o_t) = GRU_eta(h_{t+1}, x_t);  pi_hat_t = w . relu(o_t);  y_hat_t = softmax(W relu(o_t))

where e is a small shared embedding of the m-vector, d_t = 1 when the episode
terminated at t, n the number of agent updates done so far and N the number the
lifetime has. The agent ascends (eq. 2)

    Delta theta  propto  E[ grad log pi(a_t|s_t) pi_hat_t - alpha_y grad KL(y(s_t) || y_hat_t) ]

with pi_hat and y_hat held fixed (``rljax.losses.policy_gradient.learned_policy_gradient_loss``),
one Adam step per rollout (an A2C-like agent). The meta-parameters eta live in
the hparams pytree (``LPGHParams.meta``), so ``rljax.core.es.meta_train`` evolves
a population of them as one vmapped call; ``lifetime_fitness`` is the fitness,
the mean evaluation return at the end of a lifetime.

Choices the paper leaves open (the groove code's, EmptyJackson/groove models/lpg.py):
the recurrent state is reset where an episode ended, so targets of one episode
never see the next; e is Dense(embedding_hidden) -> ReLU -> Dense(embedding_dim).
Where the code and the paper differ we follow the paper: the TA features are
n / N and log N (groove feeds the raw step and the raw lifetime); the policy
term is ascended (groove minimises +log pi * pi_hat, the same up to the sign of
the learned pi_hat). d_t is termination only (we bootstrap through
truncations), while the recurrent reset happens at any episode end.

    config = LPGConfig(temporal=True)
    hp = LPGHParams(meta=init_meta(key, config))
    state, metrics = jax.jit(make_train(config))(key, hp)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs
from envs import wrappers
from rljax.core import rollout as rollout_lib
from rljax.core.config import ConfigError, require, require_positive
from rljax.core.evaluation import episode_returns
from rljax.core.networks import MLP
from rljax.core.trainer import Trainer
from rljax.losses.policy_gradient import learned_policy_gradient_loss

NUM_BASE_SCALARS = 4  # r, d, gamma, pi(a|s)
NUM_TEMPORAL_SCALARS = 2  # n / N, log N


@dataclasses.dataclass(frozen=True)
class LPGConfig:
    """Static settings: the env, the A2C-like agent and the meta-network's shape.

    The paper's meta-network has a 256-unit recurrent core; the default here is
    small enough to meta-train on a CPU.
    """

    env: str = "gymnax/CartPole-v1"
    num_envs: int = 16
    num_steps: int = 20  # rollout length T
    num_updates: int = 100  # lifetime N (the longest one, when lifetimes are sampled)
    num_bins: int = 8  # m, the size of y
    hidden_sizes: tuple[int, ...] = (64, 64)  # agent's policy and prediction MLPs
    activation: str = "tanh"
    gru_hidden: int = 32
    embedding_hidden: int = 16
    embedding_dim: int = 1  # e: m-vector -> embedding_dim features
    temporal: bool = False  # TA-LPG: feed n / N and log N to the meta-network
    eval_episodes: int = 8
    deterministic_eval: bool = True  # evaluate the mode of the policy

    def __post_init__(self):
        require_positive(self, "num_envs", "num_steps", "num_updates", "num_bins", "gru_hidden",
                         "embedding_hidden", "embedding_dim", "eval_episodes")
        require(self.num_bins >= 2, f"LPGConfig.num_bins: expected at least 2 bins, got {self.num_bins}")
        require(all(h > 0 for h in self.hidden_sizes),
                f"LPGConfig.hidden_sizes: expected positive widths, got {self.hidden_sizes}")
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    @property
    def num_scalars(self) -> int:
        """Per-step scalar inputs of the meta-network (the embeddings come on top)."""
        return NUM_BASE_SCALARS + (NUM_TEMPORAL_SCALARS if self.temporal else 0)

    def with_horizon(self, num_updates: int) -> LPGConfig:
        """The same agent and meta-network with a lifetime of ``num_updates`` updates."""
        return dataclasses.replace(self, num_updates=num_updates)


@struct.dataclass
class LPGHParams:
    """Dynamic hyperparameters and the meta-parameters eta (``meta``): a pytree, so it vmaps.

    ``lifetime``: this run's N (a scalar, may be traced); None means ``config.num_updates``.
    With a shorter lifetime the trainer still runs ``config.num_updates`` updates but
    discards every update from the N-th on, so lifetimes can vary inside one vmapped call.
    """

    learning_rate: float = 1e-3
    gamma: float = 0.99
    alpha_y: float = 0.5
    meta: Any = None
    lifetime: Any = None


class Agent(nn.Module):
    """``obs [..., obs_dim] -> (policy logits [..., A], prediction logits [..., m])``; two MLPs."""

    action_dim: int
    num_bins: int
    hidden_sizes: tuple[int, ...]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs):
        obs = obs.reshape(obs.shape[:-1] + (-1,)) if obs.ndim > 1 else obs
        logits = MLP(self.hidden_sizes, self.action_dim, self.activation, out_scale=0.01, name="policy")(obs)
        y_logits = MLP(self.hidden_sizes, self.num_bins, self.activation, out_scale=0.01, name="prediction")(obs)
        return logits, y_logits


class MetaNetwork(nn.Module):
    """The LPG meta-network: embedding e, a backward GRU, and the pi_hat / y_hat heads.

    ``__call__(scalars [T, B, k], y [T, B, m], y_next [T, B, m], reset [T, B])
    -> (pi_hat [T, B], y_hat [T, B, m])``. ``reset[t]``: the episode ended at t, so the
    recurrent state coming back from t + 1 is zeroed before step t is processed.
    """

    num_bins: int
    gru_hidden: int
    embedding_hidden: int
    embedding_dim: int

    @nn.compact
    def __call__(self, scalars, y, y_next, reset):
        hidden = nn.Dense(self.embedding_hidden, name="embedding_hidden")
        last = nn.Dense(self.embedding_dim, name="embedding_out")

        def embed(v):  # e, shared by y(s_t) and y(s_{t+1})
            return last(nn.relu(hidden(v)))

        x = jnp.concatenate([scalars, embed(y), embed(y_next)], axis=-1)

        def step(cell, carry, inputs):
            x_t, reset_t = inputs
            carry = jnp.where(reset_t[:, None], jnp.zeros_like(carry), carry)
            return cell(carry, x_t)

        backward = nn.scan(step, variable_broadcast="params", split_rngs={"params": False}, reverse=True)
        carry = jnp.zeros(x.shape[1:-1] + (self.gru_hidden,), x.dtype)
        _, out = backward(nn.GRUCell(self.gru_hidden, name="gru"), carry, (x, reset))
        out = nn.relu(out)
        pi_hat = nn.Dense(1, name="pi_hat")(out)[..., 0]
        y_hat = jax.nn.softmax(nn.Dense(self.num_bins, name="y_hat")(out), axis=-1)
        return pi_hat, y_hat


def meta_network(config: LPGConfig) -> MetaNetwork:
    """LPG's backward-GRU meta-network for ``config`` (``num_bins`` prediction bins)."""
    return MetaNetwork(config.num_bins, config.gru_hidden, config.embedding_hidden, config.embedding_dim)


def init_meta(key: jax.Array, config: LPGConfig) -> Any:
    """Random meta-parameters eta (Flax's default init), the ES's starting mean."""
    m = config.num_bins
    return meta_network(config).init(
        key, jnp.zeros((1, 1, config.num_scalars)), jnp.full((1, 1, m), 1.0 / m), jnp.full((1, 1, m), 1.0 / m),
        jnp.zeros((1, 1), bool),
    )


def step_scalars(config: LPGConfig, reward, terminated, gamma, action_prob, update_step=None, lifetime=None):
    """The scalar part of x_t, ``[T, B, num_scalars]``: [r, d, gamma, pi(a|s)] (+ [n / N, log N]).

    ``reward, terminated, action_prob [T, B]``; ``gamma``, ``update_step`` (n) and ``lifetime`` (N)
    scalars. TA-LPG (``config.temporal``) needs n and N; plain LPG ignores them.
    """
    if reward.ndim != 2 or reward.shape != terminated.shape or reward.shape != action_prob.shape:
        raise ValueError(
            f"step_scalars: reward, terminated and action_prob must share one shape [T, B]; got "
            f"{reward.shape}, {terminated.shape}, {action_prob.shape}"
        )
    columns = [reward, terminated.astype(reward.dtype), jnp.broadcast_to(gamma, reward.shape), action_prob]
    if config.temporal:
        if update_step is None or lifetime is None:
            raise ValueError("step_scalars: LPGConfig.temporal = True needs update_step (n) and lifetime (N)")
        lifetime = jnp.asarray(lifetime, reward.dtype)
        columns += [jnp.broadcast_to(update_step / lifetime, reward.shape),
                    jnp.broadcast_to(jnp.log(lifetime), reward.shape)]
    return jnp.stack(columns, axis=-1).astype(reward.dtype)


def meta_outputs(config: LPGConfig, meta_params, reward, terminated, truncated, gamma, action_prob, y, y_next,
                 update_step=None, lifetime=None):
    """The meta-network's targets for one rollout: ``(pi_hat [T, B], y_hat [T, B, m])``.

    ``reward, terminated, truncated, action_prob [T, B]`` (time-major, as ``rollout`` gives them);
    ``y, y_next [T, B, m]``: the agent's predictions (probabilities) at s_t and s_{t+1};
    ``gamma`` a scalar; ``update_step`` n and ``lifetime`` N for TA-LPG. Pure: no gradient
    to the agent is intended through any input (the trainer passes stop-gradient values).
    """
    m = config.num_bins
    if y.shape != reward.shape + (m,) or y_next.shape != y.shape:
        raise ValueError(
            f"meta_outputs: y and y_next must have shape {reward.shape + (m,)} (reward's [T, B] + num_bins); "
            f"got {y.shape} and {y_next.shape}"
        )
    scalars = step_scalars(config, reward, terminated, gamma, action_prob, update_step, lifetime)
    return meta_network(config).apply(meta_params, scalars, y, y_next, terminated | truncated)


@struct.dataclass
class LPGState:
    """One agent's lifetime state, one pytree: its policy/prediction params and Adam state, the ``num_envs``
    env carry, and the hparams, which carry the meta-network's params (``LPGHParams.meta``)."""

    params: Any
    opt_state: Any
    env: rollout_lib.EnvCarry
    key: jax.Array
    update_step: jax.Array  # n: updates applied so far (frozen once n reaches the lifetime)
    hparams: LPGHParams


def make_env(config: LPGConfig, *, training: bool = True):
    """The env (images flattened), with episode statistics for training; LPG's policy is categorical."""
    env, env_params = envs.make(config.env)
    if not envs.is_discrete(env, env_params):
        raise ConfigError(f"LPGConfig.env = {config.env!r}: expected discrete actions (LPG's policy is "
                          f"categorical), got the action space {env.action_space(env_params)}")
    if envs.reward_shape(env) != ():
        raise ConfigError(f"LPGConfig.env = {config.env!r}: expected scalar rewards, got shape "
                          f"{envs.reward_shape(env)}")
    env = wrappers.flatten_images(env, env_params)
    return (wrappers.EpisodeStatistics(env) if training else env), env_params


def make_train(config: LPGConfig) -> Trainer:
    """LPG's trainer: one rollout of ``num_steps`` x ``num_envs``, then one Adam step, per update."""
    env, env_params = make_env(config)
    eval_env, _ = make_env(config, training=False)
    agent = Agent(envs.action_dim(env, env_params), config.num_bins, config.hidden_sizes, config.activation)

    def optimizer(hp: LPGHParams) -> optax.GradientTransformation:
        return optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(hp.learning_rate))

    def lifetime_of(hp: LPGHParams):
        return config.num_updates if hp.lifetime is None else hp.lifetime

    def init(key: jax.Array, hp: LPGHParams) -> LPGState:
        if hp.meta is None:
            raise ValueError("LPG init: LPGHParams.meta is None; pass meta-parameters, e.g. init_meta(key, config)")
        net_key, env_key, key = jax.random.split(key, 3)
        params = agent.init(net_key, jnp.zeros((1,) + envs.observation_shape(env, env_params)))
        return LPGState(
            params=params, opt_state=optimizer(hp).init(params),
            env=rollout_lib.reset(env, env_params, env_key, config.num_envs),
            key=key, update_step=jnp.zeros((), jnp.int32), hparams=hp,
        )

    def update(state: LPGState):
        hp = state.hparams
        key, rollout_key = jax.random.split(state.key)

        def policy(obs, k):
            logits, _ = agent.apply(state.params, obs)
            return distrax.Categorical(logits=logits).sample(seed=k), {}

        env_carry, traj = rollout_lib.rollout(env, env_params, policy, state.env, rollout_key, config.num_steps)

        # The meta-network's targets, from the agent as it acted (constants for the agent's update).
        logits, y_logits = agent.apply(state.params, traj.obs)
        _, y_next_logits = agent.apply(state.params, traj.next_obs)
        action_prob = jnp.exp(distrax.Categorical(logits=logits).log_prob(traj.action))
        lifetime = lifetime_of(hp)
        pi_hat, y_hat = jax.lax.stop_gradient(meta_outputs(
            config, hp.meta, traj.reward, traj.terminated, traj.truncated, hp.gamma, action_prob,
            jax.nn.softmax(y_logits), jax.nn.softmax(y_next_logits), state.update_step, lifetime,
        ))

        def loss_fn(params):
            logits, y_logits = agent.apply(params, traj.obs)
            pi = distrax.Categorical(logits=logits)
            loss, aux = learned_policy_gradient_loss(pi.log_prob(traj.action), y_logits, pi_hat, y_hat, hp.alpha_y)
            return loss, {**aux, "entropy": pi.entropy().mean()}

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer(hp).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # Updates past the end of this lifetime are discarded (lifetimes shorter than num_updates).
        live = state.update_step < lifetime
        params, opt_state = jax.tree.map(lambda new, old: jnp.where(live, new, old),
                                         (params, opt_state), (state.params, state.opt_state))

        metrics = {"loss": loss, **aux, "pi_hat_std": pi_hat.std(), **wrappers.episode_metrics(traj.info)}
        new_state = LPGState(params=params, opt_state=opt_state, env=env_carry, key=key,
                             update_step=state.update_step + live.astype(jnp.int32), hparams=hp)
        return new_state, metrics

    def evaluate(state: LPGState, key: jax.Array) -> dict[str, jax.Array]:
        def act(obs, k):
            pi = distrax.Categorical(logits=agent.apply(state.params, obs)[0])
            return pi.mode() if config.deterministic_eval else pi.sample(seed=k)

        return episode_returns(eval_env, env_params, act, key, config.eval_episodes)

    return Trainer(
        config=config, init=init, update=update, evaluate=evaluate,
        num_updates=config.num_updates, env_steps_per_update=config.num_envs * config.num_steps,
    )


def sample_lifetime(key: jax.Array, min_updates: int, max_updates: int) -> jax.Array:
    """N ~ log-uniform over [min_updates, max_updates], rounded to an integer (as a float scalar)."""
    log_n = jax.random.uniform(key, minval=jnp.log(min_updates), maxval=jnp.log(max_updates))
    return jnp.clip(jnp.round(jnp.exp(log_n)), min_updates, max_updates)


def lifetime_fitness(config: LPGConfig, min_updates: int | None = None):
    """``fitness(meta_params, key, hparams=None) -> scalar``: train an agent with these
    meta-parameters for its lifetime, then the mean return of ``config.eval_episodes``
    evaluation episodes (the ES maximises it).

    The lifetime is ``config.num_updates``; with ``min_updates`` it is drawn per task from
    ``key`` log-uniformly in [min_updates, config.num_updates] (the paper: 10..250), so
    the two members of an antithetic pair that share a task key share the lifetime.
    """
    if min_updates is not None and not 1 <= min_updates <= config.num_updates:
        raise ConfigError(f"lifetime_fitness: min_updates: expected 1 <= min_updates <= LPGConfig.num_updates = "
                          f"{config.num_updates}, got {min_updates}")
    trainer = make_train(config)

    def fitness(meta_params, key, hparams: LPGHParams | None = None):
        hp = (LPGHParams() if hparams is None else hparams).replace(meta=meta_params)
        lifetime_key, train_key, eval_key = jax.random.split(key, 3)
        if min_updates is not None:
            hp = hp.replace(lifetime=sample_lifetime(lifetime_key, min_updates, config.num_updates))
        state, _ = trainer(train_key, hp)
        return trainer.evaluate(state, eval_key)["return"].mean()

    return fitness
