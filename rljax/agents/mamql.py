"""MAMQL: Multi-Agent Marginal Q-Learning from Demonstrations (Haynam et al. 2025, arXiv 2503.04679).

Offline multi-agent IRL from joint demonstrations of a general-sum game. Every method's
critic (or BC's logit function) is one of (``MAMQLConfig.critic``):

* ``"tabular"``: one free parameter per (joint state, action), i.e. a linear critic on
  one-hot joint-state features. It cannot generalise: unvisited states keep their
  initial values.
* ``"mlp"``: per agent, an MLP (``rljax.core.networks.MLP``) of that agent's observation
  of the joint state, as in the paper (neural critics on observations). The observations
  of every joint state are precomputed once as ``features [N, S, F]``
  (``observation_features(env)``), so ``critic_tables`` turns either critic into the same
  ``[N, S, A]`` table and the exact tabular evaluation below serves both.

The methods:

* ``method="mamql"``: each agent i has a *marginal* critic ``Qbar_i(s, a_i)``, the other
  agents being part of its environment, and the Boltzmann policy
  ``pi_i(a_i|s) ∝ exp(lam * Qbar_i(s, a_i))`` with ``V_i(s) = logsumexp(lam * Qbar_i(s)) / lam``.
  Because an optimal marginal critic is the single-agent soft Q of the MDP induced by the
  others' policies, each critic is trained with the single-agent IQ-Learn chi-squared
  objective on agent i's own action (``rljax.losses.imitation.iq_learn_loss``, offline:
  value term and regulariser over expert transitions), and agent i's reward is the
  soft-Bellman residual ``r_i(s, a_i) = Qbar_i(s, a_i) - gamma E[V_i(s')]``.
* ``method="joint_iq"`` (baseline): single-agent IQ-Learn on JOINT actions per agent,
  ``Q_i(s, a_1, ..., a_N)``, as if agent i controlled everyone; agent i acts with the
  marginal of the joint Boltzmann policy ``∝ exp(lam * Q_i)``.
* ``method="bc"`` (baseline): per-agent behaviour cloning of ``pi_i(a_i|s)`` (softmax of a
  logit table), ``rljax.losses.imitation.bc_loss``; its implied reward is ``log pi_i / lam``.

What we could verify of the paper (abstract and summaries; the full text was not
available to us): marginal critics, the generalized Boltzmann policy with ``lam``, an
IQ-Learn-style objective with a concave regulariser, rewards from the critics by a
"constrained regression", offline or online training. We implement the chi-squared
IQ-Learn objective as written in IQ-Learn (Garg et al. 2021). We did not find what the
paper's constrained regression is; we report the soft-Bellman residual itself (the
reward the critic implies), which any regression onto it would target.

    config = MAMQLConfig(num_agents=2, num_states=S, num_actions=5, critic="mlp")
    features = observation_features(env)                                     # [N, S, F]
    trainer = make_train(config, demos, features)
    state, metrics = jax.jit(trainer)(key, MAMQLHParams(learning_rate=1e-3))
    tables = critic_tables(config, state.params, features)                   # [N, S, A]
    policies = policy_table(config, tables, state.hparams)                   # [N, S, A]

(``features`` is only for ``critic="mlp"``; a tabular critic's params are its tables.)
``demos`` may be a traced value, so ``jax.vmap(lambda k, d: make_train(c, d, f)(k, hp))``
trains one seed per demonstration set in one compiled call.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rljax.core import tabular
from rljax.core.config import ConfigError, require, require_one_of, require_positive
from rljax.core.networks import ACTIVATIONS, MLP
from rljax.core.trainer import Trainer
from rljax.losses.imitation import REGULARIZE_ON, VALUE_TERMS, bc_loss, iq_learn_loss

METHODS = ("mamql", "joint_iq", "bc")
CRITICS = ("tabular", "mlp")
MLP_OUT_SCALE = 0.01  # orthogonal init scale of the MLP's output layer: near-zero initial critics, like init_scale


@struct.dataclass
class Demonstrations:
    """Joint transitions, padded: ``B`` rows, only ``valid`` ones are data.

    ``state``, ``next_state``: ``[B]`` int32 joint-state indices (tabular view);
    ``actions``: ``[B, N]`` int32; ``terminated``: ``[B]`` bool (no bootstrap: the game
    ended; a time-limit truncation is *not* terminated); ``valid``: ``[B]`` bool.
    """

    state: jax.Array
    actions: jax.Array
    next_state: jax.Array
    terminated: jax.Array
    valid: jax.Array


@dataclasses.dataclass(frozen=True)
class MAMQLConfig:
    """Static settings of tabular-game MAMQL (Haynam et al. 2025) and its baselines: game sizes ``N``, ``S``,
    ``A``, ``method`` (``"mamql"``, ``"joint_iq"``, ``"bc"``), critic kind and IQ-Learn's offline loss terms."""

    num_agents: int = 2
    num_states: int = 5000
    num_actions: int = 5
    method: str = "mamql"
    critic: str = "tabular"  # "tabular" (one parameter per state and action) or "mlp" (of observation features)
    hidden_sizes: tuple[int, ...] = (64, 64)  # mlp only
    activation: str = "relu"  # mlp only
    num_updates: int = 2000  # full-batch Adam steps over the demonstrations
    value_term: str = "expert"  # IQ-Learn's offline value term (see iq_learn_loss)
    regularize_on: str = "expert"

    def __post_init__(self):
        require_positive(self, "num_agents", "num_states", "num_actions", "num_updates")
        require_one_of(self, "method", METHODS)
        require_one_of(self, "critic", CRITICS)
        require(len(self.hidden_sizes) > 0 and all(int(h) > 0 for h in self.hidden_sizes),
                f"MAMQLConfig.hidden_sizes: expected one or more positive widths, got {self.hidden_sizes!r}")
        require_one_of(self, "activation", ACTIVATIONS)
        require(self.value_term in VALUE_TERMS and self.value_term != "v0",
                f"MAMQLConfig.value_term: expected 'expert' or 'all' (offline data has no separate initial states), "
                f"got {self.value_term!r}")
        require_one_of(self, "regularize_on", REGULARIZE_ON)
        joint = self.num_states * self.num_actions**self.num_agents
        require(self.method != "joint_iq" or joint <= 50_000_000,
                f"MAMQLConfig: a joint critic needs num_states * num_actions^num_agents = {joint} entries per agent")


@struct.dataclass
class MAMQLHParams:
    """Dynamic hyperparameters (vmappable): Adam rate, ``gamma``, Boltzmann rationality ``lam``, IQ-Learn's
    ``alpha``, BC's entropy bonus and the tabular critic's init scale."""

    learning_rate: float = 0.05  # suits the tabular critic; an MLP critic wants about 1e-3
    gamma: float = 0.9
    lam: float = 10.0  # Boltzmann rationality: pi ∝ exp(lam * Q)
    alpha: float = 0.5  # chi-squared regulariser E[r^2] / (4 alpha), IQ-Learn's default
    bc_entropy_coef: float = 1e-3  # `imitation`'s BC default; BC only
    init_scale: float = 0.01  # tabular only: std of the initial table entries (seeds differ in it)


@struct.dataclass
class MAMQLState:
    """The whole training state, one pytree: critic params (tables or stacked MLPs, see below), Adam state,
    ``step`` (full-batch Adam steps done, scalar) and the hparams. The demonstrations are closed over."""

    # tabular: the tables (mamql: Qbar [N, S, A]; joint_iq: Q [N, S, A, ..., A]; bc: logits [N, S, A]);
    # mlp: Flax params of the N agents' networks, stacked on a leading axis N.
    params: Any
    opt_state: Any
    step: jax.Array
    hparams: MAMQLHParams


def table_shape(config: MAMQLConfig) -> tuple[int, ...]:
    """Shape of the critic tables ``[N, S, A]`` (``[N, S, A, ..., A]``, one action axis per agent, for joint_iq)."""
    return (config.num_agents, config.num_states) + _action_shape(config)


def _action_shape(config: MAMQLConfig) -> tuple[int, ...]:
    return (config.num_actions,) * (config.num_agents if config.method == "joint_iq" else 1)


def observation_features(env) -> jax.Array:
    """Every agent's observation of every joint state: ``[N, S, F]`` float32.

    ``env`` needs ``agents``, ``num_states``, ``state_from_index`` and ``get_obs`` (e.g.
    ``envs.multiagent.gems.Gems``, whose observation does not depend on the clock).
    """
    def one(index):
        obs = env.get_obs(env.state_from_index(index))
        return jnp.stack([obs[agent] for agent in env.agents])  # [N, F]

    features = jax.vmap(one)(jnp.arange(env.num_states))  # [S, N, F]
    return jnp.swapaxes(features, 0, 1).astype(jnp.float32)


def check_features(config: MAMQLConfig, features) -> None:
    """``features`` must be ``[N, S, F]`` floats for ``critic="mlp"`` and absent for ``critic="tabular"``."""
    if config.critic == "tabular":
        if features is not None:
            raise ConfigError("features: a tabular critic takes no observation features (they are only for "
                              f"MAMQLConfig.critic='mlp'), got an array of shape {jnp.shape(features)}")
        return
    if features is None:
        raise ConfigError(f"features: MAMQLConfig.critic='mlp' needs observation features [num_agents="
                          f"{config.num_agents}, num_states={config.num_states}, F] (see observation_features), got None")
    shape = jnp.shape(features)
    if len(shape) != 3 or shape[:2] != (config.num_agents, config.num_states) or shape[2] < 1:
        raise ConfigError(f"features: expected shape [num_agents={config.num_agents}, num_states={config.num_states}, F]"
                          f", got {shape}")
    if not jnp.issubdtype(features.dtype, jnp.floating):
        raise ConfigError(f"features: expected floats, got dtype {features.dtype}")


def _network(config: MAMQLConfig) -> MLP:
    """One agent's MLP: ``[..., F] -> [..., A]`` (``[..., A^N]`` for joint_iq)."""
    out = 1
    for size in _action_shape(config):
        out *= size
    return MLP(tuple(int(h) for h in config.hidden_sizes), out, config.activation, out_scale=MLP_OUT_SCALE)


def init_params(config: MAMQLConfig, key: jax.Array, hp: MAMQLHParams, features=None):
    """Initial critic parameters: a tabular ``[N, S, A...]`` array, or N stacked MLPs' params."""
    if config.critic == "tabular":
        return hp.init_scale * jax.random.normal(key, table_shape(config))
    net = _network(config)
    dummy = jnp.zeros((features.shape[-1],), jnp.float32)
    return jax.vmap(lambda k: net.init(k, dummy))(jax.random.split(key, config.num_agents))


def critic_rows(config: MAMQLConfig, params, agent: int, states: jax.Array, features=None) -> jax.Array:
    """Agent ``agent``'s critic (BC: logit) values at joint states ``states [B]``: ``[B, A]`` or ``[B, A, ..., A]``."""
    if config.critic == "tabular":
        return params[agent][states]
    own = jax.tree.map(lambda x: x[agent], params)
    if states.size > config.num_states:  # more rows than states: evaluate every state once, then gather
        out = _network(config).apply(own, features[agent])[states]
    else:
        out = _network(config).apply(own, features[agent][states])  # [B, A] or [B, A^N]
    return out.reshape(states.shape + _action_shape(config))


def critic_tables(config: MAMQLConfig, params, features=None) -> jax.Array:
    """Every agent's critic (BC: logits) at every joint state: ``table_shape(config)``.

    Tabular: ``params`` themselves. MLP: each agent's network applied to its
    observation features ``[N, S, F]`` of every joint state.
    """
    check_features(config, features)
    if config.critic == "tabular":
        _check_tables(config, params, "critic_tables")
        return params
    out = jax.vmap(_network(config).apply)(params, features)  # [N, S, A] or [N, S, A^N]
    return out.reshape(table_shape(config))


def _check_tables(config: MAMQLConfig, tables, where: str) -> None:
    got = tuple(tables.shape) if hasattr(tables, "shape") else type(tables).__name__
    if got != table_shape(config):
        raise ConfigError(f"{where}: expected tables of shape {table_shape(config)} [N, S, A...] "
                          f"(for critic='mlp', call critic_tables(config, params, features) first), got {got}")


def check_demonstrations(config: MAMQLConfig, demos: Demonstrations) -> None:
    """Shapes and dtypes of ``demos`` against ``config``; a ConfigError names the field."""
    rows = demos.state.shape
    expected = {"state": rows, "next_state": rows, "terminated": rows, "valid": rows,
                "actions": rows + (config.num_agents,)}
    for name, shape in expected.items():
        got = getattr(demos, name).shape
        if got != shape or len(rows) != 1:
            raise ConfigError(f"Demonstrations.{name}: expected shape {shape} (rows [B], actions [B, num_agents="
                              f"{config.num_agents}]), got {got}")
    for name in ("state", "next_state", "actions"):
        if not jnp.issubdtype(getattr(demos, name).dtype, jnp.integer):
            raise ConfigError(f"Demonstrations.{name}: expected integer indices, got dtype {getattr(demos, name).dtype}")


def policy_table(config: MAMQLConfig, tables: jax.Array, hp: MAMQLHParams) -> jax.Array:
    """Each agent's policy ``[N, S, A]`` from ``critic_tables`` (joint_iq: the marginal of its joint Boltzmann policy)."""
    _check_tables(config, tables, "policy_table")
    if config.method == "bc":
        return jax.nn.softmax(tables, axis=-1)
    if config.method == "mamql":
        return tabular.boltzmann(tables, hp.lam)
    n, s = config.num_agents, config.num_states
    joint = jax.nn.softmax(hp.lam * tables.reshape(n, s, -1), axis=-1).reshape(tables.shape)
    return jnp.stack([joint[i].sum(axis=tuple(1 + j for j in range(n) if j != i)) for i in range(n)])


def recovered_rewards(config: MAMQLConfig, tables: jax.Array, hp: MAMQLHParams, next_state: jax.Array,
                      terminal: jax.Array, reference_policies: jax.Array) -> jax.Array:
    """Each agent's recovered reward as a function of (s, a_i): ``[N, S, A]``, from ``critic_tables``.

    Agent i's reward is read in the MDP it faced: the others acting with
    ``reference_policies`` (``[N, S, A]``; the experts' in our experiment). ``next_state``
    ``[S, A, ..., A]`` and ``terminal`` ``[S]`` are the game's (``tabular.TabularGame``).

    * mamql: ``Qbar_i(s, a_i) - gamma E_{a_-i, s'}[V_i(s')]``, the soft-Bellman residual;
    * joint_iq: ``E_{a_-i}[Q_i(s, a) - gamma V_i(s')]``, its joint residual averaged over the others;
    * bc: ``log pi_i(a_i|s) / lam``, which under the Boltzmann model equals the reward up to
      potential shaping (``Phi = V``).
    """
    _check_tables(config, tables, "recovered_rewards")
    n = config.num_agents
    if config.method == "bc":
        return jax.nn.log_softmax(tables, axis=-1) / hp.lam
    if config.method == "mamql":
        values = tabular.soft_value(tables, hp.lam, terminal[None])  # [N, S]
        out = []
        for i in range(n):
            next_idx, probs, _ = tabular.induced_mdp(next_state, jnp.zeros((n,) + next_state.shape), reference_policies, i)
            out.append(tables[i] - hp.gamma * (probs * values[i][next_idx]).sum(-1))
        return jnp.stack(out)
    flat = tables.reshape(n, config.num_states, -1)
    values = jnp.where(terminal[None], 0.0, jax.nn.logsumexp(hp.lam * flat, axis=-1) / hp.lam)
    residual = tables - hp.gamma * values[:, next_state]  # [N, S, A, ..., A]
    return jnp.stack([tabular.marginalize(residual[i], reference_policies, i) for i in range(n)])


def _agent_loss(config: MAMQLConfig, params, agent: int, demos: Demonstrations, hp: MAMQLHParams, features=None):
    """Loss of agent ``agent``'s critic (``params`` of all agents; only its own part gets a gradient)."""
    own = demos.actions[:, agent]
    num_rows = demos.state.shape[0]
    if config.method == "bc":
        logits = critic_rows(config, params, agent, demos.state, features)  # [B, A]
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        log_prob = jnp.take_along_axis(log_probs, own[:, None], axis=1)[:, 0]
        entropy = -(jnp.exp(log_probs) * log_probs).sum(-1)
        w = demos.valid.astype(log_prob.dtype)
        # bc_loss takes plain means; rescale so padding rows count for nothing.
        scale = w.shape[0] / jnp.maximum(w.sum(), 1.0)
        return bc_loss(log_prob * w * scale, entropy * w * scale, hp.bc_entropy_coef)
    # Critic values at s and s' in one pass: [2B, A] (mamql) or [2B, A, ..., A] (joint_iq), flattened to [2B, K].
    both = critic_rows(config, params, agent, jnp.concatenate([demos.state, demos.next_state]), features)
    both = both.reshape(2 * num_rows, -1)
    if config.method == "mamql":
        index = own
    else:  # joint_iq: index with the whole joint action
        index = jnp.zeros_like(own)
        for j in range(config.num_agents):
            index = index * config.num_actions + demos.actions[:, j]
    here, there = both[:num_rows], both[num_rows:]
    q = jnp.take_along_axis(here, index[:, None], axis=1)[:, 0]
    v = jax.nn.logsumexp(hp.lam * here, axis=-1) / hp.lam
    next_v = jax.nn.logsumexp(hp.lam * there, axis=-1) / hp.lam
    return iq_learn_loss(q, v, next_v, demos.terminated, demos.valid, gamma=hp.gamma, alpha=hp.alpha,
                         value_term=config.value_term, regularize_on=config.regularize_on)


def make_train(config: MAMQLConfig, demos: Demonstrations, features: jax.Array | None = None,
               eval_fn: Callable[[jax.Array], dict[str, jax.Array]] | None = None) -> Trainer:
    """A :class:`Trainer` fitting ``config.method`` to ``demos`` (full-batch Adam, ``num_updates`` steps).

    ``features [N, S, F]``: observation features of every joint state, for
    ``critic="mlp"`` only (``observation_features``). ``eval_fn(policies [N, S, A]) -> dict``
    adds metrics to ``evaluate``; ``evaluate`` always reports the demonstrations'
    per-agent negative log-likelihood.
    """
    check_demonstrations(config, demos)
    check_features(config, features)
    optimizer = lambda hp: optax.adam(hp.learning_rate)  # noqa: E731

    def loss_fn(params, hp):
        losses, auxes = [], []
        for i in range(config.num_agents):
            loss, aux = _agent_loss(config, params, i, demos, hp, features)
            losses.append(loss)
            auxes.append(aux)
        metrics = {f"{k}/agent_{i}": v for i, aux in enumerate(auxes) for k, v in aux.items()}
        return sum(losses), metrics  # agents' parameters are disjoint: the sum trains each on its own loss

    def init(key: jax.Array, hp: MAMQLHParams) -> MAMQLState:
        params = init_params(config, key, hp, features)
        return MAMQLState(params=params, opt_state=optimizer(hp).init(params), step=jnp.zeros((), jnp.int32), hparams=hp)

    def update(state: MAMQLState):
        hp = state.hparams
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, hp)
        updates, opt_state = optimizer(hp).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(params=params, opt_state=opt_state, step=state.step + 1), {"loss": loss, **metrics}

    def evaluate(state: MAMQLState, key: jax.Array) -> dict[str, jax.Array]:
        policies = policy_table(config, critic_tables(config, state.params, features), state.hparams)
        out = {"demo_nll": demonstration_nll(policies, demos)}
        if eval_fn is not None:
            out.update(eval_fn(policies))
        return out

    return Trainer(config=config, init=init, update=update, evaluate=evaluate, num_updates=config.num_updates,
                   env_steps_per_update=0)


def demonstration_nll(policies: jax.Array, demos: Demonstrations) -> jax.Array:
    """``[N]``: mean ``-log pi_i(a_i|s)`` over the valid demonstration rows."""
    logp = jnp.log(jnp.maximum(policies[jnp.arange(policies.shape[0])[None, :], demos.state[:, None], demos.actions],
                               1e-30))  # [B, N]
    w = demos.valid.astype(logp.dtype)[:, None]
    return -(logp * w).sum(0) / jnp.maximum(w.sum(), 1.0)


def collect_demonstrations(env, env_params, policies: jax.Array, key: jax.Array, num_episodes: int,
                           max_steps: int | None = None) -> Demonstrations:
    """Roll out ``num_episodes`` episodes of the tabular joint policy ``policies [N, S, A]`` in ``env``.

    ``env`` is a multi-agent env with ``state_index`` (e.g. ``envs.multiagent.gems.Gems``);
    each agent samples its own action independently. Episodes are stepped with
    ``step_env`` (no auto-reset) and cut at their first ``done``; rows after it are
    padding (``valid = False``). Returns ``Demonstrations`` with ``num_episodes * max_steps`` rows.
    """
    max_steps = int(max_steps or env.max_episode_steps(env_params))
    require(num_episodes > 0 and max_steps > 0,
            f"collect_demonstrations: num_episodes and max_steps must be positive, got {num_episodes}, {max_steps}")
    agents = env.agents

    def episode(k):
        reset_key, k = jax.random.split(k)
        _, state = env.reset(reset_key, env_params)

        def step(carry, k):
            state, alive = carry
            act_key, step_key = jax.random.split(k)
            s = env.state_index(state)
            logits = jnp.log(jnp.maximum(policies[:, s], 1e-30))  # [N, A]
            actions = jax.random.categorical(act_key, logits, axis=-1)  # [N]
            _, next_state, _, dones, info = env.step_env(step_key, state, {a: actions[i] for i, a in enumerate(agents)},
                                                         env_params)
            row = (s, actions, env.state_index(next_state), info["terminated"], alive)
            return (next_state, alive & ~dones["__all__"]), row

        _, rows = jax.lax.scan(step, (state, jnp.ones((), bool)), jax.random.split(k, max_steps))
        return rows

    s, a, ns, term, valid = jax.vmap(episode)(jax.random.split(key, num_episodes))
    flat = lambda x: x.reshape((num_episodes * max_steps,) + x.shape[2:])  # noqa: E731
    return Demonstrations(state=flat(s).astype(jnp.int32), actions=flat(a).astype(jnp.int32),
                          next_state=flat(ns).astype(jnp.int32), terminated=flat(term), valid=flat(valid))
