"""Exact tabular tools for N-agent deterministic Markov games (every agent with A actions).

A game is given by arrays (see ``envs.multiagent.gems.TabularGame``):

    next_state [S, A, ..., A]      int, one action axis per agent (deterministic transitions)
    rewards    [N, S, A, ..., A]   agent i's reward R_i(s, a_1, ..., a_N)
    terminal   [S]                 absorbing states with zero reward and no future value
    initial    [S]                 initial-state distribution

Policies are independent per agent: ``policies [N, S, A]``, the joint policy being
their product. Everything in JAX is jit-able; ``canonicalize_shaping`` and
``weighted_pearson`` are host-side numpy/scipy metrics.

* ``marginal_soft_q_iteration``: the experts of MAMQL. Each agent plays the Boltzmann
  policy ``pi_i(a_i|s) ∝ exp(lam * Qbar_i(s, a_i))`` of its *marginal* soft Q,
  ``Qbar_i(s, a_i) = E_{a_-i ~ pi_-i}[R_i(s, a) + gamma * V_i(s')]`` with
  ``V_i = logsumexp(lam * Qbar_i) / lam``. Its fixed point is a logit quantal-response
  equilibrium (McKelvey & Palfrey 1995; Markov/"soft" form as in MAMQL). Seen from
  agent i, the other agents are part of the environment, so ``Qbar_i`` is exactly the
  single-agent soft Q of the induced MDP (``induced_mdp``); with one agent this is
  soft value iteration.
* ``optimal_q``: single-agent hard value iteration (Knox et al.'s regret preference model).
* ``policy_evaluation`` / ``state_occupancy``: exact returns and discounted
  state-visitation of a joint policy.
* ``canonicalize_shaping``: remove potential shaping exactly by weighted least squares.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rljax.core.config import ConfigError


def _others_weights(policies: jax.Array, agent: int) -> jax.Array:
    """``[S, A, ..., A]``: prod_{j != agent} pi_j(a_j|s), with a size-1 axis for ``agent``."""
    num_agents, num_states, num_actions = policies.shape
    weights = jnp.ones((num_states,) + (1,) * num_agents, policies.dtype)
    for j in range(num_agents):
        if j != agent:
            shape = [num_states] + [1] * num_agents
            shape[1 + j] = num_actions
            weights = weights * policies[j].reshape(shape)
    return weights


def marginalize(joint: jax.Array, policies: jax.Array, agent: int) -> jax.Array:
    """``E_{a_-i ~ pi_-i}[joint(s, a)]``: ``[S, A, ..., A]`` -> ``[S, A]`` (agent ``agent``'s action)."""
    num_agents = policies.shape[0]
    summed = tuple(1 + j for j in range(num_agents) if j != agent)
    return (joint * _others_weights(policies, agent)).sum(axis=summed)


def soft_value(q: jax.Array, lam, terminal: jax.Array | None = None) -> jax.Array:
    """``V(s) = logsumexp_a(lam * q(s, a)) / lam`` over the last axis; 0 at terminal states."""
    v = jax.nn.logsumexp(lam * q, axis=-1) / lam
    return v if terminal is None else jnp.where(terminal, 0.0, v)


def boltzmann(q: jax.Array, lam) -> jax.Array:
    """``pi(a|s) ∝ exp(lam * q(s, a))`` over the last axis."""
    return jax.nn.softmax(lam * q, axis=-1)


def joint_backup(next_state, rewards, terminal, values, gamma) -> jax.Array:
    """``Q_i(s, a) = R_i(s, a) + gamma * V_i(next(s, a))``: ``[N, S, A, ..., A]``. ``values``: ``[N, S]``."""
    values = jnp.where(jnp.asarray(terminal)[None], 0.0, values)
    return rewards + gamma * values[:, next_state]


class QREResult(NamedTuple):
    """Output of :func:`marginal_soft_q_iteration`: the (approximate) logit QRE of an N-agent game.

    ``values`` and ``policies`` are computed from the returned ``qbar``; ``residual`` is ``max|T(qbar) - qbar|``
    there (how far from a fixed point), ``iterations`` the damped updates run (at most ``max_iters``).
    """

    qbar: jax.Array  # [N, S, A] marginal soft Q of each agent
    values: jax.Array  # [N, S] soft values (0 at terminal states)
    policies: jax.Array  # [N, S, A] Boltzmann policies
    residual: jax.Array  # max |T(Qbar) - Qbar| at the returned Qbar (undamped operator)
    iterations: jax.Array


def marginal_soft_q_operator(qbar, next_state, rewards, terminal, gamma, lam) -> jax.Array:
    """One application of ``T``: ``Qbar_i <- E_{a_-i ~ pi_-i(Qbar)}[R_i + gamma V_i(Qbar)(s')]``."""
    policies = boltzmann(qbar, lam)
    values = soft_value(qbar, lam, terminal[None])
    joint = joint_backup(next_state, rewards, terminal, values, gamma)
    return jnp.stack([marginalize(joint[i], policies, i) for i in range(qbar.shape[0])])


def marginal_soft_q_iteration(next_state, rewards, terminal, *, gamma, lam, damping=0.0, tol=1e-6,
                              max_iters=10_000, init=None) -> QREResult:
    """Iterate ``Qbar <- (1 - damping) T(Qbar) + damping Qbar`` until ``max|T(Qbar) - Qbar| <= tol``.

    ``next_state [S, A..A]``, ``rewards [N, S, A..A]``, ``terminal [S]``; returns a
    :class:`QREResult`. With one agent ``T`` is the soft Bellman operator, a
    gamma-contraction. With several it need not contract (each agent's target moves
    with the others' policies); damping slows the update, and the returned
    ``residual`` says how close to a fixed point the result is.
    """
    next_state = jnp.asarray(next_state)
    rewards = jnp.asarray(rewards, jnp.float32)
    terminal = jnp.asarray(terminal, bool)
    num_agents, num_states = rewards.shape[:2]
    num_actions = next_state.shape[1]
    if next_state.shape != (num_states,) + (num_actions,) * num_agents:
        raise ConfigError(f"marginal_soft_q_iteration: next_state has shape {next_state.shape}, expected "
                          f"{(num_states,) + (num_actions,) * num_agents} (S, then one action axis per agent)")
    qbar0 = jnp.zeros((num_agents, num_states, num_actions), jnp.float32) if init is None else jnp.asarray(init)
    apply = lambda q: marginal_soft_q_operator(q, next_state, rewards, terminal, gamma, lam)  # noqa: E731

    def body(carry):
        q, _, it = carry
        target = apply(q)
        residual = jnp.abs(target - q).max()
        return (1.0 - damping) * target + damping * q, residual, it + 1

    def cond(carry):
        _, residual, it = carry
        return (residual > tol) & (it < max_iters)

    q, _, iterations = jax.lax.while_loop(cond, body, (qbar0, jnp.asarray(jnp.inf, jnp.float32), jnp.asarray(0)))
    residual = jnp.abs(apply(q) - q).max()
    return QREResult(qbar=q, values=soft_value(q, lam, terminal[None]), policies=boltzmann(q, lam),
                     residual=residual, iterations=iterations)


def optimal_q(next_state, rewards, terminal, *, gamma, num_iters) -> jax.Array:
    """Q* ``[S, A]`` of a single-agent deterministic MDP: ``num_iters`` hard Bellman backups from V = 0.

    ``next_state`` ``[S, A]``, ``rewards`` ``[S, A]``, ``terminal`` ``[S]`` (absorbing, value 0). With
    ``gamma = 1`` this is the ``num_iters``-step optimum, equal to Q* once ``num_iters`` covers the longest
    optimal path and no cycle has positive reward. Differentiable in ``rewards`` almost everywhere (the
    gradient follows the maximising actions), as the successor features of the optimal policy.
    """
    next_state, rewards, terminal = jnp.asarray(next_state), jnp.asarray(rewards), jnp.asarray(terminal)

    def backup(v):
        return rewards + gamma * jnp.where(terminal, 0.0, v)[next_state]

    v = jax.lax.fori_loop(0, num_iters - 1, lambda _, v: backup(v).max(-1), jnp.zeros(rewards.shape[0], rewards.dtype))
    return backup(v)


def _joint_probs(policies: jax.Array) -> jax.Array:
    """``[S, A, ..., A]``: prod_j pi_j(a_j|s)."""
    return _others_weights(policies, -1)


def policy_evaluation(next_state, rewards, terminal, policies, *, gamma, num_iters=2000) -> jax.Array:
    """Exact discounted values ``[N, S]`` of the joint policy ``prod_i policies[i]`` (plain rewards, no entropy).

    Iterates ``v_i <- E_{a ~ pi}[R_i + gamma v_i(s')]``; ``num_iters`` must make
    ``gamma ** num_iters`` negligible (2000 iterations: below 1e-90 for gamma = 0.9).
    """
    probs = _joint_probs(jnp.asarray(policies))
    rewards = jnp.asarray(rewards)
    axes = tuple(range(1, next_state.ndim))

    def body(_, v):
        return (probs[None] * joint_backup(next_state, rewards, terminal, v, gamma)).sum(axis=tuple(a + 1 for a in axes))

    return jax.lax.fori_loop(0, num_iters, body, jnp.zeros(rewards.shape[:2], rewards.dtype))


def expected_returns(next_state, rewards, terminal, initial, policies, *, gamma, num_iters=2000) -> jax.Array:
    """``[N]``: each agent's expected discounted return from ``initial`` under the joint policy."""
    values = policy_evaluation(next_state, rewards, terminal, policies, gamma=gamma, num_iters=num_iters)
    return values @ jnp.asarray(initial, values.dtype)


def state_occupancy(next_state, terminal, initial, policies, *, gamma, num_iters=2000) -> jax.Array:
    """Normalised discounted state visitation ``(1 - gamma) sum_t gamma^t P(s_t = s)``: ``[S]``.

    Terminal states keep their (absorbing) mass; drop them where only decisions matter.
    """
    probs = _joint_probs(jnp.asarray(policies)).reshape(next_state.shape[0], -1)  # [S, A^N]
    flat_next = jnp.asarray(next_state).reshape(next_state.shape[0], -1)
    initial = jnp.asarray(initial, jnp.float32)

    def body(_, d):
        moved = jnp.zeros_like(d).at[flat_next.reshape(-1)].add((d[:, None] * probs).reshape(-1))
        return initial + gamma * moved

    return (1.0 - gamma) * jax.lax.fori_loop(0, num_iters, body, initial)


def induced_mdp(next_state, rewards, policies, agent: int):
    """Agent ``agent``'s single-agent view with the others' policies folded into the environment.

    Returns ``(next_idx [S, A, K], probs [S, A, K], reward [S, A])`` with ``K = A^(N-1)``
    the others' joint actions: ``P(s'|s, a_i) = sum_k probs * [next_idx == s']`` and
    ``reward = E_{a_-i}[R_i(s, a_i, a_-i)]``.
    """
    num_states, num_actions = next_state.shape[0], next_state.shape[1]
    weights = jnp.broadcast_to(_others_weights(jnp.asarray(policies), agent), next_state.shape)
    move = lambda x: jnp.moveaxis(x, 1 + agent, 1).reshape(num_states, num_actions, -1)  # noqa: E731
    probs = move(weights)
    reward = (move(jnp.asarray(rewards[agent])) * probs).sum(-1)
    return move(jnp.asarray(next_state)), probs, reward


# ------------------------------------------------------------------ reward comparison (host side)


def canonicalize_shaping(reward, next_idx, probs, terminal, weights, *, gamma, ridge=1e-10) -> np.ndarray:
    """Remove potential shaping from a state-action reward exactly (weighted least squares).

    ``reward [S, A]`` in an MDP with ``P(s'|s, a) = sum_k probs[s, a, k] [next_idx[s, a, k] = s']``.
    Shaping by a potential ``Phi`` (``Phi = 0`` at terminal states) adds
    ``F_Phi(s, a) = gamma E[Phi(s')] - Phi(s)``, which changes no (soft-)optimal policy
    (Ng et al. 1999). We return ``C(r) = r - F_Phi*`` with ``Phi*`` minimising
    ``sum w(s, a) (r - F_Phi)^2``: the ``w``-orthogonal projection of ``r`` off the
    shaping subspace, the "minimal" canonicalisation of STARC (Skalse et al. 2024). It
    is linear and exactly shaping-invariant (``C(r + F_Psi) = C(r)``) for any weights;
    EPIC's canonical form (Gleave et al. 2021) is invariant too but evaluates rewards on
    arbitrary (s, a, s') triples, most of which a deterministic game never produces.
    ``weights [S, A] >= 0``: rows with weight 0 do not constrain ``Phi``.
    See ``ShapingCanonicalizer`` to canonicalise many rewards in one MDP.
    """
    return ShapingCanonicalizer(next_idx, probs, terminal, weights, gamma=gamma, ridge=ridge)(reward)


class ShapingCanonicalizer:
    """``canonicalize_shaping`` for one MDP and weighting, factorised once (sparse LU of the normal equations).

    A tiny ``ridge`` fixes the potentials of states no weighted row touches (to 0).
    """

    def __init__(self, next_idx, probs, terminal, weights, *, gamma, ridge=1e-10):
        from scipy import sparse  # noqa: PLC0415
        from scipy.sparse import linalg as sparse_linalg  # noqa: PLC0415

        next_idx = np.asarray(next_idx)
        probs = np.asarray(probs, np.float64)
        weights = np.asarray(weights, np.float64)
        terminal = np.asarray(terminal, bool)
        if next_idx.ndim != 3 or probs.shape != next_idx.shape or weights.shape != next_idx.shape[:2]:
            raise ConfigError(f"ShapingCanonicalizer: expected next_idx and probs [S, A, K] and weights [S, A]; got "
                              f"next_idx {next_idx.shape}, probs {probs.shape}, weights {weights.shape}")
        if terminal.shape != (next_idx.shape[0],):
            raise ConfigError(f"ShapingCanonicalizer: terminal has shape {terminal.shape}, expected ({next_idx.shape[0]},)")
        if (weights < 0).any():
            raise ConfigError("ShapingCanonicalizer: weights must be >= 0")
        num_states, num_actions, fanout = next_idx.shape
        num_rows = num_states * num_actions
        # F = gamma * P - E (rows (s, a), columns s), terminal columns dropped (Phi = 0 there).
        rows = np.concatenate([np.repeat(np.arange(num_rows), fanout), np.arange(num_rows)])
        cols = np.concatenate([next_idx.reshape(-1), np.repeat(np.arange(num_states), num_actions)])
        vals = np.concatenate([gamma * probs.reshape(-1), -np.ones(num_rows)])
        keep = ~terminal[cols]
        self.shaping = sparse.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(num_rows, num_states))
        self.weights = weights.reshape(-1)
        normal = (self.shaping.T @ sparse.diags(self.weights) @ self.shaping).tocsc()
        scale = max(float(normal.diagonal().max()), 1e-30)
        self._solve = sparse_linalg.factorized(normal + ridge * scale * sparse.identity(num_states, format="csc"))
        self.shape = (num_states, num_actions)

    def potential(self, reward) -> np.ndarray:
        """``Phi*`` (``[S]``) of ``reward``."""
        reward = np.asarray(reward, np.float64)
        if reward.shape != self.shape:
            raise ConfigError(f"ShapingCanonicalizer: reward has shape {reward.shape}, expected {self.shape}")
        return self._solve(self.shaping.T @ (self.weights * reward.reshape(-1)))

    def __call__(self, reward) -> np.ndarray:
        reward = np.asarray(reward, np.float64)
        return reward - (self.shaping @ self.potential(reward)).reshape(self.shape)


def weighted_pearson(x, y, weights) -> float:
    """Pearson correlation of ``x`` and ``y`` under the distribution ``weights / sum(weights)``."""
    x, y, w = (np.asarray(v, np.float64).reshape(-1) for v in (x, y, weights))
    if not (x.shape == y.shape == w.shape):
        raise ConfigError(f"weighted_pearson: shapes differ: x {x.shape}, y {y.shape}, weights {w.shape}")
    w = w / w.sum()
    dx, dy = x - w @ x, y - w @ y
    denominator = np.sqrt((w @ dx**2) * (w @ dy**2))
    return float((w @ (dx * dy)) / denominator) if denominator > 0 else float("nan")
