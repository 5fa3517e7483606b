"""STARC distances and the inverses of the MCE and Boltzmann behavioural models on random stochastic MDPs:
the canonicalisation's invariances, the distance's identities and a hand value, policy orderings, and that
each model's reward set is exactly the rewards it maps to the observed policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.core import reward_theory as rt
from rljax.core.config import ConfigError

S, A, GAMMA = 5, 3, 0.9


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def random_mdp(seed=0):
    k_tau, k_r = jax.random.split(jax.random.PRNGKey(seed))
    transitions = jax.random.dirichlet(k_tau, jnp.ones(S), (S, A))
    return transitions, jax.random.normal(k_r, (S, A, S))


def nuisance(seed, transitions, scale=3.0):
    """A random potential shaping plus a random S'-redistribution, both of size ``scale``."""
    k_phi, k_zeta = jax.random.split(jax.random.PRNGKey(100 + seed))
    shaping = rt.potential_shaping(scale * jax.random.normal(k_phi, (S,)), gamma=GAMMA)
    return shaping + rt.redistribution(scale * jax.random.normal(k_zeta, (S, A, S)), transitions)


def test_levelling_removes_shaping_and_redistribution_is_linear_and_idempotent():
    tau, r = random_mdp()
    c = rt.value_adjusted_levelling(r, tau, gamma=GAMMA)
    np.testing.assert_allclose(rt.value_adjusted_levelling(r + nuisance(0, tau), tau, gamma=GAMMA), c, atol=1e-12)
    _, r2 = random_mdp(1)
    np.testing.assert_allclose(rt.value_adjusted_levelling(2.0 * r - r2, tau, gamma=GAMMA),
                               2.0 * c - rt.value_adjusted_levelling(r2, tau, gamma=GAMMA), atol=1e-12)
    # The canonical reward has uniform-policy value 0 everywhere, so levelling it again changes nothing.
    c_as_reward = jnp.broadcast_to(c[..., None], (S, A, S))
    np.testing.assert_allclose(rt.policy_values(c_as_reward, tau, rt.uniform_policy(tau), gamma=GAMMA), 0.0,
                               atol=1e-12)
    np.testing.assert_allclose(rt.value_adjusted_levelling(c_as_reward, tau, gamma=GAMMA), c, atol=1e-12)
    # A redistribution under a *different* tau is not removed.
    tau2, _ = random_mdp(2)
    xi = rt.redistribution(jax.random.normal(jax.random.PRNGKey(3), (S, A, S)), tau2)
    assert float(jnp.abs(rt.value_adjusted_levelling(xi, tau, gamma=GAMMA)).max()) > 0.1


def test_starc_hand_value_on_a_one_state_bandit():
    # One state, three actions: c(R) = R - mean(R) (V^uniform cancels at any gamma). R1 = e_1, R2 = e_2 give
    # unit vectors with inner product -1/2, so d = 0.5 * sqrt(2 + 1) = sqrt(3) / 2.
    tau = jnp.ones((1, 3, 1))
    r1 = jnp.array([1.0, 0.0, 0.0]).reshape(1, 3, 1)
    r2 = jnp.array([0.0, 1.0, 0.0]).reshape(1, 3, 1)
    np.testing.assert_allclose(rt.starc_distance(r1, r2, tau, gamma=0.7), np.sqrt(3) / 2, rtol=1e-12)
    np.testing.assert_allclose(rt.value_adjusted_levelling(r1, tau, gamma=0.7), [[2 / 3, -1 / 3, -1 / 3]], atol=1e-12)


def test_starc_identities_and_metric_axioms():
    tau, r = random_mdp()
    d = lambda x, y: float(rt.starc_distance(x, y, tau, gamma=GAMMA))  # noqa: E731
    assert d(r, r) == 0.0
    assert d(r, 2.5 * r + nuisance(1, tau)) < 1e-12  # positive scaling, shaping, redistribution
    assert abs(d(r, -r) - 1.0) < 1e-12  # opposite orderings
    assert abs(d(r, nuisance(2, tau)) - 0.5) < 1e-12  # a reward indifferent between all policies counts as 0
    assert d(nuisance(3, tau), nuisance(4, tau)) == 0.0
    rewards = [random_mdp(seed)[1] for seed in range(1, 7)]
    for x in rewards:
        for y in rewards:
            assert abs(d(x, y) - d(y, x)) < 1e-12 and 0.0 <= d(x, y) <= 1.0
            for z in rewards[:3]:
                assert d(x, z) <= d(x, y) + d(y, z) + 1e-12


def test_zero_distance_means_the_same_policy_ordering():
    tau, r = random_mdp()
    initial = jnp.full(S, 1.0 / S)
    policies = jax.nn.softmax(3.0 * jax.random.normal(jax.random.PRNGKey(5), (64, S, A)), -1)
    returns = lambda reward: jax.vmap(lambda p: rt.policy_returns(reward, tau, p, initial, gamma=GAMMA))(policies)  # noqa: E731
    j = returns(r)
    # d = 0: the returns are a positive affine function of each other, so every pair is ordered alike.
    j_same = returns(2.5 * r + nuisance(1, tau))
    np.testing.assert_allclose(np.corrcoef(j, j_same)[0, 1], 1.0, atol=1e-12)
    np.testing.assert_allclose(np.polyfit(j, j_same, 1)[0], 2.5, rtol=1e-9)
    # d = 1: every pair is ordered oppositely.
    np.testing.assert_allclose(np.corrcoef(j, returns(-r + nuisance(2, tau)))[0, 1], -1.0, atol=1e-12)
    # 0 < d < 1: some pairs agree and some do not.
    r_other = random_mdp(7)[1]
    assert 0.2 < float(rt.starc_distance(r, r_other, tau, gamma=GAMMA)) < 0.9
    agree = np.sign(j[:, None] - j[None]) == np.sign(returns(r_other)[:, None] - returns(r_other)[None])
    assert 0.2 < agree.mean() < 0.95


def test_soft_q_satisfies_the_soft_bellman_equation_and_mce_ignores_shaping():
    tau, r = random_mdp()
    alpha = 0.5
    q = rt.soft_q_values(r, tau, gamma=GAMMA, alpha=alpha)
    v = alpha * jax.nn.logsumexp(q / alpha, -1)
    np.testing.assert_allclose(q, rt.expected_reward(r, tau) + GAMMA * tau @ v, atol=1e-12)
    pi = rt.mce_policy(r, tau, gamma=GAMMA, alpha=alpha)
    np.testing.assert_allclose(pi, jnp.exp((q - v[:, None]) / alpha), atol=1e-12)
    np.testing.assert_allclose(rt.mce_policy(r + nuisance(0, tau), tau, gamma=GAMMA, alpha=alpha), pi, atol=1e-10)
    # Boltzmann: Q* is the hard fixed point, and the policy ignores shaping too.
    q_star = rt.optimal_q_values(r, tau, gamma=GAMMA)
    np.testing.assert_allclose(q_star, rt.expected_reward(r, tau) + GAMMA * tau @ q_star.max(-1), atol=1e-12)
    np.testing.assert_allclose(rt.boltzmann_policy(r + nuisance(0, tau), tau, gamma=GAMMA, beta=2.0),
                               rt.boltzmann_policy(r, tau, gamma=GAMMA, beta=2.0), atol=1e-10)


@pytest.mark.parametrize("model", ["mce", "boltzmann"])
def test_each_models_reward_set_maps_to_the_policy_and_contains_the_true_reward(model):
    tau, r = random_mdp()
    temp = 0.7
    if model == "mce":
        forward = lambda reward: rt.mce_policy(reward, tau, gamma=GAMMA, alpha=temp)  # noqa: E731
        inverse = lambda pi, **kw: rt.mce_rewards(pi, tau, gamma=GAMMA, alpha=temp, **kw)  # noqa: E731
        q = rt.soft_q_values(r, tau, gamma=GAMMA, alpha=temp)
        # alpha log pi = Q - V = E R + gamma E V(S') - V(s): R is shaped by the potential -V.
        true_potential = -temp * jax.nn.logsumexp(q / temp, -1)
    else:
        forward = lambda reward: rt.boltzmann_policy(reward, tau, gamma=GAMMA, beta=temp)  # noqa: E731
        inverse = lambda pi, **kw: rt.boltzmann_rewards(pi, tau, gamma=GAMMA, beta=temp, **kw)  # noqa: E731
        q = rt.optimal_q_values(r, tau, gamma=GAMMA)
        # Q* = log pi / beta + k(s), and the set's Q* is log pi / beta - Phi(s).
        true_potential = -(q - jnp.log(forward(r)) / temp)[:, 0]
    pi = forward(r)
    # R lies in the set: its mean under tau is the set's base plus shaping, and the rest is a redistribution.
    without_redistribution = inverse(pi, potential=true_potential, zeta=jnp.zeros_like(r))
    np.testing.assert_allclose(rt.expected_reward(without_redistribution, tau), rt.expected_reward(r, tau), atol=1e-9)
    np.testing.assert_allclose(inverse(pi, potential=true_potential, zeta=r - without_redistribution), r, atol=1e-9)
    for seed in range(3):
        k_phi, k_zeta = jax.random.split(jax.random.PRNGKey(seed))
        other = inverse(pi, potential=10.0 * jax.random.normal(k_phi, (S,)),
                        zeta=10.0 * jax.random.normal(k_zeta, (S, A, S)))
        np.testing.assert_allclose(forward(other), pi, atol=1e-9)
        assert float(rt.starc_distance(r, other, tau, gamma=GAMMA)) < 1e-9


def test_temperature_misspecification_is_harmless_but_a_small_discount_error_is_not():
    tau, r = random_mdp()
    pi = rt.mce_policy(r, tau, gamma=GAMMA, alpha=1.0)
    key_phi, key_zeta = jax.random.split(jax.random.PRNGKey(9))
    phi, zeta = jax.random.normal(key_phi, (S,)), jax.random.normal(key_zeta, (S, A, S))
    # Wrong temperature: every reward the learner can return is a positive multiple of a shaped R.
    for alpha in (0.25, 4.0):
        for scale in (1.0, 1e4):
            wrong_alpha = rt.mce_rewards(pi, tau, gamma=GAMMA, alpha=alpha, potential=scale * phi, zeta=scale * zeta)
            assert float(rt.starc_distance(r, wrong_alpha, tau, gamma=GAMMA)) < 1e-9
    # Discount off by 0.001: a large potential leaves (gamma' - gamma) Phi(s') behind, which dominates R.
    # Choosing Phi's sign so that its levelled direction does not agree with R's puts d at >= 0.5 sqrt(2).
    gamma_wrong = GAMMA + 1e-3
    leftover = jnp.broadcast_to(phi[None, None, :], (S, A, S))
    sign = -jnp.sign(jnp.vdot(rt.value_adjusted_levelling(r, tau, gamma=GAMMA),
                              rt.value_adjusted_levelling(leftover, tau, gamma=GAMMA)))
    for potential, expected in ((0.0 * phi, 0.0), (sign * 1e7 * phi, 0.5 * np.sqrt(2))):
        inferred = rt.mce_rewards(pi, tau, gamma=gamma_wrong, alpha=1.0, potential=potential, zeta=0.0 * zeta)
        np.testing.assert_allclose(rt.mce_policy(inferred, tau, gamma=gamma_wrong, alpha=1.0), pi, atol=1e-8)
        d = float(rt.starc_distance(r, inferred, tau, gamma=GAMMA))
        assert d >= expected - 1e-3, (d, expected)
    assert d < 1.0


def test_shape_errors_name_the_field():
    tau, r = random_mdp()
    with pytest.raises(ConfigError, match=r"transitions: expected shape \[S, A, S\]"):
        rt.value_adjusted_levelling(r, tau[:, :, :2], gamma=GAMMA)
    with pytest.raises(ConfigError, match="reward: expected shape"):
        rt.starc_distance(r, r[:, :2], tau, gamma=GAMMA)
