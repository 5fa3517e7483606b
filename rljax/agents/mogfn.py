"""Multi-Objective GFlowNets, preference-conditional (MOGFN-PC; Jain et al., ICML 2023), on the hypergrid.

A GFlowNet conditioned on a preference ``w`` (and the reward exponent ``beta``)
samples terminal objects ``x`` with probability proportional to

    R(x | w, beta) = max(w . r(x), reward_floor) ** beta          (weighted-sum scalarisation)

where ``r(x)`` is the vector of objectives. Training follows the authors'
hypergrid script: every trajectory draws ``w ~ Dirichlet(alpha)`` (alpha = 1.5)
and ``beta`` (fixed, ``Gamma(shape, scale)`` or ``U(low, high)``), the forward policy
``P_F(. | s; w, beta)`` (an MLP over ``[one-hot position, w, enc(beta)]``) samples a
trajectory with 1% uniformly random actions, and trajectory balance
(Malkin et al., 2022) with a conditional ``log Z(w, beta)`` (a second MLP) is

    L(tau) = (log Z(w, beta) + sum_t log P_F(s_t+1 | s_t) - log R(x | w, beta) - sum_t log P_B(s_t | s_t+1))^2

with ``P_B`` uniform over a state's parents (fixed, not learned). ``method =
"reinforce"`` is the MOReinforce-style baseline of the same size: the same
policy network and sampler (on-policy, no random actions), REINFORCE on the
same reward ``R(x | w, beta)`` with the Z-network as a learned baseline ``b(w,
beta)`` (trained by squared error).

Exact checks (the script's ``compute_exact_dag_distribution``/``get_true_loss``):
``terminal_distribution`` gives the learned policy's exact terminal
distribution by dynamic programming over the DAG, ``target_distribution`` the
exact ``R / Z``, and ``exact_flows`` the tabular TB solution (state flows with
uniform ``P_B``), whose policy has zero TB loss.

    trainer = make_train(MOGFNConfig(side=16, num_updates=2000))
    state, metrics = jax.vmap(trainer)(jax.random.split(key, 3), broadcast_hparams(MOGFNHParams(), 3))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from envs.mo.hypergrid import Hypergrid
from rljax.core.config import ConfigError, require, require_one_of, require_positive
from rljax.core.networks import torch_dense
from rljax.core.pareto import check_preference, simplex_grid
from rljax.core.trainer import Trainer

METHODS = ("tb", "reinforce")
ENCODINGS = ("thermometer", "scalar")


@dataclasses.dataclass(frozen=True)
class MOGFNConfig:
    """Static settings of MOGFN-PC (Jain et al., ICML 2023) or its REINFORCE baseline on the hypergrid: grid
    size, objectives, network sizes, and how ``w`` and ``beta`` are drawn and encoded. Defaults: the authors'
    hypergrid script."""

    side: int = 16
    ndim: int = 2
    objectives: tuple[str, ...] = ("branin", "currin", "shubert")
    method: str = "tb"  # "tb": MOGFN-PC; "reinforce": the baseline
    num_updates: int = 2000
    batch_size: int = 128  # trajectories per update (the script's mbsize)
    # The authors ran the hypergrid script with ``--n_layers 4`` (n_hid 64; every version of
    # recursionpharma/gflownet gflownet/examples/run_script.sh sets layers=4; the argparse default is 3):
    hidden_sizes: tuple[int, ...] = (64, 64, 64, 64)
    z_hidden_sizes: tuple[int, ...] = (32, 32, 32, 32)  # the script's Z-MLP: n_layers layers of n_hid // 2
    dirichlet_alpha: float = 1.5  # the script's GridEnv.reset
    beta: float = 16.0  # fixed reward exponent (used when neither beta_gamma nor beta_uniform is set)
    beta_gamma: tuple[float, float] | None = None  # (shape, scale): beta ~ Gamma per trajectory; the script's (2, 1)
    beta_uniform: tuple[float, float] | None = None  # (low, high): beta ~ U per trajectory; the script's --uniform (0, 16)
    beta_encoding: str = "thermometer"  # the script's thermometer (50 bins on [0, 32]) or the raw scalar
    thermometer_bins: int = 50
    thermometer_max: float = 32.0
    reward_floor: float = 1e-3  # w . r(x) is clipped below here before the power (Branin dips to -2e-4 at a corner)
    random_action_prob: float = 0.01  # TB only (off-policy is fine for TB); REINFORCE samples on-policy

    def __post_init__(self):
        require_one_of(self, "method", METHODS)
        require_one_of(self, "beta_encoding", ENCODINGS)
        require_positive(self, "num_updates", "batch_size", "dirichlet_alpha", "beta", "reward_floor",
                         "thermometer_bins", "thermometer_max")
        require(0.0 <= self.random_action_prob < 1.0,
                f"random_action_prob: expected a probability in [0, 1), got {self.random_action_prob}")
        if self.beta_gamma is not None:
            require(len(self.beta_gamma) == 2 and min(self.beta_gamma) > 0,
                    f"beta_gamma: expected (shape, scale), both > 0, or None; got {self.beta_gamma}")
        if self.beta_uniform is not None:
            require(len(self.beta_uniform) == 2 and 0 <= self.beta_uniform[0] < self.beta_uniform[1],
                    f"beta_uniform: expected (low, high) with 0 <= low < high, or None; got {self.beta_uniform}")
            require(self.beta_gamma is None,
                    f"beta_uniform: expected None when beta_gamma is set (one beta distribution), got {self.beta_uniform}")
        if not self.objectives:
            raise ConfigError("objectives: expected at least one objective")

    @property
    def num_objectives(self) -> int:
        return len(self.objectives)

    @property
    def cond_dim(self) -> int:
        return self.num_objectives + (self.thermometer_bins if self.beta_encoding == "thermometer" else 1)


@struct.dataclass
class MOGFNHParams:
    """Dynamic hyperparameters (vmappable): Adam rates of the policy (``learning_rate``) and log Z network
    (``z_learning_rate``), and the L2 weight decay shared by both."""

    learning_rate: float = 1e-2  # policy network (Adam); the hypergrid script uses 1e-2 for both networks
    z_learning_rate: float = 1e-2
    weight_decay: float = 1e-4  # the script's Adam weight_decay (L2 added to the gradient, as torch does)


@struct.dataclass
class MOGFNState:
    """The whole training state, one pytree: policy and log Z params, Adam state, hparams, PRNG key, and
    ``step`` (updates done, scalar)."""

    params: Any  # {"policy": ..., "z": ...}
    opt_state: Any
    hparams: MOGFNHParams
    key: jax.Array
    step: jax.Array


class LeakyMLP(nn.Module):
    """The script's ``make_mlp``: Linear + LeakyReLU, a linear output, PyTorch's default initialisation."""

    hidden_sizes: Sequence[int]
    out_dim: int

    @nn.compact
    def __call__(self, x):
        for size in self.hidden_sizes:
            x = nn.leaky_relu(torch_dense(size, x.shape[-1])(x), negative_slope=0.01)
        return torch_dense(self.out_dim, x.shape[-1])(x)


def make_env(config: MOGFNConfig) -> Hypergrid:
    """The hypergrid: ``ndim`` coordinates of ``side`` cells, rewards ``objectives``."""
    return Hypergrid(config.ndim, config.side, config.objectives)


# ---------------------------------------------------------------- conditioning and reward


def encode_beta(config: MOGFNConfig, beta):
    """``[..., bins]`` thermometer (the script's ``thermometer``) or ``[..., 1]`` raw ``beta``."""
    beta = jnp.asarray(beta, jnp.float32)
    if config.beta_encoding == "scalar":
        return beta[..., None]
    bins = jnp.linspace(0.0, config.thermometer_max, config.thermometer_bins)
    gap = bins[1] - bins[0]
    return jnp.clip(beta[..., None] - bins, 0.0, gap) / gap


def condition(config: MOGFNConfig, w, beta):
    """The conditioning vector ``[w, enc(beta)]`` (concatenation, as in the script)."""
    return jnp.concatenate([jnp.asarray(w, jnp.float32), encode_beta(config, beta)], axis=-1)


def log_reward(config: MOGFNConfig, r, w, beta):
    """``log R(x | w, beta) = beta * log max(w . r(x), floor)``; ``r [..., k]``, ``w [..., k]``."""
    return beta * jnp.log(jnp.maximum((r * w).sum(-1), config.reward_floor))


def check_preferences(preferences, num_objectives: int, name: str = "preferences") -> np.ndarray:
    """``[m, k]`` preferences, each on the simplex, or a ``ConfigError`` naming the offending row."""
    p = np.asarray(preferences, dtype=np.float64)
    if p.ndim == 1:
        return check_preference(p, num_objectives, name)[None]
    if p.ndim != 2:
        raise ConfigError(f"{name}: expected [m, {num_objectives}] preferences, got shape {p.shape}")
    return np.stack([check_preference(row, num_objectives, f"{name}[{i}]") for i, row in enumerate(p)])


# ---------------------------------------------------------------- networks


def networks(config: MOGFNConfig):
    """``(env, policy, log_z network)``: forward-policy logits from ``[one-hot position, condition]``, log Z from the condition."""
    env = make_env(config)
    policy = LeakyMLP(config.hidden_sizes, env.num_actions)
    znet = LeakyMLP(config.z_hidden_sizes, 1)
    return env, policy, znet


def init_params(config: MOGFNConfig, key):
    """``{"policy": ..., "z": ...}`` for :func:`networks`."""
    env, policy, znet = networks(config)
    k1, k2 = jax.random.split(key)
    obs = jnp.zeros((1, env.ndim * env.side + config.cond_dim))
    return {"policy": policy.init(k1, obs), "z": znet.init(k2, jnp.zeros((1, config.cond_dim)))}


def policy_logits_fn(config: MOGFNConfig, params) -> Callable:
    """``logits(position [..., D], cond [..., c]) -> [..., D + 1]`` of the learned forward policy."""
    env, policy, _ = networks(config)
    return lambda position, cond: policy.apply(params["policy"], jnp.concatenate([env.observe(position), cond], -1))


def log_z(config: MOGFNConfig, params, cond):
    """``log Z(cond)``: ``cond [..., c] -> [...]``."""
    _, _, znet = networks(config)
    return znet.apply(params["z"], cond)[..., 0]


# ---------------------------------------------------------------- trajectories and the loss


def rollout(key, env: Hypergrid, logits_fn: Callable, cond, random_action_prob: float = 0.0):
    """Sample one trajectory per row of ``cond [B, c]``, padded to ``env.max_trajectory_length`` steps.

    Returns ``{"position": [B, D] terminal x, "log_pf": [B] sum log P_F (the policy's, not the
    epsilon-mixture's), "log_pb": [B] sum log P_B (uniform over parents), "length": [B]}``.
    """
    batch = cond.shape[0]

    def step(carry, key):
        position, done, log_pf, log_pb, length = carry
        k_pol, k_rand, k_mix = jax.random.split(key, 3)
        logp = jax.nn.log_softmax(logits_fn(position, cond), axis=-1)
        action = jax.random.categorical(k_pol, logp)
        if random_action_prob > 0:
            random = jax.random.randint(k_rand, (batch,), 0, env.num_actions)
            action = jnp.where(jax.random.uniform(k_mix, (batch,)) < random_action_prob, random, action)
        nxt, terminal = env.transition(position, action)
        num_parents = env.num_parents(nxt, action == env.stop_action)
        active = ~done
        log_pf = log_pf + jnp.where(active, jnp.take_along_axis(logp, action[:, None], 1)[:, 0], 0.0)
        log_pb = log_pb - jnp.where(active, jnp.log(num_parents.astype(jnp.float32)), 0.0)
        position = jnp.where(active[:, None], nxt, position)
        return (position, done | terminal, log_pf, log_pb, length + active), None

    init = (jnp.zeros((batch, env.ndim), jnp.int32), jnp.zeros((batch,), bool), jnp.zeros((batch,)),
            jnp.zeros((batch,)), jnp.zeros((batch,), jnp.int32))
    (position, _, log_pf, log_pb, length), _ = jax.lax.scan(
        step, init, jax.random.split(key, env.max_trajectory_length))
    return {"position": position, "log_pf": log_pf, "log_pb": log_pb, "length": length}


def trajectory_balance_loss(log_z_value, log_pf, log_reward_value, log_pb):
    """Trajectory balance (Malkin et al. 2022, eq. 14), per trajectory, conditioned on (w, beta):
    ``(log Z(w) + sum log P_F - log R(x|w) - sum log P_B)^2``, averaged. Returns ``(loss, aux)``."""
    delta = log_z_value + log_pf - log_reward_value - log_pb
    return jnp.mean(delta**2), {"tb_loss": jnp.mean(delta**2), "log_z": jnp.mean(log_z_value)}


def reinforce_loss(baseline, log_pf, reward):
    """REINFORCE with a learned baseline: ``-E[(R - b) sum log P_F] + E[(R - b)^2]`` (b trained by the second term)."""
    advantage = jax.lax.stop_gradient(reward - baseline)
    pg = -jnp.mean(advantage * log_pf)
    value = jnp.mean((reward - baseline) ** 2)
    return pg + value, {"pg_loss": pg, "baseline_loss": value}


def sample_conditions(config: MOGFNConfig, key, batch: int):
    """``w ~ Dirichlet(alpha)`` and ``beta`` (fixed, ``~ Gamma(shape, scale)`` or ``~ U(low, high)``),
    ``[B, k]`` and ``[B]``."""
    k_w, k_b = jax.random.split(key)
    w = jax.random.dirichlet(k_w, jnp.full((config.num_objectives,), config.dirichlet_alpha), (batch,))
    if config.beta_gamma is not None:
        shape, scale = config.beta_gamma
        beta = jax.random.gamma(k_b, shape, (batch,)) * scale
    elif config.beta_uniform is not None:
        low, high = config.beta_uniform
        beta = jax.random.uniform(k_b, (batch,), minval=low, maxval=high)
    else:
        beta = jnp.full((batch,), config.beta)
    return w, beta


def loss_fn(config: MOGFNConfig, params, key):
    """One batch: draw ``batch_size`` conditions (w, beta), roll out, score.

    Trajectory balance (``method="tb"``, with ``random_action_prob`` exploration) or REINFORCE on
    ``R(x | w, beta)``; returns ``(loss, aux)`` with aux a dict of scalars for logging.
    """
    env = make_env(config)
    k_cond, k_roll = jax.random.split(key)
    w, beta = sample_conditions(config, k_cond, config.batch_size)
    cond = condition(config, w, beta)
    eps = config.random_action_prob if config.method == "tb" else 0.0
    traj = rollout(k_roll, env, policy_logits_fn(config, params), cond, eps)
    r = env.objectives(traj["position"])
    logr = log_reward(config, r, w, beta)
    if config.method == "tb":
        loss, aux = trajectory_balance_loss(log_z(config, params, cond), traj["log_pf"], logr, traj["log_pb"])
    else:
        loss, aux = reinforce_loss(log_z(config, params, cond), traj["log_pf"], jnp.exp(logr))
    aux = dict(aux, loss=loss, scalarised_reward=jnp.mean((r * w).sum(-1)), log_reward=jnp.mean(logr),
               trajectory_length=jnp.mean(traj["length"].astype(jnp.float32)))
    return loss, aux


# ---------------------------------------------------------------- exact distributions (dynamic programming)


def terminal_distribution(env: Hypergrid, logits_fn: Callable, cond):
    """Exact ``P_T(x | cond)`` over ``env.terminal_states()`` for one ``cond [c]``, by forward DP over the DAG.

    Mass flows level by level (sum of coordinates): an interior state keeps
    ``P_F(stop)`` of its mass as terminal and passes ``P_F(i)`` to ``s + e_i``;
    an edge state keeps all of it.
    """
    states = jnp.asarray(env.all_states())
    probs = jax.nn.softmax(logits_fn(states, jnp.broadcast_to(cond, (states.shape[0],) + cond.shape)), -1)
    grid = (env.side,) * env.ndim
    probs = probs.reshape(grid + (env.num_actions,))
    edge = env.is_edge(states).reshape(grid)
    interior = (~edge).astype(probs.dtype)
    keep = interior * probs[..., env.stop_action] + edge.astype(probs.dtype)

    def level(_, carry):
        mass, terminal = carry
        terminal = terminal + mass * keep
        moved = sum(jnp.roll(mass * interior * probs[..., i], 1, axis=i) for i in range(env.ndim))
        return moved, terminal

    start = jnp.zeros(grid).at[(0,) * env.ndim].set(1.0)
    _, terminal = jax.lax.fori_loop(0, env.ndim * (env.side - 1) + 1, level, (start, jnp.zeros(grid)))
    return terminal.reshape(-1)[env.state_index(env.terminal_states())]


def target_distribution(config: MOGFNConfig, w, beta=None) -> np.ndarray:
    """Exact ``R(x | w, beta) / Z(w, beta)`` over ``terminal_states()`` (numpy, float64)."""
    w = check_preference(w, config.num_objectives)
    beta = config.beta if beta is None else float(beta)
    env = make_env(config)
    r = np.asarray(env.objectives(jnp.asarray(env.terminal_states())), np.float64)
    reward = np.maximum(r @ w, config.reward_floor) ** beta
    return reward / reward.sum()


def exact_flows(env: Hypergrid, reward_terminal: np.ndarray):
    """The tabular TB solution for terminal rewards ``[n]`` (order of ``terminal_states()``) and uniform ``P_B``.

    Backward DP: ``F(x) = R(x)`` for edge states; ``F(s) = R(s) + sum_i F(s + e_i) / |Pa(s + e_i)|`` for
    interior ones; then ``P_F(i | s) = F(s + e_i) P_B(s | s + e_i) / F(s)`` and ``P_F(stop | s) = R(s) / F(s)``.
    Returns ``(log Z = log F(s_0), log P_F [H^D, D + 1])`` (rows of unreachable/edge states are uniform).
    """
    states = env.all_states()
    reward = np.zeros(len(states))
    reward[np.asarray(env.state_index(env.terminal_states()))] = reward_terminal
    edge = np.asarray(env.is_edge(jnp.asarray(states)))
    index = {tuple(s): i for i, s in enumerate(states)}
    flow = np.zeros(len(states))
    log_pf = np.full((len(states), env.num_actions), -np.log(env.num_actions))
    for i in np.argsort(-states.sum(1), kind="stable"):  # children before parents
        s = states[i]
        if edge[i]:
            flow[i] = reward[i]
            continue
        children = []
        for a in range(env.ndim):
            child = s.copy()
            child[a] += 1
            j = index[tuple(child)]
            npar = int(env.num_parents(jnp.asarray(child), False))
            children.append(flow[j] / npar)
        flow[i] = reward[i] + sum(children)
        with np.errstate(divide="ignore"):
            log_pf[i] = np.log(np.array(children + [reward[i]])) - np.log(flow[i])
    return float(np.log(flow[0])), log_pf


def tabular_logits_fn(env: Hypergrid, log_pf_table) -> Callable:
    """A logits function read from a table ``[num_states, num_actions]`` (exact flows, for checks)."""
    table = jnp.asarray(log_pf_table, jnp.float32)
    return lambda position, cond: table[env.state_index(position)]


# ---------------------------------------------------------------- evaluation helpers


def learned_distributions(config: MOGFNConfig, params, preferences, beta=None):
    """``[m, n]`` exact terminal distributions of the learned policy for preferences ``[m, k]``."""
    preferences = check_preferences(preferences, config.num_objectives)
    beta = config.beta if beta is None else beta
    env = make_env(config)
    conds = condition(config, jnp.asarray(preferences, jnp.float32), jnp.full((len(preferences),), beta))
    return jax.vmap(lambda c: terminal_distribution(env, policy_logits_fn(config, params), c))(conds)


def sample_candidates(config: MOGFNConfig, params, key, preferences, num_per_preference: int, beta=None):
    """``[m, num, D]`` terminal positions sampled on-policy (no random actions) for each preference."""
    preferences = check_preferences(preferences, config.num_objectives)
    beta = config.beta if beta is None else beta
    env = make_env(config)
    w = jnp.repeat(jnp.asarray(preferences, jnp.float32), num_per_preference, axis=0)
    cond = condition(config, w, jnp.full((w.shape[0],), beta))
    traj = rollout(key, env, policy_logits_fn(config, params), cond, 0.0)
    return traj["position"].reshape(len(preferences), num_per_preference, env.ndim)


def make_train(config: MOGFNConfig, test_preferences=None, test_betas=None) -> Trainer:
    """MOGFN-PC (``method="tb"``) or the REINFORCE baseline.

    ``evaluate`` gives the exact L1 distance ``sum_x |P_T(x|w,beta) - R(x|w,beta)/Z(w,beta)|`` for every
    test condition, ``test_preferences x test_betas`` (defaults: the 66-point simplex grid, step 0.1, and
    ``(config.beta,)``; the script's ``cond_confs`` are that grid x (1, 2, 4, 8, 16)): ``"l1"`` the mean,
    ``"l1_per_condition"`` ``[num_betas, num_preferences]``.
    """
    if test_preferences is None:
        test_preferences = simplex_grid(config.num_objectives, 0.1)
    test_preferences = check_preferences(test_preferences, config.num_objectives, "test_preferences")
    test_betas = (config.beta,) if test_betas is None else tuple(float(b) for b in test_betas)
    require(len(test_betas) > 0 and min(test_betas) > 0, f"test_betas: expected positive betas, got {test_betas}")
    targets = jnp.asarray(np.stack([[target_distribution(config, w, b) for w in test_preferences]
                                    for b in test_betas]), jnp.float32)  # [num_betas, m, n]

    def optimiser(hp: MOGFNHParams):
        return optax.chain(optax.add_decayed_weights(hp.weight_decay), optax.scale_by_adam())

    def init(key, hp: MOGFNHParams) -> MOGFNState:
        k_params, key = jax.random.split(key)
        params = init_params(config, k_params)
        return MOGFNState(params=params, opt_state=optimiser(hp).init(params), hparams=hp, key=key,
                          step=jnp.zeros((), jnp.int32))

    def update(state: MOGFNState):
        key, k_loss = jax.random.split(state.key)
        grads, aux = jax.grad(lambda p: loss_fn(config, p, k_loss), has_aux=True)(state.params)
        hp = state.hparams
        updates, opt_state = optimiser(hp).update(grads, state.opt_state, state.params)
        updates = {"policy": jax.tree.map(lambda u: -hp.learning_rate * u, updates["policy"]),
                   "z": jax.tree.map(lambda u: -hp.z_learning_rate * u, updates["z"])}
        params = optax.apply_updates(state.params, updates)
        return state.replace(params=params, opt_state=opt_state, key=key, step=state.step + 1), aux

    def evaluate(state: MOGFNState, key) -> dict[str, jax.Array]:
        learned = jnp.stack([learned_distributions(config, state.params, test_preferences, b) for b in test_betas])
        l1 = jnp.abs(learned - targets).sum(-1)
        return {"l1": jnp.mean(l1), "l1_per_condition": l1}

    return Trainer(config=config, init=init, update=update, evaluate=evaluate, num_updates=config.num_updates,
                   env_steps_per_update=config.batch_size)
