"""Tiny-Hanabi-style common-payoff tables (value, action values, the optimum) and the mds-common-payoff experiment."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import tiny_hanabi
from experiments.__main__ import main as cli


def random_policy(seed, cards=2, actions=3):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return (jax.random.dirichlet(k1, jnp.ones(actions), (cards,)),
            jax.random.dirichlet(k2, jnp.ones(actions), (cards, actions)))


def test_value_and_action_values_agree():
    payoff = tiny_hanabi.random_game(jax.random.PRNGKey(0))
    policy = random_policy(1)
    q1, q2 = tiny_hanabi.action_values(payoff, policy)
    np.testing.assert_allclose((policy[0] * q1).sum(-1).mean(), tiny_hanabi.value(payoff, policy), rtol=1e-6)
    # Player 2's values, weighted by how often each (card, action of player 1) occurs, give the value too.
    p_a1 = policy[0].mean(0)  # P(a1) under the uniform card prior
    np.testing.assert_allclose((p_a1[None, :, None] * policy[1] * q2).sum() / 2, tiny_hanabi.value(payoff, policy),
                               rtol=1e-6)


def test_a_signalling_game_by_hand():
    # One card each way is irrelevant; two cards for player 1, who must signal its card with its action: payoff 10
    # when player 2's action equals player 1's card, else 0. The optimum signals perfectly (10); a uniform
    # player 1 leaves player 2 guessing (5).
    payoff = np.zeros((2, 1, 2, 2))
    for c1 in range(2):
        payoff[c1, 0, :, c1] = 10.0
    payoff = jnp.asarray(payoff)
    np.testing.assert_allclose(tiny_hanabi.optimal_value(payoff), 10.0)
    uniform = (jnp.full((2, 2), 0.5), jnp.full((1, 2, 2), 0.5))
    np.testing.assert_allclose(tiny_hanabi.value(payoff, uniform), 5.0)
    _, q2 = tiny_hanabi.action_values(payoff, uniform)
    np.testing.assert_allclose(q2, 5.0)  # no signal, no information


def test_quick_run_and_its_claims(tmp_path):
    out = tmp_path / "mds"
    assert cli(["mds-common-payoff", "--quick", "--no-progress", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert all(claim["holds"] for claim in result["claims"].values()), result["claims"]
    assert result["payoff"]["final"]["mean"] > result["payoff"]["blueprint"]["mean"]
    assert result["payoff"]["final"]["mean"] <= result["payoff"]["optimum"]["mean"] + 1e-5
    with pytest.raises(SystemExit, match="--set games / num_updates"):
        cli(["mds-common-payoff", "--set", "step_size=0", "--out", str(tmp_path / "x")])
