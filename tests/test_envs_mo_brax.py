"""MO-Gymnasium reward vectors on brax halfcheetah and hopper."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs


def one_step(name):
    env, params = envs.make(name)
    key = jax.random.PRNGKey(0)
    action = jax.random.uniform(jax.random.PRNGKey(1), (env.num_actions,), minval=-1.0, maxval=1.0)

    @jax.jit
    def run(key):
        _, state = env.reset(key, params)
        _, next_state, reward, *_ = env.step(key, state, action, params)
        return state, next_state, reward

    return env, action, *run(key)


@pytest.mark.slow  # compiling brax physics takes most of a minute on CPU
def test_mo_halfcheetah_components_sum_to_brax_reward():
    env, action, state, next_state, reward = one_step("mo/halfcheetah")
    assert env.reward_shape == (2,) and env.objectives == ("run", "control")
    np.testing.assert_allclose(reward.sum(), next_state.brax_state.reward, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reward[1], -0.1 * jnp.sum(action**2), rtol=1e-5)


def test_mo_hopper_vectors_by_hand():
    # The formulas on a hand-made state (no physics, so no compile): MO-Gymnasium's v4 definitions.
    from types import SimpleNamespace

    env, _ = envs.make("mo/hopper")
    two_d, _ = envs.make("mo/hopper-2d")
    z0 = float(env.brax_env.sys.init_q[1])
    q = jnp.zeros(6).at[1].set(z0 + 0.05)
    brax_state = SimpleNamespace(metrics={"x_velocity": 0.7, "reward_healthy": 1.0},
                                 pipeline_state=SimpleNamespace(q=q))
    state = SimpleNamespace(brax_state=brax_state)
    action = jnp.array([0.5, -0.5, 1.0])
    np.testing.assert_allclose(env.vector_reward(state, action), [0.7 + 1, 0.5 + 1, -1.5 + 1], rtol=1e-5)
    np.testing.assert_allclose(two_d.vector_reward(state, action), [0.7 + 1 - 1.5e-3, 0.5 + 1 - 1.5e-3], rtol=1e-5)
    assert two_d.reward_shape == (2,) and env.objectives == ("forward", "jump", "energy")


@pytest.mark.slow
def test_mo_hopper_vector_from_the_physics_state():
    env, action, state, next_state, reward = one_step("mo/hopper")
    assert env.reward_shape == (3,)
    before, after = state.brax_state, next_state.brax_state  # one step: no episode end, no auto-reset
    healthy = 1.0  # brax's hopper terminates when unhealthy, so every step pays the healthy reward
    velocity = (after.pipeline_state.x.pos[0, 0] - before.pipeline_state.x.pos[0, 0]) / env.brax_env.dt
    jump = 10.0 * (after.pipeline_state.q[1] - env.brax_env.sys.init_q[1])
    expected = np.array([velocity + healthy, jump + healthy, -np.sum(np.square(action)) + healthy])
    np.testing.assert_allclose(reward, expected, rtol=1e-4, atol=1e-5)
    # The 2-objective variant on the same state: no energy objective, 1e-3 |a|^2 off both.
    two_d, _ = envs.make("mo/hopper-2d")
    np.testing.assert_allclose(
        two_d.vector_reward(next_state, action),
        expected[:2] - 1e-3 * np.sum(np.square(action)), rtol=1e-4, atol=1e-5,
    )
