"""Kuhn poker's exact tables against known values (OpenSpiel's uniform exploitability, the equilibrium value
-1/18), action values by hand, and the (magnetic) mirror-descent search update: by hand, its QRE fixed point,
and repeated search converging on Kuhn poker."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import kuhn
from rljax.agents import mmds

UNIFORM = jnp.full((kuhn.NUM_INFOSTATES, 2), 0.5)


def equilibrium(alpha):
    """Kuhn's equilibrium family: player 0 bets a jack with probability alpha in [0, 1/3]."""
    p = np.full((kuhn.NUM_INFOSTATES, 2), 0.5)
    for (card, h), bet in {(0, 0): alpha, (0, 3): 0, (1, 0): 0, (1, 3): alpha + 1 / 3, (2, 0): 3 * alpha, (2, 3): 1,
                           (0, 1): 1 / 3, (0, 2): 0, (1, 1): 0, (1, 2): 1 / 3, (2, 1): 1, (2, 2): 1}.items():
        p[kuhn.infostate(card, h)] = [1 - bet, bet]
    return jnp.asarray(p)


def test_known_values():
    np.testing.assert_allclose(kuhn.exploitability(UNIFORM), 0.458333, atol=1e-6)  # OpenSpiel's figure
    np.testing.assert_allclose(kuhn.value(UNIFORM), 0.125, atol=1e-7)
    for alpha in (0.0, 0.2, 1 / 3):
        np.testing.assert_allclose(kuhn.value(equilibrium(alpha)), kuhn.GAME_VALUE, atol=1e-7)
        np.testing.assert_allclose(kuhn.exploitability(equilibrium(alpha)), 0.0, atol=1e-6)
    # Off the family (a jack that always bets) player 1 gains by calling with a queen.
    assert float(kuhn.exploitability(equilibrium(1 / 3).at[kuhn.infostate(0, 0)].set(jnp.array([0.0, 1.0])))) > 0.01


def test_conditional_action_values_by_hand_and_against_the_value():
    q = kuhn.conditional_q(UNIFORM)
    # Player 1 facing a bet: a king wins a call (+2), a jack loses it (-2), a queen is even against J or K; fold -1.
    np.testing.assert_allclose(q[kuhn.infostate(2, 2)], [-1.0, 2.0], atol=1e-7)
    np.testing.assert_allclose(q[kuhn.infostate(0, 2)], [-1.0, -2.0], atol=1e-7)
    np.testing.assert_allclose(q[kuhn.infostate(1, 2)], [-1.0, 0.0], atol=1e-7)
    # The root's values, averaged over player 0's cards under the policy, give the game's value.
    for policy in (UNIFORM, jax.random.dirichlet(jax.random.PRNGKey(0), jnp.ones(2), (12,))):
        q = kuhn.conditional_q(policy)
        roots = [kuhn.infostate(card, 0) for card in range(3)]
        np.testing.assert_allclose((policy[np.asarray(roots)] * q[np.asarray(roots)]).sum(-1).mean(), kuhn.value(policy),
                                   atol=1e-6)


def test_update_by_hand_and_its_fixed_point_is_the_qre():
    pi, q = jnp.array([0.25, 0.75]), jnp.array([1.0, -1.0])
    # alpha = 0: pi exp(eta q) / Z.
    expected = np.array([0.25 * np.exp(0.5), 0.75 * np.exp(-0.5)])
    np.testing.assert_allclose(mmds.mirror_descent_search_update(pi, q, step_size=0.5), expected / expected.sum(),
                               rtol=1e-6)
    # alpha > 0: [pi rho^(alpha eta) exp(eta q)]^(1 / (1 + alpha eta)), rho uniform.
    a, eta = 0.3, 0.5
    expected = (np.array([0.25, 0.75]) * 0.5 ** (a * eta) * np.exp(eta * np.array([1.0, -1.0]))) ** (1 / (1 + a * eta))
    np.testing.assert_allclose(mmds.mirror_descent_search_update(pi, q, step_size=eta, regularization=a),
                               expected / expected.sum(), rtol=1e-6)
    # With fixed values its fixed point is the logit response softmax(q / alpha) (times the magnet).
    qre = jax.nn.softmax(q / a)
    np.testing.assert_allclose(mmds.mirror_descent_search_update(qre, q, step_size=eta, regularization=a), qre,
                               rtol=1e-6)


def test_repeated_magnetic_search_converges_on_kuhn_poker():
    blueprint = jax.random.dirichlet(jax.random.PRNGKey(1), jnp.ones(2), (kuhn.NUM_INFOSTATES,))
    result = jax.jit(lambda b: mmds.repeated_search(b, kuhn.conditional_q, kuhn.exploitability, num_updates=3000,
                                                    step_size=0.1, regularization=0.05))(blueprint)
    assert result.metric.shape == (3001,)
    assert float(result.metric[-1]) < 0.02 < 0.1 * float(result.metric[0])
    # At the regularised equilibrium each information state plays the logit response to its own values.
    q = kuhn.conditional_q(result.policy)
    np.testing.assert_allclose(result.policy, jax.nn.softmax(q / 0.05, -1), atol=1e-3)
