"""PARL: the sampled surrogate's expected gradient is the exact hypergradient of G (by enumeration on a tiny
MDP), the myopic gradient misses the lower-level term, and the pieces (lower level, sampling, scores)."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.agents import parl
from rljax.core import reward_theory as rt
from rljax.core.config import ConfigError

TINY = parl.PARLConfig(num_states=2, num_actions=2, num_features=3, segment_length=1, pairs_per_iteration=4,
                       temperature=0.5, value_iters=300)


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def tiny_task():
    return parl.random_task(TINY, jax.random.PRNGKey(0))


def test_expected_surrogate_gradient_is_the_exact_hypergradient():
    # One-step segments on 2 states x 2 actions: 16 pair outcomes y = (s1, a1, s2, a2), two labels each.
    task = tiny_task()
    nu = jnp.array([0.3, -0.2, 0.5])
    outcomes = jnp.asarray(list(itertools.product(range(2), repeat=4)))  # [16, 4]
    states = outcomes[:, [0, 2]].reshape(16, 2, 1)
    actions = outcomes[:, [1, 3]].reshape(16, 2, 1)
    true_reward = task.features @ task.true_weights
    p_first = jax.nn.sigmoid(true_reward[states[:, 0, 0], actions[:, 0, 0]] - true_reward[states[:, 1, 0], actions[:, 1, 0]])

    def rho(v):  # probability of each outcome under pi*(v)
        pi = jnp.exp(parl.lower_level_log_policy(TINY, task, v))
        return (task.initial[states] * pi[states, actions]).prod((1, 2))

    def G(v):  # exact upper objective
        reward = task.features @ v
        logits = reward[states[:, 0, 0], actions[:, 0, 0]] - reward[states[:, 1, 0], actions[:, 1, 0]]
        return (rho(v) * (p_first * jax.nn.log_sigmoid(logits) + (1 - p_first) * jax.nn.log_sigmoid(-logits))).sum()

    def expected_gradient(config):
        def grad_for(label):
            return jax.vmap(lambda s, a: jax.grad(lambda v: parl.upper_surrogate(
                config, task, v, s[None], a[None], jnp.asarray([label])))(nu))(states, actions)
        weights = rho(nu)
        return (weights[:, None] * (p_first[:, None] * grad_for(1.0) + (1 - p_first[:, None]) * grad_for(0.0))).sum(0)

    exact = jax.grad(G)(nu)
    np.testing.assert_allclose(expected_gradient(TINY), exact, rtol=1e-8, atol=1e-10)
    myopic = expected_gradient(dataclasses.replace(TINY, hypergradient="myopic"))
    assert float(jnp.abs(myopic - exact).max()) > 1e-2  # it drops the data distribution's dependence on nu
    # The leave-one-out baseline keeps the estimator unbiased only in expectation over batches, so check it
    # on a batch of identical draws: the weights are then zero and it reduces to the myopic gradient.
    base = dataclasses.replace(TINY, score_baseline=True)
    s, a = jnp.repeat(states[:1], 4, 0), jnp.repeat(actions[:1], 4, 0)
    np.testing.assert_allclose(jax.grad(lambda v: parl.upper_surrogate(base, task, v, s, a, jnp.ones(4)))(nu),
                               jax.grad(lambda v: parl.upper_surrogate(
                                   dataclasses.replace(TINY, hypergradient="myopic"), task, v, s, a, jnp.ones(4)))(nu),
                               atol=1e-12)


def test_lower_level_is_the_mce_policy_and_scores_are_scaled():
    config = dataclasses.replace(parl.PARLConfig(), num_states=6, value_iters=300)
    task = parl.random_task(config, jax.random.PRNGKey(1))
    nu = jax.random.normal(jax.random.PRNGKey(2), (config.num_features,))
    log_pi = parl.lower_level_log_policy(config, task, nu)
    reward = jnp.broadcast_to((task.features @ nu)[..., None], task.transitions.shape)
    np.testing.assert_allclose(jnp.exp(log_pi), rt.mce_policy(reward, task.transitions, gamma=config.gamma,
                                                              alpha=config.temperature, num_iters=300), atol=1e-12)
    oracle = parl.lower_level_log_policy(config, task, task.true_weights)
    np.testing.assert_allclose(parl.scaled_return(config, task, oracle), 1.0, rtol=1e-12)
    uniform = jnp.log(jnp.full((6, config.num_actions), 1.0 / config.num_actions))
    np.testing.assert_allclose(parl.scaled_return(config, task, uniform), 0.0, atol=1e-12)


def test_sampled_segments_follow_the_initial_distribution_policy_and_transitions():
    task = tiny_task()
    log_pi = jnp.log(jnp.array([[0.8, 0.2], [0.3, 0.7]]))
    states, actions = parl.sample_segments(jax.random.PRNGKey(3), log_pi, task, 40_000, 2)
    first = np.zeros((2, 2))
    np.add.at(first, (np.asarray(states[:, 0]), np.asarray(actions[:, 0])), 1)
    np.testing.assert_allclose(first / 40_000, 0.5 * np.exp(log_pi), atol=0.01)
    # s_1 | (s_0, a_0) ~ tau
    sel = (np.asarray(states[:, 0]) == 0) & (np.asarray(actions[:, 0]) == 0)
    np.testing.assert_allclose(np.mean(np.asarray(states[sel, 1]) == 1), task.transitions[0, 0, 1], atol=0.015)


def test_myopic_fit_aligns_the_policy_and_queries_are_counted():
    config = dataclasses.replace(parl.PARLConfig(), num_iterations=60, hypergradient="myopic")
    result = jax.jit(jax.vmap(parl.make_train(config), in_axes=(0, None)))(
        jax.random.split(jax.random.PRNGKey(4), 3), parl.PARLHParams())
    assert result.scaled_return.shape == (3, 61)
    assert float(result.scaled_return[:, -1].min()) > 0.9 > float(result.scaled_return[:, 0].max())
    np.testing.assert_array_equal(result.queries[0, :3], [0, 16, 32])
    by_hand = parl.TrainResult(None, None, jnp.array([[0.1, 0.96, 0.5, 0.97], [0.1, 0.2, 0.3, 0.4]]),
                               jnp.array([[0, 16, 32, 48], [0, 16, 32, 48]]), None)
    np.testing.assert_array_equal(parl.queries_to_reach(by_hand, 0.95), [16, np.inf])


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="PARLConfig.hypergradient"):
        parl.PARLConfig(hypergradient="implicit")
    with pytest.raises(ConfigError, match="PARLConfig.gamma"):
        parl.PARLConfig(gamma=1.0)
    with pytest.raises(ConfigError, match="score_baseline"):
        parl.PARLConfig(score_baseline=True, pairs_per_iteration=1)
