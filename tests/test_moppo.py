"""MOPPO: per-objective GAE, the scalarised advantage, preference checks, jit + vmap over preferences."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.agents import moppo
from rljax.core.config import ConfigError
from rljax.core.returns import gae
from rljax.losses.policy_gradient import PPOBatch, clipped_surrogate, normalize

TINY = moppo.MOPPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 3, update_epochs=2,
                         num_minibatches=2, hidden_sizes=(16, 16), eval_episodes=2, reward_scale=(0.01, 0.05))


def test_vector_gae_equals_scalar_gae_per_objective():
    rng = np.random.default_rng(0)
    t, n, k = 12, 3, 2
    rewards, values, next_values = (jnp.asarray(rng.normal(size=(t, n, k)), jnp.float32) for _ in range(3))
    terminated = jnp.asarray(rng.random((t, n)) < 0.15)
    truncated = jnp.asarray(rng.random((t, n)) < 0.1) & ~terminated
    adv, target = gae(rewards, values, next_values, terminated, truncated, 0.97, 0.9)
    assert adv.shape == (t, n, k)
    for j in range(k):
        a, g = gae(rewards[..., j], values[..., j], next_values[..., j], terminated, truncated, 0.97, 0.9)
        np.testing.assert_allclose(adv[..., j], a, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(target[..., j], g, rtol=1e-6, atol=1e-6)


def test_scalarised_advantage_is_w_dot_a_and_feeds_the_surrogate():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
    w = jnp.array([0.3, 0.7])
    np.testing.assert_allclose(moppo.scalarize(a, w), 0.3 * a[:, 0] + 0.7 * a[:, 1], rtol=1e-6)

    # moppo_loss's policy term is PPO-clip on normalise(w . A)
    comp = moppo.make_components(TINY)
    params = moppo.init_params(comp, jax.random.PRNGKey(0))
    obs = jnp.asarray(rng.integers(0, 5, size=(8, 2)), jnp.float32)
    pi, value = comp.network.apply(params, obs)
    action = jnp.asarray(rng.integers(0, 4, size=8))
    batch = PPOBatch(obs, action, pi.log_prob(action) + 0.1 * jnp.asarray(rng.normal(size=8), jnp.float32),
                     value, a, value + a)
    hp = moppo.MOPPOHParams(preference=w)
    _, aux = moppo.moppo_loss(params, comp.network.apply, batch, hp)
    expected, _ = clipped_surrogate(pi.log_prob(action), batch.log_prob, normalize(a @ w), hp.clip_eps)
    np.testing.assert_allclose(aux["policy_loss"], expected, rtol=1e-5)


def test_moppo_runs_under_jit_and_vmap_over_preferences():
    trainer = moppo.make_train(TINY)
    hp = moppo.preference_hparams([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    states, metrics = jax.jit(jax.vmap(trainer))(keys, hp)
    assert metrics["loss"].shape == (3, trainer.num_updates)
    for name, value in metrics.items():
        assert np.isfinite(np.asarray(value)).all(), name
    np.testing.assert_allclose(states.hparams.preference, hp.preference)
    returns = jax.jit(jax.vmap(trainer.evaluate))(states, keys)["return"]
    assert returns.shape == (3, TINY.eval_episodes, 2)  # per-objective undiscounted returns
    assert (np.asarray(returns[..., 1]) <= -1).all() and (np.asarray(returns[..., 0]) >= 0).all()


def test_preference_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"MOPPOHParams\.preference.*expected 2 weights"):
        moppo.preference_hparams([[0.2, 0.3, 0.5]], num_objectives=2)
    with pytest.raises(ConfigError, match=r"MOPPOHParams\.preference\[1\].*simplex"):
        moppo.preference_hparams([[0.5, 0.5], [0.9, 0.9]])
    with pytest.raises(ConfigError, match=r"MOPPOHParams\.preference\[0\].*simplex"):
        moppo.preference_hparams([[1.5, -0.5]])
    trainer = moppo.make_train(TINY)
    with pytest.raises(ConfigError, match=r"MOPPOHParams\.preference.*expected 2 weights"):
        trainer.init(jax.random.PRNGKey(0), moppo.MOPPOHParams(preference=jnp.array([1.0, 0.0, 0.0])))
    with pytest.raises(ConfigError, match=r"MOPPOHParams\.preference.*simplex"):
        trainer.init(jax.random.PRNGKey(0), moppo.MOPPOHParams(preference=jnp.array([0.7, 0.7])))
    with pytest.raises(ConfigError, match=r"MOPPOHParams\.preference: required"):
        trainer.init(jax.random.PRNGKey(0), moppo.MOPPOHParams())


def test_config_errors():
    with pytest.raises(ConfigError, match="reward_scale: expected 2 multipliers"):
        moppo.make_components(dataclasses.replace(TINY, reward_scale=(1.0,)))
    with pytest.raises(ConfigError, match="expected vector rewards"):
        moppo.make_components(dataclasses.replace(TINY, env="gymnax/CartPole-v1", reward_scale=None))
    with pytest.raises(ConfigError, match="does not divide"):
        moppo.MOPPOConfig(num_envs=3, num_steps=5, num_minibatches=4)
