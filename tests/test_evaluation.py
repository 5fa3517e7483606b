"""rljax.core.evaluation.episode_returns: each env's first episode, in chunks that stop once every episode ended."""

import jax
import jax.numpy as jnp
import numpy as np

import envs
from rljax.core import rollout as rollout_lib
from rljax.core.evaluation import episode_returns

ENV, PARAMS = envs.make("gymnax/CartPole-v1")  # 500-step limit; a random policy falls within ~10-60 steps


def random_act(obs, key):
    return jax.random.bernoulli(key, 0.5, obs.shape[:1]).astype(jnp.int32)


def first_episodes_step_by_step(key, num_episodes):
    """The oracle: a Python loop over all 500 steps with the same keys, accumulating each env's first episode."""
    reset_key, run_key = jax.random.split(key)
    carry = rollout_lib.reset(ENV, PARAMS, reset_key, num_episodes)
    total, length, active = np.zeros(num_episodes), np.zeros(num_episodes, int), np.ones(num_episodes, bool)
    step = jax.jit(lambda c, k: rollout_lib.env_step(ENV, PARAMS, c, random_act(c.obs, jax.random.split(k)[0]),
                                                     jax.random.split(k)[1]))
    for k in jax.random.split(run_key, 500):
        carry, (reward, terminated, truncated, _) = step(carry, k)
        total += active * np.asarray(reward)
        length += active
        active &= ~np.asarray(terminated | truncated)
    return total, length


def test_returns_and_lengths_equal_stepping_through_the_whole_time_limit():
    key = jax.random.PRNGKey(3)
    total, length = first_episodes_step_by_step(key, 6)
    assert 5 < length.max() < 100  # episodes end long before the 500-step limit
    for chunk_steps in (1, 7, 32, 1000):
        out = jax.jit(lambda k: episode_returns(ENV, PARAMS, random_act, k, 6, chunk_steps))(key)
        np.testing.assert_array_equal(out["return"], total)
        np.testing.assert_array_equal(out["length"], length)


def test_chunks_stop_once_every_episode_ended_and_vmap_keeps_each_rows_result():
    calls = []

    def counted_act(obs, key):
        jax.debug.callback(lambda n: calls.append(int(n)), obs.shape[0])
        return random_act(obs, key)

    key = jax.random.PRNGKey(3)
    out = jax.jit(lambda k: episode_returns(ENV, PARAMS, counted_act, k, 6, 16))(key)
    jax.block_until_ready(out)
    longest = int(out["length"].max())
    assert len(calls) == -(-longest // 16) * 16 < 500  # whole chunks up to the longest episode, not the limit

    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    batched = jax.jit(jax.vmap(lambda k: episode_returns(ENV, PARAMS, random_act, k, 6, 16)))(keys)
    for i, k in enumerate(keys):  # rows that ended early are unchanged by the chunks run for the others
        alone = jax.jit(lambda k: episode_returns(ENV, PARAMS, random_act, k, 6, 16))(k)
        np.testing.assert_array_equal(batched["return"][i], alone["return"])
        np.testing.assert_array_equal(batched["length"][i], alone["length"])
