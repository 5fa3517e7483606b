"""toy/pointmass: dynamics, reward, termination and truncation checked by hand; the optimal return; jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.pointmass import PointMassState
from rljax.core import dataset as dataset_lib
from rljax.core import rollout as rollout_lib
from rljax.core.evaluation import episode_returns

GOAL = np.array([0.5, 0.5])


@pytest.fixture(scope="module")
def env_params():
    return envs.make("toy/pointmass")


def state_at(x, y, time=0):
    return PointMassState(pos=jnp.array([x, y], jnp.float32), time=jnp.asarray(time, jnp.int32))


def step(env, params, state, action, key=0):
    return env.step(jax.random.PRNGKey(key), state, jnp.asarray(action, jnp.float32), params)


def test_registered_with_spaces(env_params):
    env, params = env_params
    assert "toy/pointmass" in envs.names("toy")
    assert envs.observation_shape(env, params) == (2,) and envs.action_dim(env, params) == 2
    assert not envs.is_discrete(env, params) and envs.max_episode_steps(env, params) == 50
    _, p = envs.make("toy/pointmass", start_perturbation=0.3, max_steps_in_episode=7)
    assert p.start_perturbation == 0.3 and p.max_steps_in_episode == 7


def test_move_reward_and_action_projection(env_params):
    env, params = env_params
    # A unit action moves step_size = 0.1; reward is minus the distance after the move, in steps (/ 0.1).
    obs, state, reward, terminated, truncated, _ = step(env, params, state_at(0.0, 0.0), [1.0, 0.0])
    np.testing.assert_allclose(obs, [0.1, 0.0], atol=1e-7)
    np.testing.assert_allclose(reward, -np.sqrt(0.4**2 + 0.5**2) / 0.1, rtol=1e-6)
    assert not terminated and not truncated and int(state.time) == 1
    # (1, 1) has norm sqrt 2: projected onto the unit disk, it moves 0.1 along the diagonal.
    obs, *_ = step(env, params, state_at(0.0, 0.0), [1.0, 1.0])
    np.testing.assert_allclose(obs, [0.1 / np.sqrt(2)] * 2, atol=1e-7)
    # Inside the unit disk the action is not rescaled.
    obs, *_ = step(env, params, state_at(0.0, 0.0), [0.3, -0.4])
    np.testing.assert_allclose(obs, [0.03, -0.04], atol=1e-7)


def test_walls_clip_the_position(env_params):
    env, params = env_params
    obs, _, reward, *_ = step(env, params, state_at(0.97, -0.99), [1.0, -1.0])
    np.testing.assert_allclose(obs, [1.0, -1.0], atol=1e-7)
    np.testing.assert_allclose(reward, -np.sqrt(0.5**2 + 1.5**2) / 0.1, rtol=1e-6)


def test_reaching_the_goal_terminates_and_auto_resets(env_params):
    env, params = env_params
    obs, state, reward, terminated, truncated, info = step(env, params, state_at(0.5, 0.33, time=3), [0.0, 1.0])
    np.testing.assert_allclose(info["final_observation"], [0.5, 0.43], atol=1e-6)
    np.testing.assert_allclose(reward, -0.7, atol=1e-5)
    assert terminated and not truncated
    # The returned observation already belongs to the next episode: a start state, time 0.
    assert np.all(np.abs(np.asarray(obs) - [-0.5, -0.5]) <= params.start_spread + 1e-6) and int(state.time) == 0


def test_time_limit_truncates_but_never_together_with_termination(env_params):
    env, params = env_params
    # Step 50 away from the goal: truncated only.
    _, _, _, terminated, truncated, _ = step(env, params, state_at(-0.5, -0.5, time=49), [0.0, 0.0])
    assert truncated and not terminated
    # Step 49: neither.
    _, _, _, terminated, truncated, _ = step(env, params, state_at(-0.5, -0.5, time=48), [0.0, 0.0])
    assert not truncated and not terminated
    # Reaching the goal on the last allowed step: terminated, not truncated.
    _, _, _, terminated, truncated, _ = step(env, params, state_at(0.5, 0.35, time=49), [0.0, 1.0])
    assert terminated and not truncated


def test_start_states_and_perpendicular_perturbation(env_params):
    env, params = env_params
    keys = jax.random.split(jax.random.PRNGKey(0), 512)
    obs, _ = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    assert np.all(np.abs(np.asarray(obs) + 0.5) <= params.start_spread + 1e-6)
    # Without spread, a perturbation c puts the start at distance c from (-0.5, -0.5),
    # perpendicular to the start-goal diagonal, on both sides.
    p = params.replace(start_spread=0.0, start_perturbation=0.3)
    obs, _ = jax.vmap(env.reset, in_axes=(0, None))(keys, p)
    shift = np.asarray(obs) + 0.5
    np.testing.assert_allclose(np.linalg.norm(shift, axis=1), 0.3, rtol=1e-5)
    np.testing.assert_allclose(shift @ np.array([1.0, 1.0]), 0.0, atol=1e-6)  # orthogonal to the line
    sides = np.sign(shift[:, 0])
    assert 0.3 < (sides > 0).mean() < 0.7


def test_optimal_policy_attains_the_optimal_return(env_params):
    env, params = env_params
    params = params.replace(start_spread=0.0)
    # Distance sqrt 2 = 1.414: 14 steps to within 0.1; return -(1.314 + 1.214 + ... + 0.014) / 0.1.
    d = np.sqrt(2.0)
    expected = -sum(d - k * 0.1 for k in range(1, 15)) / 0.1
    np.testing.assert_allclose(env.optimal_return(np.array([-0.5, -0.5]), params), expected, rtol=1e-9)
    out = episode_returns(env, params, lambda obs, k: env.optimal_action(obs, params), jax.random.PRNGKey(0), 4)
    np.testing.assert_allclose(out["return"], expected, rtol=1e-4)
    np.testing.assert_array_equal(out["length"], 14)
    # Any other policy does worse: half speed, or a detour.
    slow = episode_returns(env, params, lambda obs, k: 0.5 * env.optimal_action(obs, params), jax.random.PRNGKey(0), 4)
    assert np.all(slow["return"] < expected - 10.0)


def test_jit_vmap_rollout_makes_a_valid_dataset(env_params):
    env, params = env_params
    carry = rollout_lib.reset(env, params, jax.random.PRNGKey(0), 8)

    def policy(obs, key):
        noise = 0.5 * jax.random.normal(key, obs.shape)
        return jnp.clip(env.optimal_action(obs, params) * 0.5 + noise, -1.0, 1.0), {}

    run = jax.jit(lambda c, k: rollout_lib.rollout(env, params, policy, c, k, 200))
    _, traj = run(carry, jax.random.PRNGKey(1))
    data = dataset_lib.from_trajectory(traj, {"env": "toy/pointmass"})
    dataset_lib.validate(data)  # chained next_obs, done flags on last rows only
    assert data.num_episodes >= 8 and np.all(data.episode_lengths <= 50)
    assert not np.any(data.terminated & data.truncated) and data.terminated.any()
    np.testing.assert_allclose(data.reward, -np.linalg.norm(data.next_obs - GOAL, axis=1) / 0.1, rtol=1e-5)
