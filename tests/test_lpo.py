"""LPO / TA-LPO: the drift constraints for any parameters, the zero-drift reduction, the surrogate's gradient,
and the population of lifetimes as one vmapped call."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.agents import lpo, ppo
from rljax.losses.policy_gradient import drift_surrogate, ppo_loss

TINY = lpo.LPOConfig(ppo=ppo.PPOConfig(num_envs=4, num_steps=8, num_minibatches=2, total_timesteps=4 * 8 * 3,
                                       update_epochs=2, eval_episodes=2))


def random_inputs(key, n=4096):
    k1, k2, k3 = jax.random.split(key, 3)
    ratio = jnp.exp(0.7 * jax.random.normal(k1, (n,)))  # r in about (0.1, 10)
    advantage = 3.0 * jax.random.normal(k2, (n,))
    progress = jax.random.uniform(k3, (n,))
    return ratio, advantage, progress


def scaled(params, scale):
    return jax.tree.map(lambda x: scale * x, params)


@pytest.mark.parametrize("temporal", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_drift_is_nonnegative_and_zero_at_ratio_one_for_any_parameters(temporal, seed):
    config = dataclasses.replace(TINY, temporal=temporal, drift_hidden_sizes=(32, 16))
    ratio, advantage, progress = random_inputs(jax.random.PRNGKey(100 + seed))
    for scale in (1.0, 30.0):  # large weights saturate the tanh layers: still no drift at r = 1
        params = scaled(lpo.init_drift(jax.random.PRNGKey(seed), config), scale)
        p = progress if temporal else None
        f = lpo.drift(config, params, ratio, advantage, p)
        assert f.shape == ratio.shape
        assert float(f.min()) >= 0.0
        assert float(f.max()) > 0.0  # not trivially zero
        at_one = lpo.drift(config, params, jnp.ones_like(ratio), advantage, p)
        np.testing.assert_array_equal(np.asarray(at_one), 0.0)


def test_features_vanish_at_ratio_one_and_the_temporal_half_is_progress_times_the_rest():
    ratio, advantage, progress = random_inputs(jax.random.PRNGKey(0), 16)
    np.testing.assert_array_equal(np.asarray(lpo.drift_features(jnp.ones(16), advantage)), 0.0)
    x = lpo.drift_features(ratio, advantage)
    assert x.shape == (16, 8)
    np.testing.assert_allclose(x[:, 0], 1 - ratio, rtol=1e-6)
    np.testing.assert_allclose(x[:, 3], jnp.log(ratio) ** 2, rtol=1e-5)
    np.testing.assert_allclose(x[:, 4:], advantage[:, None] * x[:, :4], rtol=1e-6)
    xt = lpo.drift_features(ratio, advantage, progress[:, None])
    assert xt.shape == (16, 16)
    np.testing.assert_allclose(xt[:, :8], x, rtol=1e-6)
    np.testing.assert_allclose(xt[:, 8:], progress[:, None] * x, rtol=1e-6)


def test_ta_lpo_drift_depends_on_progress_and_lpo_needs_none():
    config = dataclasses.replace(TINY, temporal=True)
    params = lpo.init_drift(jax.random.PRNGKey(1), config)
    ratio, advantage, _ = random_inputs(jax.random.PRNGKey(2), 256)
    early = lpo.drift(config, params, ratio, advantage, 0.0)
    late = lpo.drift(config, params, ratio, advantage, 1.0)
    assert float(jnp.abs(early - late).max()) > 1e-3
    with pytest.raises(ValueError, match="progress"):
        lpo.drift(config, params, ratio, advantage)


def test_zero_drift_reduces_to_the_importance_weighted_advantage():
    for temporal in (False, True):
        config = dataclasses.replace(TINY, temporal=temporal)
        ratio, advantage, _ = random_inputs(jax.random.PRNGKey(3), 512)
        log_prob, old = jnp.log(ratio), jnp.zeros(512)
        hp = lpo.LPOHParams(drift=lpo.zero_drift(config))
        surrogate = lpo.make_surrogate(config)
        loss, aux = surrogate(log_prob, old, advantage, hp, 0.3, None)
        np.testing.assert_allclose(float(loss), -float(jnp.mean(ratio * advantage)), rtol=1e-6)
        assert float(aux["drift"]) == 0.0
        grad = jax.grad(lambda lp: surrogate(lp, old, advantage, hp, 0.3, None)[0])(log_prob)
        np.testing.assert_allclose(grad, -ratio * advantage / 512, rtol=1e-5)  # d(r A)/d log pi = r A


def test_surrogate_gradient_subtracts_the_drift_gradient():
    config = TINY
    params = scaled(lpo.init_drift(jax.random.PRNGKey(4), config), 5.0)
    ratio, advantage, _ = random_inputs(jax.random.PRNGKey(5), 64)
    log_prob, old = jnp.log(ratio), jnp.zeros(64)
    hp = lpo.LPOHParams(drift=params)
    grad = jax.grad(lambda lp: lpo.make_surrogate(config)(lp, old, advantage, hp, 0.0, None)[0])(log_prob)
    drift_grad = jax.grad(lambda lp: lpo.drift(config, params, jnp.exp(lp), advantage).sum())(log_prob)
    np.testing.assert_allclose(grad, (-ratio * advantage + drift_grad) / 64, rtol=1e-4, atol=1e-7)
    assert float(jnp.abs(drift_grad).max()) > 1e-3  # the drift does shape this gradient


def test_drift_surrogate_with_ppo_drift_equals_the_clipped_objective():
    # PPO-clip is the mirror-learning drift ReLU((r - clip(r)) A) (Kuba et al., 2022).
    from rljax.losses.policy_gradient import clipped_surrogate

    ratio, advantage, _ = random_inputs(jax.random.PRNGKey(6), 1000)
    ppo_drift = jax.nn.relu((ratio - jnp.clip(ratio, 0.8, 1.2)) * advantage)
    mirror, _ = drift_surrogate(jnp.log(ratio), jnp.zeros(1000), advantage, ppo_drift)
    clipped, _ = clipped_surrogate(jnp.log(ratio), jnp.zeros(1000), advantage, 0.2)
    np.testing.assert_allclose(float(mirror), float(clipped), rtol=1e-5)


def test_ppo_loss_default_surrogate_is_unchanged_by_progress():
    config = TINY.ppo
    env, env_params = ppo.make_env(config)
    network = ppo.make_network(config, env, env_params)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    batch = ppo.PPOBatch(jax.random.normal(k[0], (32, 4)), jax.random.randint(k[1], (32,), 0, 2),
                         -0.7 * jnp.ones(32), jnp.zeros(32), jax.random.normal(k[2], (32,)), jnp.ones(32))
    a, _ = ppo_loss(params, network.apply, batch, ppo.PPOHParams(), progress=0.0)
    b, _ = ppo_loss(params, network.apply, batch, ppo.PPOHParams(), progress=0.9)
    assert float(a) == float(b)


def test_a_population_of_lifetimes_vmaps_like_separate_runs():
    config = dataclasses.replace(TINY, temporal=True)
    fitness = lpo.lifetime_fitness(config)
    members = [scaled(lpo.init_drift(jax.random.PRNGKey(i), config), 10.0) for i in range(3)]
    population = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
    key = jax.random.PRNGKey(7)
    together = jax.jit(jax.vmap(fitness, in_axes=(0, None)))(population, key)
    separate = [float(jax.jit(fitness)(m, key)) for m in members]
    np.testing.assert_allclose(np.asarray(together), separate, rtol=1e-5)


def test_the_drift_changes_training():
    config = TINY
    train = jax.jit(lpo.make_train(config))  # one compile: the drift parameters are traced hparams
    key = jax.random.PRNGKey(8)
    hp0 = lpo.LPOHParams(drift=lpo.zero_drift(config))
    hp1 = lpo.LPOHParams(drift=scaled(lpo.init_drift(jax.random.PRNGKey(0), config), 20.0))
    s0, m0 = train(key, hp0)
    s1, m1 = train(key, hp1)
    assert float(m0["drift"].max()) == 0.0 and float(m1["drift"].max()) > 0.0
    assert np.isfinite(np.asarray(m1["loss"])).all()
    p0, p1 = jax.tree.leaves(s0.params), jax.tree.leaves(s1.params)
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(p0, p1)) > 1e-4


def test_with_horizon_keeps_the_batch_and_changes_the_number_of_updates():
    longer = TINY.with_horizon(12)
    assert longer.ppo.num_updates == 12
    assert (longer.ppo.num_envs, longer.ppo.num_steps) == (TINY.ppo.num_envs, TINY.ppo.num_steps)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="drift_hidden_sizes"):
        lpo.LPOConfig(drift_hidden_sizes=())
    with pytest.raises(ValueError, match="zeta"):
        lpo.LPOConfig(zeta=0.0)
