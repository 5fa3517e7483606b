"""C-MORL: Pareto-front discovery by constrained policy optimisation (Liu et al., ICLR 2025).

Stage 1 (initialisation): M MOPPO policies on evenly spaced preferences, trained
in ONE vmapped call (``rljax.agents.moppo``). Every final policy enters the
archive with its estimated vector return G(pi) (deterministic evaluation).

Stage 2 (extension), repeated ``num_iterations`` times:

1. keep the non-dominated archive (at most ``archive_size`` points, one policy per
   distinct return vector);
2. pick N policies by crowding distance (the extremes of every objective have
   infinite distance and come first; return points chosen in an earlier
   iteration are excluded), ``select_by_crowding``;
3. for each chosen pi_r and each objective l solve, from pi_r's parameters,

       max_pi G_l(pi)   s.t.   G_j(pi) >= beta * G_j(pi_r)  for all j != l

   by the interior-point method: ``extension_updates`` PPO updates on

       L(theta) = L^CLIP_l(theta) + sum_{j != l} (1/t) log(G_j(theta) - beta G_j(pi_r))        (IPO)

   (``extension_loss``), all N*k problems (and all seeds) in one vmapped call;
4. every intermediate policy (after each update) enters the archive.

Deployment: for a new preference w, ``deploy`` picks argmax_{pi in archive} w . G(pi).

What is estimated how (the paper's equations, not the official code's surrogate):

* G_j(pi_old): the mean undiscounted return of the episodes that finished in the
  update's own rollout (raw reward units); if none finished, the previous
  estimate is kept (so ``num_steps`` should exceed the episode length: on DST
  128 > 100, and every env finishes an episode in every rollout).
* G_j(pi_theta) inside the barrier: the first-order importance-ratio surrogate
  used by IPO/CPO/TRPO, ``G_j(old) + E_ep * mean_t[(r_t(theta) - 1) A_j,t]`` with
  ``r_t = pi_theta / pi_old`` and ``E_ep`` = steps per finished episode (so
  ``E_ep * mean_t`` is a per-episode sum, the policy-gradient theorem's scale).
  Its value at theta_old is the rollout estimate and its gradient there is the
  policy gradient of G_j, so the barrier's gradient is
  ``(1/t) sum_j grad G_j / (G_j - beta G_j(pi_r))`` as in the paper.
* G_j(pi_r) (the constraint's right-hand side): estimated the same way from
  pi_r's own first rollout of the extension (update 0 runs pi_r itself), so the
  left and right sides of the constraint are the same estimator of the same
  stochastic policy.
* Units: the PPO-clip term uses the normalised objective-l advantage, i.e. it is
  (G_l(theta) - G_l(old)) divided by ``E_ep * std(A_l)``. The barrier is divided
  by the same positive constant, so the ratio of the two is the paper's: the
  barrier weighs 1/t against G_l in raw return units. (Dividing the whole
  interior-point objective by a positive constant leaves its maximiser unchanged.)

Signs. The constraint G_j >= beta G_j(pi_r) with beta < 1 is a relaxation only for
positive returns; for a negative return (Deep Sea Treasure's time objective) it
would be *violated by pi_r itself*. We therefore apply it to returns shifted by a
known lower bound L_j (``return_lower_bound``; for DST ``(0, -max_steps)``):
``G_j - L_j >= beta (G_j(pi_r) - L_j)``. With L = 0 this is the paper's constraint.

Feasibility. The log barrier is undefined at infeasible points. If the old
policy's estimated return violates any constraint (noise, or a problem started
outside the feasible set), the update is a phase-I recovery step: PPO-clip on the
sum of the violated objectives' advantages, no barrier, until the iterate is
feasible again. Inside a feasible update the surrogate slack can still reach 0
between minibatches; below ``barrier_eps`` the log is continued linearly
(value and slope matched at eps), so the loss stays finite and pushes back.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rljax.agents import moppo
from rljax.agents.ppo import PPOHParams
from rljax.core import rollout as rollout_lib
from rljax.core.config import ConfigError, broadcast_hparams, require, require_positive
from rljax.core.pareto import as_points, check_preference, crowding_distance, pareto_mask, simplex_grid
from rljax.losses.policy_gradient import PPOBatch, clipped_surrogate


@dataclasses.dataclass(frozen=True)
class CMORLConfig:
    """Static settings; ``moppo`` holds the PPO shapes (its total_timesteps is unused)."""

    moppo: moppo.MOPPOConfig = moppo.MOPPOConfig()
    preference_step: float = 0.2  # stage-1 preferences: simplex_grid(k, step) (0.2 -> 6 for 2 objectives)
    stage1_updates: int = 100
    num_iterations: int = 8  # stage-2 selections
    num_selected: int = 3  # N policies per selection
    extension_updates: int = 20  # PPO updates per constrained problem (the paper's 20 iterations)
    archive_size: int = 200
    # Per-objective lower bound L of the return: constraints act on G - L (see the module docstring).
    return_lower_bound: tuple[float, ...] | None = None
    barrier_eps: float = 1e-2  # slack below which the log barrier is continued linearly

    def __post_init__(self):
        require_positive(self, "preference_step", "stage1_updates", "num_iterations", "num_selected",
                         "extension_updates", "archive_size", "barrier_eps")
        if self.return_lower_bound is not None:
            object.__setattr__(self, "return_lower_bound", tuple(float(x) for x in self.return_lower_bound))

    def preferences(self, num_objectives: int) -> np.ndarray:
        return simplex_grid(num_objectives, self.preference_step)

    def stage1_env_steps(self, num_objectives: int) -> int:
        return len(self.preferences(num_objectives)) * self.stage1_updates * self.moppo.batch_size

    def stage2_env_steps(self, num_objectives: int) -> int:
        return (self.num_iterations * self.num_selected * num_objectives * self.extension_updates
                * self.moppo.batch_size)


@struct.dataclass
class CMORLHParams(PPOHParams):
    """PPO hyperparameters (stage 1 and 2) and the constrained step's beta and barrier t (paper: 0.9, 20)."""

    beta: float = 0.9
    barrier_t: float = 20.0

    def moppo(self, preference) -> moppo.MOPPOHParams:
        ppo_fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(PPOHParams)}
        return moppo.MOPPOHParams(preference=preference, **ppo_fields)


# ---------------------------------------------------------------- losses (pure)


def log_barrier(slack: jax.Array, mask: jax.Array, t, eps: float) -> jax.Array:
    """``-(1/t) sum_j mask_j log(slack_j)``, with log continued linearly below ``eps``.

    For slack >= eps this is exactly the interior-point barrier; its gradient is
    ``-(1/t) mask_j / slack_j``. Below eps, ``log(eps) + (slack - eps) / eps``.
    """
    safe = jnp.maximum(slack, eps)
    phi = jnp.where(slack >= eps, jnp.log(safe), jnp.log(eps) + (slack - eps) / eps)
    return -(mask * phi).sum() / t


def return_surrogate(ratio: jax.Array, advantage: jax.Array, g_old: jax.Array, episode_scale) -> jax.Array:
    """First-order (importance-ratio) estimate of G(pi_theta) ``[k]``: ``G_old + E_ep * mean_t[(r_t - 1) A_t]``."""
    return g_old + episode_scale * ((ratio - 1.0)[:, None] * advantage).mean(axis=0)


def extension_loss(params, apply_fn: Callable, batch: PPOBatch, hp: CMORLHParams, objective: jax.Array,
                   threshold: jax.Array, g_old: jax.Array, episode_scale, reward_scale: jax.Array,
                   barrier_eps: float, normalize_advantages: bool = True):
    """One minibatch of C-MORL's interior-point step (negated, as a loss).

    ``objective``: int, the objective l maximised; ``threshold [k]``: beta-relaxed
    constraint levels b_j in raw return units (b_l unused); ``g_old [k]``: the old
    policy's rollout-estimated returns; ``batch.advantage [B, k]`` in the critic's
    (reward_scale-d) units. Feasible (g_old_j > b_j for all j != l):
    PPO-clip(A_l) + barrier. Infeasible: phase-I recovery, PPO-clip on the sum of
    the violated objectives' advantages, no barrier.

    The PPO-clip term on ``a = A_l / c`` (c = std(A_l) when normalising, else 1)
    approximates ``(G_l(theta) - G_l(old)) * reward_scale_l / (E_ep * c)``; the barrier,
    in raw return units, is multiplied by the same factor so that it weighs 1/t
    against G_l as in the paper.
    """
    k = g_old.shape[0]
    pi, value = apply_fn(params, batch.obs)
    log_prob = pi.log_prob(batch.action)
    ratio = jnp.exp(log_prob - batch.log_prob)
    target = jax.nn.one_hot(objective, k)
    others = 1.0 - target
    violated = (g_old - threshold <= 0.0) * others
    feasible = violated.sum() == 0
    direction = jnp.where(feasible, target, violated)
    adv = batch.advantage @ direction  # critic units
    if normalize_advantages:
        adv_scale = jax.lax.stop_gradient(adv.std() + 1e-8)
        adv = (adv - adv.mean()) / adv_scale
    else:
        adv_scale = 1.0
    policy_loss, aux = clipped_surrogate(log_prob, batch.log_prob, adv, hp.clip_eps)
    g_hat = return_surrogate(ratio, batch.advantage / reward_scale, g_old, episode_scale)  # raw units
    slack = g_hat - threshold
    barrier = log_barrier(slack, others, hp.barrier_t, barrier_eps)
    factor = (target @ reward_scale) / (episode_scale * adv_scale)
    barrier_loss = jnp.where(feasible, factor * barrier, 0.0)
    value_loss = moppo.vector_value_loss(value, batch.value, batch.target, hp.clip_eps)
    entropy = pi.entropy().mean()
    total = policy_loss + barrier_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
    min_slack = jnp.where(others > 0, slack, jnp.inf).min()
    return total, {"policy_loss": policy_loss, "barrier": barrier, "value_loss": value_loss, "entropy": entropy,
                   "feasible": feasible.astype(jnp.float32), "min_slack": min_slack, **aux}


# ---------------------------------------------------------------- the constrained extension step


@struct.dataclass
class ExtensionState:
    """State of one stage-2 extension (one policy pushed toward objective ``objective``), one pytree.

    MOPPO params/optimiser, the ``num_envs`` env carry, and the ``[k]`` constraint levels and return estimates
    (undiscounted, raw units) used by the barrier. ``update_step`` counts updates done (0: ``threshold`` unset).
    """

    params: Any
    opt_state: Any
    env: rollout_lib.EnvCarry
    key: jax.Array
    update_step: jax.Array
    objective: jax.Array  # int32: l
    threshold: jax.Array  # [k] beta-relaxed constraint levels (raw units), set at update 0
    g_estimate: jax.Array  # [k] the latest rollout estimate of G(pi)
    hparams: CMORLHParams


@dataclasses.dataclass(frozen=True)
class Extension:
    """``init(key, params, objective, hp) -> state``, ``update(state) -> (state, metrics)``,
    ``run(key, params, objective, hp) -> (final state, per-update params, eval returns [U, k], metrics)``."""

    config: CMORLConfig
    comp: moppo.Components
    init: Callable
    update: Callable
    run: Callable


def lower_bound(config: CMORLConfig, num_objectives: int) -> np.ndarray:
    """``[k]``: each objective's return lower bound L (``return_lower_bound``, default 0); constraints act on G - L."""
    if config.return_lower_bound is None:
        return np.zeros(num_objectives)
    if len(config.return_lower_bound) != num_objectives:
        raise ConfigError(f"CMORLConfig.return_lower_bound: expected {num_objectives} values (one per objective), "
                          f"got {len(config.return_lower_bound)}")
    return np.asarray(config.return_lower_bound)


def make_extension(config: CMORLConfig) -> Extension:
    """Stage 2's constrained extension of one policy toward one objective (:class:`Extension`)."""
    mcfg = config.moppo
    comp = moppo.make_components(mcfg)
    k = comp.num_objectives
    lower = jnp.asarray(lower_bound(config, k), jnp.float32)
    reward_scale = jnp.asarray(comp.reward_scale, jnp.float32)
    num_updates = config.extension_updates

    def init(key, params, objective, hp: CMORLHParams) -> ExtensionState:
        env_key, key = jax.random.split(key)
        return ExtensionState(
            params=params, opt_state=moppo.make_optimizer(mcfg, hp, num_updates).init(params),
            env=rollout_lib.reset(comp.env, comp.env_params, env_key, mcfg.num_envs), key=key,
            update_step=jnp.zeros((), jnp.int32), objective=jnp.asarray(objective, jnp.int32),
            threshold=jnp.zeros((k,), jnp.float32), g_estimate=jnp.zeros((k,), jnp.float32), hparams=hp)

    def update(state: ExtensionState):
        hp = state.hparams
        key, rollout_key, epoch_key = jax.random.split(state.key, 3)
        env_carry, batch, stats = moppo.collect(comp, mcfg, state.params, state.env, rollout_key, hp)
        finished = stats["episodes"] > 0
        g_old = jnp.where(finished, stats["episode_return"], state.g_estimate)
        # Update 0 rolls out pi_r itself: its estimate sets G_j(pi_r) on the shifted scale.
        threshold = jnp.where(state.update_step == 0, lower + hp.beta * (g_old - lower), state.threshold)
        episode_scale = mcfg.batch_size / jnp.maximum(stats["episodes"], 1).astype(jnp.float32)

        def loss(p, mb):
            return extension_loss(p, comp.network.apply, mb, hp, state.objective, threshold, g_old, episode_scale,
                                  reward_scale, config.barrier_eps, mcfg.normalize_advantages)

        params, opt_state, metrics = moppo.optimize(mcfg, moppo.make_optimizer(mcfg, hp, num_updates),
                                                    state.params, state.opt_state, batch, epoch_key, loss)
        for j in range(k):
            metrics[f"episode_return_{j}"] = g_old[j]
            metrics[f"threshold_{j}"] = threshold[j]
        metrics["episodes_finished"] = stats["episodes"]
        new_state = ExtensionState(params=params, opt_state=opt_state, env=env_carry, key=key,
                                   update_step=state.update_step + 1, objective=state.objective,
                                   threshold=threshold, g_estimate=g_old, hparams=hp)
        return new_state, metrics

    def run(key, params, objective, hp: CMORLHParams):
        init_key, eval_key = jax.random.split(key)
        state = init(init_key, params, objective, hp)

        def step(s, k_eval):
            s, metrics = update(s)
            returns = moppo.evaluate_params(comp, mcfg, s.params, k_eval)["return"].mean(axis=0)
            return s, (s.params, returns, metrics)

        state, (history, returns, metrics) = jax.lax.scan(step, state, jax.random.split(eval_key, num_updates))
        return state, history, returns, metrics

    return Extension(config=config, comp=comp, init=init, update=update, run=run)


# ---------------------------------------------------------------- archive, selection, deployment (host side)


def select_by_crowding(returns, num: int, excluded=None) -> np.ndarray:
    """Indices of up to ``num`` non-dominated points of ``returns [n, k]`` by decreasing crowding distance.

    Crowding distance is computed on the non-dominated points; the extremes of each
    objective (infinite distance) come first, ties broken by index. Points with
    ``excluded[i]`` (chosen before) are skipped. Fewer than ``num`` come back when
    fewer candidates remain.
    """
    returns = np.asarray(returns, np.float64)
    excluded = np.zeros(len(returns), bool) if excluded is None else np.asarray(excluded, bool)
    front = np.flatnonzero(pareto_mask(returns))
    distance = crowding_distance(returns[front])
    order = front[np.lexsort((front, -distance))]  # by distance descending, then index
    return np.array([i for i in order if not excluded[i]][:num], dtype=np.int64)


def deploy(archive_returns, preference) -> int:
    """The archive index maximising ``w . G`` for a new preference ``w``.

    ``archive_returns`` ``[n, k]``; ``preference`` ``[k]`` on the simplex, else a ``ConfigError``
    naming it (a wrong length, a negative weight or weights not summing to 1).
    """
    returns = as_points(archive_returns, "archive_returns")
    return int(np.argmax(returns @ check_preference(preference, returns.shape[1])))


@dataclasses.dataclass
class Archive:
    """The non-dominated policies, one per distinct return vector.

    When a new policy reaches a return vector already in the archive it replaces the
    old one (the newest is kept), so repeated extensions from a point continue from
    the most-trained policy there. ``chosen`` holds the return vectors selected in
    earlier iterations (rounded to 1e-6): a point is extended once, whichever policy
    sits on it later, as the official code's ``obj_hist`` (``morl/ep.py``), so the
    extremes, whose crowding distance is infinite, do not take every iteration.
    """

    returns: np.ndarray  # [n, k]
    params: list  # n pytrees (numpy)
    chosen: set  # tuples: return vectors selected before
    size: int = 200

    @classmethod
    def empty(cls, k: int, size: int = 200) -> "Archive":
        return cls(np.zeros((0, k)), [], set(), size)

    def add(self, returns, params_list) -> None:
        """Add candidates ``returns [m, k]`` (in order) with their params; keep the non-dominated, distinct ones."""
        all_returns = np.concatenate([self.returns, np.asarray(returns, np.float64)])
        all_params = self.params + list(params_list)
        # the last occurrence of each distinct return vector (the newest policy there)
        _, last = np.unique(np.round(all_returns[::-1], 6), axis=0, return_index=True)
        last = np.sort(len(all_returns) - 1 - last)
        keep = last[pareto_mask(all_returns[last])]
        if len(keep) > self.size:  # most crowded dropped first
            keep = np.sort(keep[np.argsort(-crowding_distance(all_returns[keep]), kind="stable")[: self.size]])
        self.returns = all_returns[keep]
        self.params = [all_params[i] for i in keep]

    def select(self, num: int) -> np.ndarray:
        """Up to ``num`` archive indices by crowding distance among return vectors never chosen before (see
        ``select_by_crowding``). If every point was chosen before, the exclusion is lifted: the vmapped
        extension needs a policy to run (the official code would extend nothing)."""
        points = [tuple(np.round(r, 6)) for r in self.returns]
        excluded = np.array([p in self.chosen for p in points], bool)
        picked = select_by_crowding(self.returns, num, excluded)
        if len(picked) == 0:
            picked = select_by_crowding(self.returns, num)
        self.chosen.update(points[i] for i in picked)
        return picked


def _tree_index(tree, i):
    return jax.tree.map(lambda x: np.asarray(x[i]), tree)


def run(config: CMORLConfig, hp: CMORLHParams, key: jax.Array, num_seeds: int = 1, *, log=print,
        stage1_states=None) -> dict[str, Any]:
    """C-MORL for ``num_seeds`` seeds (vmapped). Returns per seed the final archive and the history.

    ``stage1_states``: optional ``(states, eval_returns)`` of an already-trained stage 1
    (leading axis ``seeds * M``), e.g. shared with a stage-1-only baseline.
    """
    extension = make_extension(config)
    k = extension.comp.num_objectives
    prefs = config.preferences(k)
    m = len(prefs)
    stage1_key, stage2_key = jax.random.split(key)
    if stage1_states is None:
        stage1_states = train_stage1(config, hp, stage1_key, num_seeds)
    states, eval_returns = stage1_states
    archives = []
    for s in range(num_seeds):
        archive = Archive.empty(k, config.archive_size)
        archive.add(eval_returns[s * m:(s + 1) * m], [_tree_index(states.params, s * m + i) for i in range(m)])
        archives.append(archive)
    log(f"stage 1: {m} preferences x {num_seeds} seeds, archive sizes {[len(a.returns) for a in archives]}")

    n, per_seed = config.num_selected, config.num_selected * k
    run_tasks = jax.jit(jax.vmap(extension.run, in_axes=(0, 0, 0, None)))
    history = [{"iteration": 0, "archive": [a.returns.tolist() for a in archives]}]
    for it in range(config.num_iterations):
        params_batch, objectives, sources = [], [], []
        for s, archive in enumerate(archives):
            picked = archive.select(n)
            picked = np.resize(picked, n)  # pad by cycling when fewer than N remain
            for i in picked:
                for l in range(k):
                    params_batch.append(archive.params[i])
                    objectives.append(l)
                    sources.append((s, archive.returns[i].tolist(), l))
        params_batch = jax.tree.map(lambda *xs: np.stack(xs), *params_batch)
        keys = jax.random.split(jax.random.fold_in(stage2_key, it), num_seeds * per_seed)
        _, history_params, returns, metrics = run_tasks(keys, params_batch, np.asarray(objectives, np.int32), hp)
        returns = np.asarray(returns)  # [tasks, U, k]
        for s, archive in enumerate(archives):
            for task in range(s * per_seed, (s + 1) * per_seed):
                archive.add(returns[task], [_tree_index(history_params, (task, u))
                                            for u in range(config.extension_updates)])
        feasible = float(np.asarray(metrics["feasible"]).mean())
        slack = np.asarray(metrics["min_slack"])  # [tasks, updates]: each task's smallest constraint slack
        log(f"  smallest constraint slack over the {len(slack)} tasks: {slack[:, 0].min():.2f} at the first update, "
            f"{slack[:, -1].min():.2f} at the last")
        history.append({"iteration": it + 1, "sources": sources, "archive": [a.returns.tolist() for a in archives],
                        "candidates": returns.tolist(), "feasible_fraction": feasible})
        log(f"stage 2 iteration {it + 1}/{config.num_iterations}: archive sizes {[len(a.returns) for a in archives]}, "
            f"feasible updates {feasible:.2f}")
    return {"archives": archives, "history": history, "preferences": prefs}


@dataclasses.dataclass(frozen=True)
class Stage1:
    """Stage 1's M policies per seed as ONE vmapped batch of MOPPO states (leading axis ``seeds * M``).

    Built once per config so that its programs compile once and serve stage 1 and a
    weight-sweep baseline that continues the same policies (``train`` with any number
    of updates, in chunks of ``chunk`` updates: one compile per distinct chunk length).

    * ``init(key, hp, num_seeds) -> states``: preference ``simplex_grid(k, step)[m]`` for state ``s * M + m``;
    * ``train(states, num_updates, chunk=None, log=None) -> states``: ``chunk`` updates per jitted call
      (default: all at once), ``log`` called after each chunk with a progress line;
    * ``evaluate(states, key) -> returns [seeds * M, k]``: mean deterministic return per policy.
    """

    config: CMORLConfig
    preferences: np.ndarray  # [M, k]
    init: Callable
    train: Callable
    evaluate: Callable


def make_stage1(config: CMORLConfig) -> Stage1:
    """Stage 1: the M evenly spaced preferences' MOPPO policies per seed, one vmapped batch (:class:`Stage1`)."""
    mcfg = dataclasses.replace(config.moppo, total_timesteps=config.stage1_updates * config.moppo.batch_size)
    trainer = moppo.make_train(mcfg)
    comp = moppo.make_components(mcfg)
    prefs = config.preferences(comp.num_objectives)
    m = len(prefs)

    def init(key, hp: CMORLHParams, num_seeds: int):
        preference = jnp.asarray(np.tile(prefs, (num_seeds, 1)), jnp.float32)
        keys = jax.random.split(key, num_seeds * m)
        return jax.jit(jax.vmap(trainer.init))(keys, _batched_moppo_hparams(hp, preference))

    @functools.partial(jax.jit, static_argnums=1)
    def run_chunk(states, updates: int):
        return jax.vmap(lambda st: trainer.run_updates(st, updates)[0])(states)

    def train(states, num_updates: int, chunk: int | None = None, log: Callable | None = None):
        require(num_updates >= 0, f"Stage1.train: num_updates must be >= 0, got {num_updates}")
        chunk = num_updates if chunk is None else chunk
        require(num_updates == 0 or (chunk > 0 and num_updates % chunk == 0),
                f"Stage1.train: chunk = {chunk} must be positive and divide num_updates = {num_updates}")
        for done in range(chunk, num_updates + 1, chunk) if num_updates else ():
            states = run_chunk(states, chunk)
            if log is not None:
                log(f"  {done}/{num_updates} updates of {len(states.update_step)} policies "
                    f"({done * mcfg.batch_size} env steps each)")
        return states

    @jax.jit
    def evaluate(states, key):
        keys = jax.random.split(key, states.update_step.shape[0])
        return jax.vmap(trainer.evaluate)(states, keys)["return"].mean(axis=1)

    return Stage1(config=config, preferences=prefs, init=init, train=train,
                  evaluate=lambda states, key: np.asarray(evaluate(states, key)))


def weight_sweep_updates(config: CMORLConfig, num_objectives: int) -> int:
    """Extra updates per stage-1 policy whose env steps equal stage 2's exactly: the weight-sweep baseline's
    continuation at C-MORL's budget (a ConfigError if stage 2's steps do not split evenly)."""
    m = len(config.preferences(num_objectives))
    steps, batch = config.stage2_env_steps(num_objectives), config.moppo.batch_size
    if steps % (m * batch):
        raise ConfigError(f"CMORLConfig: stage 2's {steps} env steps do not divide over {m} weight-sweep policies' "
                          f"updates of {batch} steps; change num_iterations, num_selected or extension_updates")
    return steps // (m * batch)


def run_with_weight_sweep(config: CMORLConfig, hp: CMORLHParams, key: jax.Array, num_seeds: int, *,
                          log=print) -> dict[str, Any]:
    """C-MORL and the weight-sweep baseline at equal env steps, from ONE stage 1 per seed.

    The sweep continues stage 1's M preference policies for ``weight_sweep_updates`` more updates (no
    learning-rate schedule, so one longer run per weight) with the same compiled program, in chunks.
    Returns ``stage1`` (states, eval returns [seeds*M, k]), ``weight_sweep_returns [seeds*M, k]``,
    ``cmorl`` (``run``'s dict) and ``seconds`` per phase.
    """
    programs = make_stage1(config)
    extra_updates = weight_sweep_updates(config, programs.preferences.shape[1])
    chunk = math.gcd(config.stage1_updates, extra_updates)
    stage1_key = jax.random.fold_in(key, 1)
    start = time.perf_counter()
    stage1 = train_stage1(config, hp, stage1_key, num_seeds, stage1=programs, chunk=chunk, log=log)
    t_stage1 = time.perf_counter() - start
    log(f"stage 1 done ({t_stage1:.0f} s); weight sweep: {extra_updates} more updates per policy")
    _, sweep_returns = train_stage1(config, hp, stage1_key, num_seeds, num_updates=extra_updates,
                                    initial_states=stage1[0], stage1=programs, chunk=chunk, log=log)
    t_sweep = time.perf_counter() - start - t_stage1
    out = run(config, hp, jax.random.fold_in(key, 2), num_seeds, stage1_states=stage1, log=log)
    t_cmorl = time.perf_counter() - start - t_stage1 - t_sweep
    return {"stage1": stage1, "weight_sweep_returns": sweep_returns, "cmorl": out,
            "seconds": {"stage1": t_stage1, "weight_sweep_extra": t_sweep, "cmorl_stage2": t_cmorl}}


def train_stage1(config: CMORLConfig, hp: CMORLHParams, key: jax.Array, num_seeds: int, num_updates: int | None = None,
                 initial_states=None, stage1: Stage1 | None = None, chunk: int | None = None, log=None):
    """Stage 1: M MOPPO policies per seed in one vmapped call -> (states [seeds*M], eval returns [seeds*M, k]).

    ``initial_states``: continue these states (the weight-sweep baseline at equal env
    steps); ``stage1``: reuse a ``make_stage1(config)`` (and its compiled programs).
    """
    stage1 = stage1 if stage1 is not None else make_stage1(config)
    init_key, eval_key = jax.random.split(key)
    updates = num_updates if num_updates is not None else config.stage1_updates
    states = stage1.init(init_key, hp, num_seeds) if initial_states is None else initial_states
    states = stage1.train(states, updates, chunk, log)
    return states, stage1.evaluate(states, eval_key)


def _batched_moppo_hparams(hp: CMORLHParams, preference: jax.Array) -> moppo.MOPPOHParams:
    return broadcast_hparams(hp.moppo(preference), preference.shape[0])
