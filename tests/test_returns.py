"""GAE and lambda-returns against rlax, episode by episode.

rlax's estimators know no truncation: they assume one episode per sequence. So
we cut random trajectories with mixed terminations and truncations at every
episode end and run rlax on each piece, with the bootstrap value of a truncated
piece being V(final observation). Our estimators must match on the whole.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from rljax.core.returns import gae, lambda_returns

T, N, GAMMA, LAMBDA = 40, 5, 0.97, 0.9


def random_trajectory(seed):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N)).astype(np.float32)
    values = rng.normal(size=(T + 1, N)).astype(np.float32)  # V(obs_t), and V(obs_T) at the end
    ends = rng.random((T, N))
    terminated = ends < 0.1
    truncated = (ends >= 0.1) & (ends < 0.2)
    final_obs_values = rng.normal(size=(T, N)).astype(np.float32)  # V(pre-reset obs) at episode ends
    done = terminated | truncated
    next_values = np.where(done, final_obs_values, values[1:])
    assert terminated.any() and truncated.any()
    return rewards, values[:-1], next_values, terminated, truncated


def episodes(done_column):
    start = 0
    for t in range(T):
        if done_column[t] or t == T - 1:
            yield start, t + 1
            start = t + 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_rlax_per_episode(seed):
    rewards, values, next_values, terminated, truncated = random_trajectory(seed)
    advantages, targets = gae(
        jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(next_values),
        jnp.asarray(terminated), jnp.asarray(truncated), GAMMA, LAMBDA,
    )
    for n in range(N):
        for s, e in episodes(terminated[:, n] | truncated[:, n]):
            discount = GAMMA * (1.0 - terminated[s:e, n].astype(np.float32))
            v = np.concatenate([values[s:e, n], next_values[e - 1 : e, n]])
            expected = rlax.truncated_generalized_advantage_estimation(rewards[s:e, n], discount, LAMBDA, v)
            np.testing.assert_allclose(advantages[s:e, n], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, advantages + values, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lambda_returns_match_rlax_per_episode(seed):
    rewards, values, next_values, terminated, truncated = random_trajectory(seed)
    returns = lambda_returns(
        jnp.asarray(rewards), jnp.asarray(next_values), jnp.asarray(terminated), jnp.asarray(truncated), GAMMA, LAMBDA
    )
    for n in range(N):
        for s, e in episodes(terminated[:, n] | truncated[:, n]):
            discount = GAMMA * (1.0 - terminated[s:e, n].astype(np.float32))
            expected = rlax.lambda_returns(rewards[s:e, n], discount, next_values[s:e, n], LAMBDA)
            np.testing.assert_allclose(returns[s:e, n], expected, rtol=1e-5, atol=1e-5)


def test_lambda_return_equals_gae_plus_value():
    rewards, values, next_values, terminated, truncated = random_trajectory(7)
    args = [jnp.asarray(a) for a in (terminated, truncated)]
    _, targets = gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(next_values), *args, GAMMA, LAMBDA)
    returns = lambda_returns(jnp.asarray(rewards), jnp.asarray(next_values), *args, GAMMA, LAMBDA)
    np.testing.assert_allclose(targets, returns, rtol=1e-4, atol=1e-4)


def test_truncation_bootstraps_and_termination_does_not():
    # One step, reward 1, next value 10: truncated -> 1 + gamma * 10; terminated -> 1.
    r, v, nv = jnp.ones((1, 2)), jnp.zeros((1, 2)), jnp.full((1, 2), 10.0)
    term = jnp.array([[True, False]])
    trunc = jnp.array([[False, True]])
    adv, _ = gae(r, v, nv, term, trunc, 0.9, 0.95)
    np.testing.assert_allclose(adv, [[1.0, 1.0 + 0.9 * 10.0]])


def test_vector_rewards_broadcast_over_objectives():
    rewards, values, next_values, terminated, truncated = random_trajectory(3)
    stack = lambda x: jnp.stack([jnp.asarray(x), 2 * jnp.asarray(x)], axis=-1)  # noqa: E731
    adv_vec, _ = gae(stack(rewards), stack(values), stack(next_values), jnp.asarray(terminated), jnp.asarray(truncated), GAMMA, LAMBDA)
    adv, _ = gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(next_values), jnp.asarray(terminated), jnp.asarray(truncated), GAMMA, LAMBDA)
    assert adv_vec.shape == (T, N, 2)
    np.testing.assert_allclose(adv_vec[..., 0], adv, rtol=1e-6)
    np.testing.assert_allclose(adv_vec[..., 1], 2 * adv, rtol=1e-5, atol=1e-5)
