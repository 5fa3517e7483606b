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


# ---------------------------------------------------------------- preference-conditioned variant

COND = dataclasses.replace(TINY, conditioned=True, preference_concentration=1.0)


def test_conditioned_runs_under_jit_with_finite_metrics():
    trainer = moppo.make_train(COND)
    state, metrics = jax.jit(trainer)(jax.random.PRNGKey(0), moppo.MOPPOHParams())
    assert metrics["loss"].shape == (trainer.num_updates,)
    for name, value in metrics.items():
        assert np.isfinite(np.asarray(value)).all(), name
    assert jax.jit(trainer.evaluate)(state, jax.random.PRNGKey(1))["return"].shape == (COND.eval_episodes, 2)
    with pytest.raises(ConfigError, match=r"MOPPOHParams\.preference: must be None"):
        trainer.init(jax.random.PRNGKey(0), moppo.MOPPOHParams(preference=jnp.array([0.5, 0.5])))


def test_conditioned_preference_is_fixed_within_an_episode_and_resampled_after_reset():
    from rljax.core import rollout as rollout_lib

    comp = moppo.make_components(COND)
    carry = rollout_lib.reset(comp.env, comp.env_params, jax.random.PRNGKey(0), 8)

    def policy(obs, key):
        return jax.random.randint(key, obs.shape[:1], 0, 4), {}

    _, traj = jax.jit(lambda c, k: rollout_lib.rollout(comp.env, comp.env_params, policy, c, k, 40))(
        carry, jax.random.PRNGKey(1))
    w = np.asarray(moppo.observed_preference(traj.obs, 2))  # [T, N, 2]
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert (w >= 0).all()
    done = np.asarray(traj.terminated | traj.truncated)[:-1]  # transition t ends an episode -> w changes at t + 1
    same = np.isclose(w[1:], w[:-1]).all(-1)
    assert done.sum() >= 3 and (~done).sum() >= 3
    assert same[~done].all()  # constant within an episode
    assert not same[done].any()  # resampled after each reset
    # the bootstrap observation of a finished episode carries that episode's w
    np.testing.assert_allclose(moppo.observed_preference(traj.next_obs, 2), w, rtol=1e-6)
    # different envs draw different preferences
    assert not np.isclose(w[0, 0], w[0, 1]).all()


def test_conditioned_advantage_is_scalarised_by_each_transitions_own_preference():
    rng = np.random.default_rng(2)
    comp = moppo.make_components(COND)
    params = moppo.init_params(comp, jax.random.PRNGKey(0))
    w = jnp.asarray(rng.dirichlet(np.ones(2), size=8), jnp.float32)
    obs = moppo.condition(jnp.asarray(rng.integers(0, 5, size=(8, 2)), jnp.float32), w)
    a = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
    pi, value = comp.network.apply(params, obs)
    action = jnp.asarray(rng.integers(0, 4, size=8))
    batch = PPOBatch(obs, action, pi.log_prob(action) + 0.1 * jnp.asarray(rng.normal(size=8), jnp.float32),
                     value, a, value + a)
    hp = moppo.MOPPOHParams()
    _, aux = moppo.moppo_loss(params, comp.network.apply, batch, hp, conditioned=True)
    own = np.array([float(a[i] @ w[i]) for i in range(8)])
    expected, _ = clipped_surrogate(pi.log_prob(action), batch.log_prob, normalize(jnp.asarray(own)), hp.clip_eps)
    np.testing.assert_allclose(aux["policy_loss"], expected, rtol=1e-5)
    # not the scalarisation by any single shared preference
    shared, _ = clipped_surrogate(pi.log_prob(action), batch.log_prob, normalize(a @ w.mean(0)), hp.clip_eps)
    assert not np.isclose(aux["policy_loss"], shared)


def test_evaluate_preferences_shapes_and_errors():
    trainer = moppo.make_train(COND)
    state = trainer.init(jax.random.PRNGKey(0), moppo.MOPPOHParams())
    evaluate_preferences = moppo.make_evaluate_preferences(COND)
    prefs = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    out = evaluate_preferences(state, jax.random.PRNGKey(1), prefs)
    assert out["return"].shape == (3, COND.eval_episodes, 2)
    assert out["length"].shape == (3, COND.eval_episodes)
    assert np.isfinite(np.asarray(out["return"])).all()
    with pytest.raises(ConfigError, match=r"preferences\[1\].*simplex"):
        evaluate_preferences(state, jax.random.PRNGKey(1), [[0.5, 0.5], [0.9, 0.9]])
    with pytest.raises(ConfigError, match=r"preferences\[0\].*expected 2 weights"):
        evaluate_preferences(state, jax.random.PRNGKey(1), [[0.2, 0.3, 0.5]])
    with pytest.raises(ConfigError, match="conditioned"):
        moppo.make_evaluate_preferences(TINY)
