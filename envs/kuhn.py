"""Kuhn poker as exact tables: expected payoff, conditional action values at every information state, and
exploitability by enumerating pure strategies (used by ``rljax.agents.mmds``).

Three cards (J, Q, K = 0, 1, 2), one each to two players who ante 1; player 0 checks or bets 1, then:
check-check is a showdown for 1; check-bet lets player 0 fold (-1) or call (showdown for 2); bet lets player 1
fold (+1 to player 0) or call (showdown for 2). Action 0 is pass (check / fold), action 1 is bet (bet / call).

A behavioural policy for both players is one array ``policy [12, 2]``: row ``card * 4 + h`` is the information
state of holding ``card`` at history ``h`` of ``HISTORIES`` ("", "c", "b", "cb"); player 0 acts at "" and "cb",
player 1 at "c" and "b". Everything is jit-able; payoffs are player 0's (the game is zero-sum).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

HISTORIES = ("", "c", "b", "cb")
ACTING_PLAYER = (0, 1, 1, 0)
NUM_INFOSTATES = 12
DEALS = np.asarray([(c0, c1) for c0 in range(3) for c1 in range(3) if c0 != c1])  # [6, 2], each 1/6
GAME_VALUE = -1.0 / 18.0  # player 0's value at equilibrium


def infostate(card, history: int):
    return card * 4 + history


def _deal_values(policy):
    """Per deal ``[6]``: the continuation values (player 0's payoff) after each action at each history."""
    c0, c1 = DEALS[:, 0], DEALS[:, 1]
    win = jnp.where(c0 > c1, 1.0, -1.0)  # showdown sign for player 0
    after_cb = jnp.stack([-jnp.ones(6), 2 * win], -1)  # at "cb": fold, call
    v_cb = (policy[infostate(c0, 3)] * after_cb).sum(-1)
    after_c = jnp.stack([win, v_cb], -1)  # at "c": check, bet
    after_b = jnp.stack([jnp.ones(6), 2 * win], -1)  # at "b": fold, call
    v_c = (policy[infostate(c1, 1)] * after_c).sum(-1)
    v_b = (policy[infostate(c1, 2)] * after_b).sum(-1)
    after_root = jnp.stack([v_c, v_b], -1)
    return {0: after_root, 1: after_c, 2: after_b, 3: after_cb}


def value(policy) -> jax.Array:
    """Player 0's expected payoff when both play ``policy``."""
    after_root = _deal_values(policy)[0]
    return (policy[infostate(DEALS[:, 0], 0)] * after_root).sum(-1).mean()


def _reach_by_others(policy):
    """Per history and deal ``[4, 6]``: the probability that the *other* player's actions lead to the history."""
    c0, c1 = DEALS[:, 0], DEALS[:, 1]
    return jnp.stack([jnp.ones(6), policy[infostate(c0, 0), 0], policy[infostate(c0, 0), 1],
                      policy[infostate(c1, 1), 1]])


def conditional_q(policy) -> jax.Array:
    """``q [12, 2]``: the acting player's expected payoff of each action at each information state, over the
    histories in it weighted by chance and the other player's reach (the belief the policy implies), with
    ``policy`` played afterwards. Information states the other player never reaches get chance weights."""
    after = _deal_values(policy)
    reach = _reach_by_others(policy)
    q = jnp.zeros((NUM_INFOSTATES, 2))
    for h, player in enumerate(ACTING_PLAYER):
        sign = 1.0 if player == 0 else -1.0
        own_card = DEALS[:, player]
        for card in range(3):
            deals = own_card == card
            weights = jnp.where(deals, reach[h], 0.0)
            weights = jnp.where(weights.sum() > 0, weights, deals.astype(weights.dtype))
            q = q.at[infostate(card, h)].set(sign * (weights[:, None] * after[h]).sum(0) / weights.sum())
    return q


_ROWS = {player: np.asarray([infostate(card, h) for card in range(3) for h, p in enumerate(ACTING_PLAYER)
                             if p == player]) for player in (0, 1)}  # each player's 6 information states


def _pure_strategies(player: int) -> np.ndarray:
    """``[64, 12, 2]``: every deterministic choice at ``player``'s 6 information states (others uniform)."""
    strategies = np.full((64, NUM_INFOSTATES, 2), 0.5)
    for i, choice in enumerate(itertools.product(range(2), repeat=6)):
        strategies[i, _ROWS[player]] = np.eye(2)[list(choice)]
    return strategies


_PURE = {player: _pure_strategies(player) for player in (0, 1)}


def best_response_values(policy) -> tuple[jax.Array, jax.Array]:
    """Each player's best payoff against the other's part of ``policy`` (player 1's as its own payoff)."""
    def combined(player, pure):
        return jnp.asarray(policy).at[_ROWS[player]].set(pure[_ROWS[player]])

    br0 = jax.vmap(lambda s: value(combined(0, s)))(jnp.asarray(_PURE[0])).max()
    br1 = jax.vmap(lambda s: -value(combined(1, s)))(jnp.asarray(_PURE[1])).max()
    return br0, br1


def exploitability(policy) -> jax.Array:
    """OpenSpiel's convention: ``(BR_0 + BR_1) / 2``, the mean gain of a best response (0 at a Nash equilibrium)."""
    br0, br1 = best_response_values(policy)
    return (br0 + br1) / 2
