"""Exact tools for comparing reward functions on a stochastic tabular MDP: STARC distances (Skalse et al.,
ICLR 2024) and the behavioural models of inverse RL with the full sets of rewards each maps to one policy
(Skalse & Abate, ICLR 2024; papers/control-rl.md §13).

An environment is ``transitions [S, A, S]`` (``tau(s'|s, a)``, rows summing to 1) and a discount ``gamma``;
a reward is ``[S, A, S]`` (``R(s, a, s')``); a policy is ``[S, A]``. Everything is jit-able and
differentiable in the reward.

* ``value_adjusted_levelling``: the canonicalisation ``c(R)(s, a) = E_{S'~tau(s,a)}[R(s, a, S') - V^pi(s) +
  gamma V^pi(S')]`` (uniform ``pi`` by default). It is linear, removes potential shaping and any
  redistribution of ``R`` over ``s'`` that keeps its mean under ``tau``, and is idempotent.
* ``starc_distance``: ``0.5 * || c(R1)/||c(R1)|| - c(R2)/||c(R2)|| ||_2`` in ``[0, 1]`` with ``0/0 = 0``:
  0 exactly when the two rewards order all policies alike, 1 when they order them oppositely.
* ``mce_policy`` / ``boltzmann_policy``: the maximal-causal-entropy policy at temperature ``alpha`` and the
  Boltzmann-rational policy ``pi ∝ exp(beta Q*)``.
* ``mce_rewards`` / ``boltzmann_rewards``: given an observed policy, every reward the model (under its own
  ``gamma`` and ``tau``) maps to it, as ``base(pi) + gamma Phi(s') - Phi(s) + xi(s, a, s')`` with any potential
  ``Phi [S]`` and any ``xi`` of zero mean under ``tau`` (``redistribution``). An IRL method that assumes the
  model can return any of them, which is what makes a misspecified model's error a worst case over this set.
  ``behavioural_policy`` and ``reward_set`` pick either model by name (``BEHAVIOURAL_MODELS``).

The halved distance is the digest's (in [0, 1]); the STARC authors' code uses the plain L2 distance between the
normalised canonical rewards, in [0, 2], exactly twice this.

The canonicalised reward depends on ``(s, a)`` only, so it is returned as ``[S, A]``; seen as an ``[S, A, S]``
reward it is constant in ``s'``, which scales every L2 norm by ``sqrt(S)`` and leaves the distance unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rljax.core.config import ConfigError
from rljax.core.tabular import boltzmann, soft_value


def check_mdp(transitions, reward=None) -> None:
    """Raise ``ConfigError`` unless ``transitions`` is ``[S, A, S]`` and ``reward`` (if given) the same shape."""
    shape = jnp.shape(transitions)
    if len(shape) != 3 or shape[0] != shape[2]:
        raise ConfigError(f"transitions: expected shape [S, A, S] (tau(s'|s, a)), got {shape}")
    if reward is not None and jnp.shape(reward) != shape:
        raise ConfigError(f"reward: expected shape {shape} (R(s, a, s'), like transitions), got {jnp.shape(reward)}")


def expected_reward(reward: jax.Array, transitions: jax.Array) -> jax.Array:
    """``E_{S'~tau(s,a)}[R(s, a, S')]``: ``[S, A]``."""
    return (transitions * reward).sum(-1)


def uniform_policy(transitions: jax.Array) -> jax.Array:
    num_states, num_actions = transitions.shape[:2]
    return jnp.full((num_states, num_actions), 1.0 / num_actions, transitions.dtype)


def policy_values(reward, transitions, policy, *, gamma) -> jax.Array:
    """``V^pi [S]`` exactly, by solving ``(I - gamma P_pi) V = r_pi``."""
    r_pi = (policy * expected_reward(reward, transitions)).sum(-1)
    p_pi = jnp.einsum("sa,sat->st", policy, transitions)
    return jnp.linalg.solve(jnp.eye(p_pi.shape[0], dtype=p_pi.dtype) - gamma * p_pi, r_pi)


def policy_returns(reward, transitions, policy, initial, *, gamma) -> jax.Array:
    """``J(pi) = E_{s_0 ~ initial}[V^pi(s_0)]``."""
    return initial @ policy_values(reward, transitions, policy, gamma=gamma)


def value_adjusted_levelling(reward, transitions, *, gamma, policy=None) -> jax.Array:
    """``c(R)(s, a) = E_{S'~tau(s,a)}[R(s, a, S') - V^pi(s) + gamma V^pi(S')]`` ``[S, A]``; ``pi`` uniform by default."""
    check_mdp(transitions, reward)
    policy = uniform_policy(transitions) if policy is None else policy
    v = policy_values(reward, transitions, policy, gamma=gamma)
    return expected_reward(reward, transitions) - v[:, None] + gamma * transitions @ v


def _unit(x: jax.Array, scale: jax.Array, rtol: float) -> jax.Array:
    """``x / ||x||``, or 0 where ``||x|| <= rtol * scale`` (the 0/0 := 0 convention, with rounding noise as 0)."""
    norm = jnp.linalg.norm(x)
    nonzero = norm > rtol * scale
    return jnp.where(nonzero, x / jnp.where(nonzero, norm, 1.0), 0.0)


def starc_distance(reward_1, reward_2, transitions, *, gamma, policy=None, rtol=None) -> jax.Array:
    """STARC distance ``0.5 * || c(R1)/||c(R1)|| - c(R2)/||c(R2)|| ||_2`` in ``[0, 1]``.

    ``c`` is :func:`value_adjusted_levelling` under the true ``transitions`` and ``gamma``. A reward whose
    canonicalisation is zero (it is indifferent between all policies) counts as the zero vector, so its
    distance to any non-trivial reward is 0.5; "zero" means ``||c(R)|| <= rtol * ||E_tau R||`` with ``rtol``
    100 machine epsilons by default, so that the rounding left after canonicalising a pure shaping term is
    not normalised into a random direction.
    """
    check_mdp(transitions, reward_2)
    rtol = 100 * jnp.finfo(jnp.result_type(reward_1)).eps if rtol is None else rtol
    units = [_unit(value_adjusted_levelling(r, transitions, gamma=gamma, policy=policy),
                   jnp.linalg.norm(expected_reward(r, transitions)), rtol) for r in (reward_1, reward_2)]
    return 0.5 * jnp.linalg.norm(units[0] - units[1])


# Behavioural models: reward -> policy.

def soft_q_values(reward, transitions, *, gamma, alpha, num_iters=1000) -> jax.Array:
    """Soft-optimal ``Q [S, A]``: ``Q = E_tau[R + gamma V(S')]``, ``V = alpha log sum_a exp(Q / alpha)``.

    ``num_iters`` backups from ``Q = 0`` (a ``gamma``-contraction: the error is ``gamma^num_iters`` times
    the largest soft value).
    """
    check_mdp(transitions, reward)
    r = expected_reward(reward, transitions)
    backup = lambda _, q: r + gamma * transitions @ soft_value(q, 1.0 / alpha)  # noqa: E731
    return jax.lax.fori_loop(0, num_iters, backup, jnp.zeros_like(r))


def mce_policy(reward, transitions, *, gamma, alpha, num_iters=1000) -> jax.Array:
    """The maximal-causal-entropy policy ``pi(a|s) = exp((Q(s, a) - V(s)) / alpha)`` of :func:`soft_q_values`."""
    return boltzmann(soft_q_values(reward, transitions, gamma=gamma, alpha=alpha, num_iters=num_iters), 1.0 / alpha)


def optimal_q_values(reward, transitions, *, gamma, num_iters=1000) -> jax.Array:
    """``Q* [S, A]``: ``num_iters`` hard backups ``Q = E_tau[R + gamma max_a' Q(S', a')]`` from ``Q = 0``."""
    check_mdp(transitions, reward)
    r = expected_reward(reward, transitions)
    return jax.lax.fori_loop(0, num_iters, lambda _, q: r + gamma * transitions @ q.max(-1), jnp.zeros_like(r))


def boltzmann_policy(reward, transitions, *, gamma, beta, num_iters=1000) -> jax.Array:
    """The Boltzmann-rational policy ``pi(a|s) ∝ exp(beta Q*(s, a))``."""
    return boltzmann(optimal_q_values(reward, transitions, gamma=gamma, num_iters=num_iters), beta)


# Their inverses: policy -> every reward the model maps to it.

def potential_shaping(potential: jax.Array, *, gamma) -> jax.Array:
    """``gamma Phi(s') - Phi(s)``: ``[S, 1, S]``, broadcasting over actions."""
    return gamma * potential[None, None, :] - potential[:, None, None]


def redistribution(zeta: jax.Array, transitions: jax.Array) -> jax.Array:
    """``zeta - E_tau[zeta]`` ``[S, A, S]``: any reward term whose mean under ``tau`` is zero (S'-redistribution)."""
    return zeta - expected_reward(zeta, transitions)[..., None]


def mce_rewards(policy, transitions, *, gamma, alpha, potential, zeta) -> jax.Array:
    """Every reward the MCE model maps to ``policy``: ``alpha log pi(a|s) + gamma Phi(s') - Phi(s) + xi``.

    ``alpha log pi`` alone has soft value 0 everywhere, so its soft Q is ``alpha log pi`` and its MCE policy
    ``pi``; the MCE policy depends on a reward only through ``E_tau R`` up to potential shaping, so ``Phi``
    (``potential [S]``) and ``xi = redistribution(zeta)`` (``zeta [S, A, S]``) span the whole set.
    ``policy`` must have full support.
    """
    return (alpha * jnp.log(policy)[..., None] + potential_shaping(potential, gamma=gamma)
            + redistribution(zeta, transitions))


def boltzmann_rewards(policy, transitions, *, gamma, beta, potential, zeta) -> jax.Array:
    """Every reward the Boltzmann model maps to ``policy``: the rewards whose ``Q*`` is ``log pi / beta - Phi(s)``.

    ``Q*`` of a Boltzmann policy is ``log pi / beta`` up to a per-state constant ``-Phi(s)``, and a reward has
    that ``Q*`` exactly when ``E_tau R(s, a) = Q(s, a) - gamma E_tau max_a' Q(S', a')``, i.e. ``R = log pi(a|s) /
    beta - gamma max_a' log pi(a'|s') / beta + gamma Phi(s') - Phi(s) + xi``. ``policy`` must have full support.
    """
    log_pi = jnp.log(policy) / beta
    base = log_pi[..., None] - gamma * log_pi.max(-1)[None, None, :]
    return base + potential_shaping(potential, gamma=gamma) + redistribution(zeta, transitions)


BEHAVIOURAL_MODELS = ("mce", "boltzmann")


def _check_model(model: str) -> None:
    if model not in BEHAVIOURAL_MODELS:
        raise ConfigError(f"model: expected one of {BEHAVIOURAL_MODELS}, got {model!r}")


def behavioural_policy(model: str, reward, transitions, *, gamma, temperature, num_iters=1000) -> jax.Array:
    """``model``'s policy for ``reward``: ``"mce"`` (temperature = alpha) or ``"boltzmann"`` (temperature = beta)."""
    _check_model(model)
    if model == "mce":
        return mce_policy(reward, transitions, gamma=gamma, alpha=temperature, num_iters=num_iters)
    return boltzmann_policy(reward, transitions, gamma=gamma, beta=temperature, num_iters=num_iters)


def reward_set(model: str, policy, transitions, *, gamma, temperature, potential, zeta) -> jax.Array:
    """The member ``(potential, zeta)`` of the set of rewards ``model`` maps to ``policy`` (see :func:`mce_rewards`)."""
    _check_model(model)
    if model == "mce":
        return mce_rewards(policy, transitions, gamma=gamma, alpha=temperature, potential=potential, zeta=zeta)
    return boltzmann_rewards(policy, transitions, gamma=gamma, beta=temperature, potential=potential, zeta=zeta)
