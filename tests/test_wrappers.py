import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import wrappers
from rljax.core import rollout


def test_episode_statistics_on_truncation_probe():
    env, params = envs.make("probe/truncation")  # reward 1, episodes of 5 steps
    env = wrappers.EpisodeStatistics(env)
    carry = rollout.reset(env, params, jax.random.PRNGKey(0), 3)
    policy = lambda obs, k: (jnp.zeros(obs.shape[0], jnp.int32), {})  # noqa: E731
    _, traj = rollout.rollout(env, params, policy, carry, jax.random.PRNGKey(1), 12)
    done_steps = np.where(np.asarray(traj.info["returned_episode"][:, 0]))[0]
    np.testing.assert_array_equal(done_steps, [4, 9])
    np.testing.assert_allclose(traj.info["returned_episode_return"][4:, 0], 5.0)
    np.testing.assert_allclose(traj.info["returned_episode_length"][:4, 0], 0)
    np.testing.assert_allclose(traj.info["returned_episode_length"][4:, 0], 5)


def test_episode_statistics_with_vector_rewards():
    env, params = envs.make("probe/vector-reward")
    env = wrappers.EpisodeStatistics(env)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert state.episode_return.shape == (2,)
    _, state, reward, _, _, info = env.step(jax.random.PRNGKey(0), state, 0, params)
    np.testing.assert_allclose(info["returned_episode_return"], reward)


def test_normalize_observation_pools_moments_over_the_env_axis():
    env, params = envs.make("gymnax/CartPole-v1")
    raw = rollout.reset(env, params, jax.random.PRNGKey(0), 256)
    wrapped = wrappers.NormalizeObservation(env, axis_name=rollout.ENV_AXIS)
    carry = rollout.reset(wrapped, params, jax.random.PRNGKey(0), 256)
    stats = carry.env_state.obs_stats
    # Every env holds the same statistics: the batch moments merged with the 1e-4 prior.
    np.testing.assert_allclose(stats.mean[0], stats.mean[-1])
    batch_mean, batch_var = np.asarray(raw.obs).mean(0), np.asarray(raw.obs).var(0)
    count = 1e-4 + 256
    expected_mean = batch_mean * 256 / count
    expected_var = (1.0 * 1e-4 + batch_var * 256 + batch_mean**2 * 1e-4 * 256 / count) / count
    np.testing.assert_allclose(stats.mean[0], expected_mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.var[0], expected_var, rtol=1e-4)
    np.testing.assert_allclose(carry.obs, (raw.obs - expected_mean) / np.sqrt(expected_var + 1e-8), rtol=1e-3, atol=1e-4)


def test_running_mean_std_merge_equals_moments_of_concatenation():
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    stats = wrappers.RunningMeanStd(jnp.asarray(x[:20].mean(0)), jnp.asarray(x[:20].var(0)), jnp.asarray(20.0))
    stats = stats.update(jnp.asarray(x[20:].mean(0)), jnp.asarray(x[20:].var(0)), jnp.asarray(30.0))
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.var, x.var(0), rtol=1e-5)


def test_frozen_statistics_do_not_move():
    env, params = envs.make("gymnax/CartPole-v1")
    env = wrappers.NormalizeObservation(env, update_statistics=False)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    _, state2, *_ = env.step(jax.random.PRNGKey(1), state, 0, params)
    np.testing.assert_array_equal(state.obs_stats.mean, state2.obs_stats.mean)


def test_clip_and_rescale_action():
    env, params = envs.make("gymnax/Pendulum-v1")  # torque in [-2, 2]
    clipped = wrappers.ClipAction(env)
    rescaled = wrappers.RescaleAction(env)
    assert float(rescaled.action_space(params).high) == 1.0
    key = jax.random.PRNGKey(0)
    obs, state = env.reset(key, params)
    r_big = clipped.step(key, state, jnp.array([10.0]), params)[2]
    r_max = env.step(key, state, jnp.array([2.0]), params)[2]
    r_half = rescaled.step(key, state, jnp.array([0.5]), params)[2]  # 0.5 in [-1,1] -> 1.0 in [-2,2]
    r_one = env.step(key, state, jnp.array([1.0]), params)[2]
    assert float(r_big) == float(r_max) and float(r_half) == float(r_one)


def test_scalarize_reward():
    env, params = envs.make("probe/vector-reward")
    scalar = wrappers.ScalarizeReward(env, [0.25, 0.75])
    assert envs.reward_shape(scalar) == ()
    obs, state = scalar.reset(jax.random.PRNGKey(0), params)
    _, _, reward, _, _, info = scalar.step(jax.random.PRNGKey(0), state, 0, params)
    np.testing.assert_allclose(reward, 0.25 * obs[0] + 0.75)
    np.testing.assert_allclose(info["vector_reward"], [obs[0], 1.0])
    with pytest.raises(ValueError, match=r"weights have shape \(3,\)"):
        wrappers.ScalarizeReward(env, [1.0, 1.0, 1.0])


def test_normalize_reward_divides_by_the_std_of_the_discounted_return():
    env, params = envs.make("probe/truncation")  # reward 1 every step, episodes of 5
    gamma = 0.5
    wrapped = wrappers.NormalizeReward(wrappers.EpisodeStatistics(env), gamma, axis_name=rollout.ENV_AXIS)
    carry = rollout.reset(wrapped, params, jax.random.PRNGKey(0), 4)
    policy = lambda obs, k: (jnp.zeros(obs.shape[0], jnp.int32), {})  # noqa: E731
    _, traj = rollout.rollout(wrapped, params, policy, carry, jax.random.PRNGKey(1), 5)
    # All envs see the same returns 1, 1.5, 1.75, ...: pooled batch variance 0, so the merged
    # variance after t steps is the (prior 1e-4 weighted) variance of the returns so far.
    returns = np.array([1.0, 1.5, 1.75, 1.875, 1.9375])
    stats = wrappers.RunningMeanStd(jnp.zeros(()), jnp.ones(()), jnp.asarray(1e-4))
    for t, g in enumerate(returns):
        stats = stats.update(jnp.asarray(g), jnp.zeros(()), jnp.asarray(4.0))
        np.testing.assert_allclose(traj.reward[t], 1.0 / np.sqrt(float(stats.var) + 1e-8), rtol=1e-5)
    # EpisodeStatistics inside the wrapper reports the raw return of the finished episode
    np.testing.assert_allclose(traj.info["returned_episode_return"][4], 5.0)


def test_flatten_observation_flattens_obs_space_and_final_observation():
    env, params = envs.make("gymnax/Breakout-MinAtar")
    flat = wrappers.FlattenObservation(env)
    assert envs.observation_shape(flat, params) == (400,)
    obs, state = flat.reset(jax.random.PRNGKey(0), params)
    inner_obs, _ = env.reset(jax.random.PRNGKey(0), params)
    np.testing.assert_array_equal(np.asarray(obs), np.asarray(inner_obs).reshape(-1))
    obs, state, _, _, _, info = flat.step(jax.random.PRNGKey(1), state, 0, params)
    assert obs.shape == (400,) and info["final_observation"].shape == (400,)
