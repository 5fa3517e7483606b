import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from rljax.core import rollout


def test_truncation_probe_truncates_and_auto_resets():
    env, params = envs.make("probe/truncation")
    key = jax.random.PRNGKey(0)
    obs, state = env.reset(key, params)
    flags = []
    for _ in range(params.max_steps_in_episode):
        obs, state, reward, terminated, truncated, info = env.step(key, state, 0, params)
        flags.append((bool(terminated), bool(truncated)))
    assert flags[:-1] == [(False, False)] * 4 and flags[-1] == (False, True)
    assert int(state.time) == 0  # auto-reset after the time limit


def test_discounting_probe_sequence():
    env, params = envs.make("probe/discounting")
    key = jax.random.PRNGKey(1)
    obs, state = env.reset(key, params)
    assert float(obs[0]) == 0.0
    obs, state, r, term, trunc, info = env.step(key, state, 0, params)
    assert (float(obs[0]), float(r), bool(term)) == (1.0, 0.0, False)
    obs, state, r, term, trunc, info = env.step(key, state, 0, params)
    assert (float(info["final_observation"][0]), float(r), bool(term)) == (1.0, 1.0, True)
    assert float(obs[0]) == 0.0  # next episode already started
    np.testing.assert_allclose(env.analytic_value(jnp.array([[0.0], [1.0]]), 0.9), [0.9, 1.0])


def test_observation_and_action_probes_reward_the_right_action():
    env, params = envs.make("probe/reward-from-observation-and-action")
    carry = rollout.reset(env, params, jax.random.PRNGKey(0), 64)
    target = carry.obs[:, 0].astype(jnp.int32)
    _, (right, *_) = rollout.env_step(env, params, carry, target, jax.random.PRNGKey(1))
    _, (wrong, *_) = rollout.env_step(env, params, carry, 1 - target, jax.random.PRNGKey(1))
    assert float(right.min()) == 1.0 and float(wrong.max()) == 0.0
    assert 0 < int(target.sum()) < 64  # both observations occur


def test_vector_reward_probe_has_vector_reward():
    env, params = envs.make("probe/vector-reward")
    assert envs.reward_shape(env) == (2,)
    obs, state = env.reset(jax.random.PRNGKey(3), params)
    _, _, reward, *_ = env.step(jax.random.PRNGKey(3), state, 0, params)
    np.testing.assert_allclose(reward, [obs[0], 1.0])


@pytest.fixture(scope="module")
def brax_fast():
    return envs.make("brax/fast", episode_length=3)


def test_brax_adapter_contract_and_truncation(brax_fast):
    env, params = brax_fast
    assert env.action_space(params).shape == (1,)
    carry = rollout.reset(env, params, jax.random.PRNGKey(0), 2)
    step = jax.jit(lambda c, k: rollout.env_step(env, params, c, jnp.zeros((2, 1)), k))
    truncs = []
    for i in range(3):
        carry, (reward, terminated, truncated, info) = step(carry, jax.random.PRNGKey(i))
        truncs.append(bool(truncated[0]))
        assert reward.shape == (2,) and info["final_observation"].shape == carry.obs.shape
    assert truncs == [False, False, True]
    assert int(carry.env_state.time[0]) == 0


def test_brax_backend_is_selectable():
    env, _ = envs.make("brax/inverted_pendulum", backend="generalized")
    assert env.brax_env.backend == "generalized"
    env, _ = envs.make("brax/inverted_pendulum")
    assert env.brax_env.backend == "positional"
