"""Tiny-Hanabi-style common-payoff card games as exact tables (the setting of Sokota et al.'s MDS; used by
``experiments.mds_common_payoff``).

Chance deals each of two players a private card (uniform, independent); player 1 sees its card and acts; player 2
sees its own card and player 1's action, and acts; both receive ``payoff[c1, c2, a1, a2]``. A policy is a pair
``(p1 [C1, A1], p2 [C2, A1, A2])`` (player 2's information state is its card and player 1's action).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def random_game(key, num_cards: int = 2, num_actions: int = 3) -> jax.Array:
    """``payoff [C, C, A, A]`` with integer entries 0..10, as in the Tiny Hanabi suite's tables."""
    return jax.random.randint(key, (num_cards, num_cards, num_actions, num_actions), 0, 11).astype(jnp.float32)


def value(payoff, policy) -> jax.Array:
    """The common expected payoff of ``policy = (p1, p2)``."""
    p1, p2 = policy
    return jnp.einsum("ia,jab,ijab->", p1, p2, payoff) / (payoff.shape[0] * payoff.shape[1])


def action_values(payoff, policy):
    """``(q1 [C1, A1], q2 [C2, A1, A2])``: each action's expected payoff at each information state, the other
    player following ``policy``; player 2's belief over player 1's card is the posterior given player 1's action
    (the prior where that action is never taken)."""
    p1, p2 = policy
    q1 = jnp.einsum("jab,ijab->ia", p2, payoff) / payoff.shape[1]
    belief = p1 / p1.sum(0, keepdims=True)  # [C1, A1]: P(c1 | a1) under a uniform prior
    belief = jnp.where(p1.sum(0, keepdims=True) > 0, belief, 1.0 / p1.shape[0])
    q2 = jnp.einsum("ia,ijab->jab", belief, payoff)
    return q1, q2


def optimal_value(payoff) -> jax.Array:
    """The best common payoff, by enumerating every pair of deterministic policies."""
    num_cards, _, num_actions, _ = payoff.shape
    eye = np.eye(num_actions)
    p1s = np.stack([eye[list(c)] for c in itertools.product(range(num_actions), repeat=num_cards)])
    p2s = np.stack([eye[list(c)].reshape(num_cards, num_actions, num_actions)
                    for c in itertools.product(range(num_actions), repeat=num_cards * num_actions)])
    table = jnp.einsum("pia,qjab,ijab->pq", p1s, p2s, payoff) / (num_cards * num_cards)
    return table.max()
