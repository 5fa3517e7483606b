"""Objective-specification formalisms beyond Markov rewards, and certificates that a Markov reward cannot
express them (Subramani et al., ICLR 2024, "On the Expressivity of Objective-Specification Formalisms in RL";
papers/control-rl.md §14).

A formalism orders policies. A Markov reward (MR) ``R(s, a, s')`` with discount ``gamma`` orders them by
``J_R(pi) = <d^pi, R>``, linear in the discounted occupancy measure ``d^pi(s, a, s')``. Two formalisms it cannot
match, and their optimisers:

* an outer nonlinear Markov reward (ONMR) ``f(J_1(pi), ..., J_k(pi))``; for ``f = min`` (max-min over
  objectives) :func:`frank_wolfe_max_min` climbs over occupancy measures and :func:`max_min_lp` solves it
  exactly as a linear program. Its optimum can be strictly stochastic, while every Markov reward has a
  deterministic optimal policy;
* a reward machine (RM): a finite automaton over state labels whose transitions pay rewards;
  :func:`reward_machine_product` builds the product MDP on ``(s, u)``, where value iteration finds the best
  finite-memory policy.

:func:`markov_reward_lp` decides whether *some* Markov reward, at a given discount, orders a finite set of
policies the way a formalism does: it looks for ``R`` with ``<d_i - d_j, R> >= 1`` for every strictly
preferred pair (the scale is free, so a margin of 1 loses nothing). Infeasibility on a finite set is a
certificate for the whole policy space. Everything on ``[S, A, S]`` arrays as in
:mod:`rljax.core.reward_theory`; the linear programs are host-side (scipy's HiGHS).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linprog

from rljax.core.config import ConfigError
from rljax.core.reward_theory import check_mdp, expected_reward, optimal_q_values


def occupancy(transitions, policy, initial, *, gamma) -> jax.Array:
    """Discounted occupancy ``d(s, a, s') = sum_t gamma^t P(s_t = s, a_t = a, s_{t+1} = s')`` ``[S, A, S]``.

    ``J_R(pi) = <d, R>`` for every reward ``R``; the state part solves ``mu = initial + gamma P_pi^T mu``.
    """
    p_pi = jnp.einsum("sa,sat->st", policy, transitions)
    mu = jnp.linalg.solve(jnp.eye(p_pi.shape[0], dtype=p_pi.dtype) - gamma * p_pi.T, initial)
    return mu[:, None, None] * policy[..., None] * transitions


def deterministic_policies(num_states: int, num_actions: int) -> np.ndarray:
    """All ``num_actions ** num_states`` deterministic stationary policies, one-hot: ``[N, S, A]``."""
    if num_actions ** num_states > 2**20:
        raise ConfigError(f"deterministic_policies: {num_actions}^{num_states} policies is too many to enumerate "
                          f"(more than 2^20)")
    choices = np.asarray(list(itertools.product(range(num_actions), repeat=num_states)))
    return np.eye(num_actions)[choices]


class RewardMachine(NamedTuple):
    """A reward machine over state labels: from machine state ``u``, entering a state labelled ``l`` moves the
    machine to ``next_state[u, l]`` and pays ``reward[u, l]``; ``initial`` is the machine's start state."""

    next_state: np.ndarray  # [U, L] int
    reward: np.ndarray  # [U, L]
    initial: int


def reward_machine_product(transitions, labels, machine: RewardMachine, initial):
    """The product MDP on ``(s, u)`` (index ``s * U + u``): ``(transitions [SU, A, SU], reward [SU, A, SU],
    initial [SU])``. ``labels [S]`` gives each state's label; the machine reads the label of the state entered."""
    transitions, labels = np.asarray(transitions), np.asarray(labels)
    check_mdp(transitions)
    num_states, num_actions = transitions.shape[:2]
    num_machine = machine.next_state.shape[0]
    if labels.shape != (num_states,) or labels.max() >= machine.next_state.shape[1]:
        raise ConfigError(f"labels: expected {num_states} labels in 0..{machine.next_state.shape[1] - 1}, got "
                          f"shape {labels.shape} with largest {labels.max()}")
    size = num_states * num_machine
    product = np.zeros((size, num_actions, size))
    reward = np.zeros((size, num_actions, size))
    for s, u, s_next in itertools.product(range(num_states), range(num_machine), range(num_states)):
        u_next = machine.next_state[u, labels[s_next]]
        product[s * num_machine + u, :, s_next * num_machine + u_next] = transitions[s, :, s_next]
        reward[s * num_machine + u, :, s_next * num_machine + u_next] = machine.reward[u, labels[s_next]]
    start = np.zeros(size)
    start[np.arange(num_states) * num_machine + machine.initial] = np.asarray(initial)
    return product, reward, start


def stationary_in_product(policy, num_machine: int) -> jax.Array:
    """A base-MDP policy ``[S, A]`` as a product-MDP policy that ignores the machine state: ``[S U, A]``."""
    return jnp.repeat(policy, num_machine, axis=0)


def greedy_policy(q) -> jax.Array:
    """The deterministic policy of ``argmax_a q(s, a)``, one-hot ``[S, A]``."""
    return jax.nn.one_hot(q.argmax(-1), q.shape[-1], dtype=q.dtype)


class MaxMinResult(NamedTuple):
    occupancy: jax.Array  # [S, A, S]
    policy: jax.Array  # [S, A], pi(a|s) = d(s, a) / d(s)
    values: jax.Array  # [iterations + 1] min_k J_k along the way


def frank_wolfe_max_min(transitions, rewards, initial, *, gamma, num_iters=30_000, smoothing=0.3,
                        value_iters=500) -> MaxMinResult:
    """Maximise ``min_k <d, R_k>`` over occupancy measures by Frank-Wolfe on an annealed soft minimum.

    ``rewards [K, S, A, S]``. Step ``t``'s linear maximiser is the optimal deterministic policy for the reward
    ``sum_k w_k R_k`` with ``w = softmax(-J / mu_t)``, the gradient of the soft minimum ``-mu_t logsumexp(-J /
    mu_t)`` at ``mu_t = smoothing / sqrt(t + 1)`` (in the returns' units), found by ``value_iters`` backups;
    the step size is ``2 / (t + 2)``. A fixed small ``mu`` makes the steps chase whichever objective is lowest
    and stall several percent short on random MDPs; the annealed one ends within about 0.1% of the LP optimum
    (:func:`max_min_lp`) after 30,000 steps. Occupancy measures are convex, so every iterate is one, and its
    policy is ``d(s, a) / d(s)``.
    """
    rewards = jnp.asarray(rewards)
    returns = lambda d: jnp.einsum("ksat,sat->k", rewards, d)  # noqa: E731

    def step(d, t):
        weights = jax.nn.softmax(-returns(d) * jnp.sqrt(t + 1.0) / smoothing)
        q = optimal_q_values(jnp.einsum("k,ksat->sat", weights, rewards), transitions, gamma=gamma,
                             num_iters=value_iters)
        d = d + 2.0 / (t + 2.0) * (occupancy(transitions, greedy_policy(q), initial, gamma=gamma) - d)
        return d, returns(d).min()

    d0 = occupancy(transitions, jnp.full(transitions.shape[:2], 1.0 / transitions.shape[1]), initial, gamma=gamma)
    d, values = jax.lax.scan(step, d0, jnp.arange(num_iters, dtype=d0.dtype))
    state_action = d.sum(-1)
    visited = state_action.sum(-1, keepdims=True) > 0
    policy = jnp.where(visited, state_action / jnp.where(visited, state_action.sum(-1, keepdims=True), 1.0),
                       1.0 / transitions.shape[1])
    return MaxMinResult(d, policy, jnp.concatenate([returns(d0).min()[None], values]))


def max_min_lp(transitions, rewards, initial, *, gamma) -> tuple[float, np.ndarray]:
    """Exactly ``max_d min_k <d, R_k>`` over the occupancy measures ``x(s, a)`` (Bellman-flow constraints
    ``sum_a x(s', a) = initial(s') + gamma sum_{s, a} tau(s'|s, a) x(s, a)``, ``x >= 0``): ``(value, x [S, A])``."""
    tau = np.asarray(transitions, np.float64)
    num_states, num_actions = tau.shape[:2]
    r = np.asarray(jax.vmap(expected_reward, in_axes=(0, None))(jnp.asarray(rewards), jnp.asarray(tau)))
    n = num_states * num_actions
    # Variables [x (S*A), t]; maximise t subject to t <= <x, r_k> and the flow constraints.
    flow = np.kron(np.eye(num_states), np.ones(num_actions)) - gamma * tau.reshape(n, num_states).T
    res = linprog(np.r_[np.zeros(n), -1.0], A_ub=np.c_[-r.reshape(len(r), n), np.ones(len(r))], b_ub=np.zeros(len(r)),
                  A_eq=np.c_[flow, np.zeros(num_states)], b_eq=np.asarray(initial, np.float64),
                  bounds=[(0, None)] * n + [(None, None)], method="highs")
    if res.status != 0:
        raise RuntimeError(f"max_min_lp: HiGHS did not solve the occupancy LP: {res.message}")
    return float(-res.fun), res.x[:n].reshape(num_states, num_actions)


class ExpressibilityResult(NamedTuple):
    feasible: bool
    reward: np.ndarray | None  # [S, A, S] a Markov reward that orders the policies alike, when one exists
    certificate: np.ndarray | None  # [pairs] Farkas weights proving that none exists, when none does
    residual: float  # max |sum_pairs y (d_better - d_worse)| of the certificate (occupancies as probabilities)
    num_constraints: int  # strictly preferred pairs


def markov_reward_lp(occupancies, values, *, tol=1e-9, certificate_tol=1e-9) -> ExpressibilityResult:
    """Is there a Markov reward ``R`` with ``<d_i - d_j, R> >= 1`` whenever ``values[i] > values[j] + tol``?

    ``occupancies [P, S, A, S]`` are the policies' occupancy measures at the reward's discount; ``values [P]``
    the formalism's score of each policy. Ties are left free (a weaker demand, so infeasibility says more).
    "No" comes with a checked certificate (Farkas): weights ``y >= 0`` summing to 1 over the strictly
    preferred pairs with ``sum y (d_better - d_worse) = 0``, so every reward would have to score some
    preferred policy no higher than the one it beats.
    """
    occ = np.asarray(occupancies, np.float64).reshape(len(values), -1)
    # Every policy's occupancy sums to 1 / (1 - gamma); rescaling to probabilities changes only the reward's
    # scale (the LP is homogeneous) and keeps HiGHS well conditioned at discounts near 1.
    occ = occ / occ[0].sum()
    values = np.asarray(values, np.float64)
    better, worse = np.nonzero(values[:, None] > values[None, :] + tol)
    if len(better) == 0:
        raise ConfigError("markov_reward_lp: values: every policy ties, so there is no strict preference to express")
    gaps = occ[better] - occ[worse]  # [pairs, S*A*S]
    shape = np.asarray(occupancies).shape[1:]
    primal = linprog(np.zeros(gaps.shape[1]), A_ub=-gaps, b_ub=-np.ones(len(better)),
                     bounds=[(None, None)] * gaps.shape[1], method="highs")
    if primal.status == 0:
        return ExpressibilityResult(True, primal.x.reshape(shape), None, float("nan"), len(better))
    farkas = linprog(np.zeros(len(better)), A_eq=np.vstack([gaps.T, np.ones(len(better))]),
                     b_eq=np.r_[np.zeros(gaps.shape[1]), 1.0], bounds=[(0, None)] * len(better), method="highs")
    if farkas.status == 0:
        residual = float(np.abs(gaps.T @ farkas.x).max())
        if residual <= certificate_tol:
            return ExpressibilityResult(False, None, farkas.x, residual, len(better))
    raise RuntimeError(f"markov_reward_lp: HiGHS neither found a reward ({primal.message}) nor a checked "
                       f"certificate that none exists ({farkas.message})")
