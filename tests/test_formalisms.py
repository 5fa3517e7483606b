"""Formalisms beyond Markov rewards: occupancy measures, the reward-machine product, the max-min optimum by
Frank-Wolfe and by LP, and the LP that decides whether a Markov reward orders a policy set alike."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.core import formalisms as fm
from rljax.core import reward_theory as rt
from rljax.core.config import ConfigError


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def random_mdp(seed=0, num_states=5, num_actions=3):
    k_tau, k_r, k_pi = jax.random.split(jax.random.PRNGKey(seed), 3)
    tau = jax.random.dirichlet(k_tau, jnp.ones(num_states), (num_states, num_actions))
    rewards = jax.random.normal(k_r, (2, num_states, num_actions, num_states))
    policy = jax.random.dirichlet(k_pi, jnp.ones(num_actions), (num_states,))
    return tau, rewards, policy, jnp.full(num_states, 1.0 / num_states)


def corridor(num_cells=5):
    """Left / right along a line of cells; pushing into either wall stays put."""
    tau = np.zeros((num_cells, 2, num_cells))
    for s in range(num_cells):
        tau[s, 0, max(s - 1, 0)] = tau[s, 1, min(s + 1, num_cells - 1)] = 1.0
    return tau


def test_occupancy_gives_policy_returns():
    tau, rewards, policy, initial = random_mdp()
    d = fm.occupancy(tau, policy, initial, gamma=0.9)
    np.testing.assert_allclose(jnp.vdot(d, rewards[0]), rt.policy_returns(rewards[0], tau, policy, initial, gamma=0.9),
                               rtol=1e-12)
    np.testing.assert_allclose(d.sum(), 1.0 / (1 - 0.9), rtol=1e-12)


def test_deterministic_policies_enumerate_every_choice_once():
    policies = fm.deterministic_policies(3, 2)
    assert policies.shape == (8, 3, 2) and np.all(policies.sum(-1) == 1)
    assert len({p.argmax(-1).tobytes() for p in policies}) == 8
    with pytest.raises(ConfigError, match="too many to enumerate"):
        fm.deterministic_policies(30, 2)


def test_reward_machine_a_then_b_on_a_corridor_by_hand_and_by_brute_force():
    # Cells 0..4, A = 0, start 2, B = 4: the best finite-memory policy walks 2 left then 4 right, and the
    # machine pays 1 on entering B after A, at t = 5: value gamma^5. No stationary deterministic policy does it.
    gamma = 0.9
    machine = fm.RewardMachine(next_state=np.array([[0, 1, 0], [1, 1, 2], [2, 2, 2]]),
                               reward=np.array([[0.0, 0, 0], [0, 0, 1], [0, 0, 0]]), initial=0)
    labels = np.array([1, 0, 0, 0, 2])
    tau, reward, start = fm.reward_machine_product(corridor(), labels, machine, np.eye(5)[2])
    q = rt.optimal_q_values(jnp.asarray(reward), jnp.asarray(tau), gamma=gamma)
    np.testing.assert_allclose(start @ q.max(-1), gamma**5, rtol=1e-12)
    values = [float(jnp.vdot(fm.occupancy(tau, p, start, gamma=gamma), reward))
              for p in fm.deterministic_policies(15, 2)[:: 97]]  # a sample of product policies, none better
    assert max(values) <= gamma**5 + 1e-12
    stationary = [float(jnp.vdot(fm.occupancy(tau, fm.stationary_in_product(p, 3), start, gamma=gamma), reward))
                  for p in fm.deterministic_policies(5, 2)]
    assert max(stationary) == 0.0


def test_max_min_by_lp_on_a_bandit_by_hand_and_frank_wolfe_agrees_on_a_random_mdp():
    # One state, two actions, R_1 = [1, 0], R_2 = [0, 1]: max_p min(p, 1 - p) / (1 - gamma) = 0.5 / (1 - gamma).
    tau = np.ones((1, 2, 1))
    rewards = np.array([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 2, 1)
    value, x = fm.max_min_lp(tau, rewards, np.ones(1), gamma=0.8)
    np.testing.assert_allclose(value, 0.5 / 0.2, rtol=1e-9)
    np.testing.assert_allclose(x, [[2.5, 2.5]], rtol=1e-9)
    tau, rewards, _, initial = random_mdp(1)
    exact, _ = fm.max_min_lp(tau, rewards, initial, gamma=0.9)
    result = fm.frank_wolfe_max_min(tau, rewards, initial, gamma=0.9)
    assert exact - 2e-3 * abs(exact) <= float(result.values[-1]) <= exact + 1e-9, (float(result.values[-1]), exact)
    # The recovered policy has the iterate's occupancy.
    np.testing.assert_allclose(fm.occupancy(tau, result.policy, initial, gamma=0.9), result.occupancy, atol=1e-9)


def test_markov_reward_lp_finds_a_reward_for_a_markov_ordering_and_refutes_max_min():
    tau, rewards, _, initial = random_mdp(2)
    policies = list(fm.deterministic_policies(5, 3)[::7]) + list(jax.random.dirichlet(
        jax.random.PRNGKey(3), jnp.ones(3), (40, 5)))
    occ = np.stack([fm.occupancy(tau, p, initial, gamma=0.9) for p in policies])
    markov_values = np.einsum("psat,sat->p", occ, rewards[0])
    found = fm.markov_reward_lp(occ, markov_values)
    assert found.feasible and found.num_constraints > 1000
    j = np.einsum("psat,sat->p", occ, found.reward)
    better, worse = np.nonzero(markov_values[:, None] > markov_values[None] + 1e-9)
    assert np.all(j[better] - j[worse] >= 1 - 1e-7)
    # Bandit max-min: the mixed policy beats both deterministic ones, which no linear score allows.
    tau_b, rewards_b = np.ones((1, 2, 1)), np.array([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 2, 1)
    mixes = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]]])
    occ_b = np.stack([fm.occupancy(tau_b, p, np.ones(1), gamma=0.5) for p in mixes])
    refuted = fm.markov_reward_lp(occ_b, np.einsum("psat,ksat->pk", occ_b, rewards_b).min(-1))
    assert not refuted.feasible and refuted.reward is None
    # The certificate: the mixed policy beats both pure ones, and half of each gap cancels the other.
    np.testing.assert_allclose(refuted.certificate, [0.5, 0.5], atol=1e-9)
    assert refuted.residual <= 1e-12
    with pytest.raises(ConfigError, match="every policy ties"):
        fm.markov_reward_lp(occ_b, np.zeros(3))
