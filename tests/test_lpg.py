import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.agents import lpg
from rljax.core import es
from rljax.core.config import ConfigError
from rljax.losses.policy_gradient import learned_policy_gradient_loss

T, B, M = 6, 3, 4
meta_outputs = jax.jit(lpg.meta_outputs, static_argnums=0)  # one compile per config, not per op
# probe/reward-from-action: one step, reward 1 iff action == 1 (a fitness in [0, 1], short compiles).
TINY = lpg.LPGConfig(env="probe/reward-from-action", num_envs=2, num_steps=4, num_updates=2, num_bins=M, hidden_sizes=(8,), gru_hidden=8,
                     embedding_hidden=4, eval_episodes=2)


def rollout_arrays(key, terminated=None, truncated=None):
    """Random meta-network inputs for a [T, B] rollout."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    none = jnp.zeros((T, B), bool)
    return dict(
        reward=jax.random.normal(k1, (T, B)),
        terminated=none if terminated is None else terminated,
        truncated=none if truncated is None else truncated,
        gamma=0.99,
        action_prob=jax.random.uniform(k2, (T, B)),
        y=jax.nn.softmax(jax.random.normal(k3, (T, B, M))),
        y_next=jax.nn.softmax(jax.random.normal(k4, (T, B, M))),
    )


def test_meta_network_runs_backward_in_time():
    config = TINY
    meta = lpg.init_meta(jax.random.PRNGKey(0), config)
    inputs = rollout_arrays(jax.random.PRNGKey(1))
    pi_hat, y_hat = meta_outputs(config, meta, **inputs)
    assert pi_hat.shape == (T, B) and y_hat.shape == (T, B, M)
    np.testing.assert_allclose(y_hat.sum(-1), 1.0, rtol=1e-6)
    t, b = 3, 1
    perturbed = dict(inputs, reward=inputs["reward"].at[t, b].add(1.0))
    pi_hat2, y_hat2 = meta_outputs(config, meta, **perturbed)
    # Steps after t never see r_t; the other envs never see it either.
    np.testing.assert_array_equal(pi_hat2[t + 1:], pi_hat[t + 1:])
    np.testing.assert_array_equal(y_hat2[t + 1:], y_hat[t + 1:])
    np.testing.assert_array_equal(np.delete(pi_hat2, b, axis=1), np.delete(pi_hat, b, axis=1))
    # Steps t, t-1, ..., 0 of env b all do (the recurrence carries it backward).
    assert np.all(np.asarray(pi_hat2[: t + 1, b]) != np.asarray(pi_hat[: t + 1, b]))
    assert np.all(np.any(np.asarray(y_hat2[: t + 1, b]) != np.asarray(y_hat[: t + 1, b]), axis=-1))


def test_recurrent_state_resets_where_an_episode_ends():
    config = TINY
    meta = lpg.init_meta(jax.random.PRNGKey(0), config)
    end = jnp.zeros((T, B), bool).at[2, 0].set(True)  # env 0's episode ends (truncated) at t = 2
    inputs = rollout_arrays(jax.random.PRNGKey(2), truncated=end)
    pi_hat, _ = meta_outputs(config, meta, **inputs)
    pi_hat2, _ = meta_outputs(config, meta, **dict(inputs, reward=inputs["reward"].at[4, 0].add(1.0)))
    np.testing.assert_array_equal(pi_hat2[:3, 0], pi_hat[:3, 0])  # the earlier episode does not see r_4
    assert np.all(np.asarray(pi_hat2[3:5, 0]) != np.asarray(pi_hat[3:5, 0]))
    # Without the episode end the same perturbation does reach t <= 2: the reset is what stops it.
    no_end = dict(inputs, truncated=jnp.zeros((T, B), bool))
    a, _ = meta_outputs(config, meta, **no_end)
    b, _ = meta_outputs(config, meta, **dict(no_end, reward=no_end["reward"].at[4, 0].add(1.0)))
    assert np.all(np.asarray(a[:3, 0]) != np.asarray(b[:3, 0]))


def test_temporal_inputs_are_progress_and_log_lifetime():
    inputs = rollout_arrays(jax.random.PRNGKey(3))
    ta = lpg.LPGConfig(**{**TINY.__dict__, "temporal": True})
    scalars = lpg.step_scalars(ta, inputs["reward"], inputs["terminated"], 0.99, inputs["action_prob"], 5, 20)
    assert scalars.shape == (T, B, 6)
    np.testing.assert_allclose(scalars[..., 4], 5 / 20, rtol=1e-7)
    np.testing.assert_allclose(scalars[..., 5], np.log(20.0), rtol=1e-7)
    np.testing.assert_array_equal(scalars[..., 0], inputs["reward"])
    np.testing.assert_allclose(scalars[..., 2], 0.99)
    meta = lpg.init_meta(jax.random.PRNGKey(0), ta)
    short, _ = meta_outputs(ta, meta, **inputs, update_step=5, lifetime=10)
    long, _ = meta_outputs(ta, meta, **inputs, update_step=5, lifetime=20)
    later, _ = meta_outputs(ta, meta, **inputs, update_step=6, lifetime=10)
    assert np.all(np.asarray(short) != np.asarray(long)) and np.all(np.asarray(short) != np.asarray(later))
    with pytest.raises(ValueError, match="needs update_step"):
        lpg.meta_outputs(ta, meta, **inputs)
    # Plain LPG has no such inputs: n and N change nothing.
    plain_meta = lpg.init_meta(jax.random.PRNGKey(0), TINY)
    assert lpg.step_scalars(TINY, inputs["reward"], inputs["terminated"], 0.99, inputs["action_prob"]).shape[-1] == 4
    a, _ = meta_outputs(TINY, plain_meta, **inputs, update_step=5, lifetime=10)
    b, _ = meta_outputs(TINY, plain_meta, **inputs, update_step=1, lifetime=200)
    np.testing.assert_array_equal(a, b)


def test_learned_policy_gradient_loss_value_and_gradients():
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(4), 4)
    log_prob = -jax.random.uniform(k1, (T, B))
    y_logits = jax.random.normal(k2, (T, B, M))
    pi_hat = jax.random.normal(k3, (T, B))
    y_hat = jax.nn.softmax(jax.random.normal(k4, (T, B, M)))
    alpha = 0.5
    loss, aux = learned_policy_gradient_loss(log_prob, y_logits, pi_hat, y_hat, alpha)
    y = np.asarray(jax.nn.softmax(y_logits))
    kl = np.sum(y * (np.log(y) - np.log(np.asarray(y_hat))), axis=-1).mean()  # KL(y || y_hat)
    np.testing.assert_allclose(aux["prediction_kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(loss, -np.mean(log_prob * pi_hat) + alpha * kl, rtol=1e-5)
    # Ascent on log pi * pi_hat: dL/dlog pi = -pi_hat / (T B).
    g_logp, g_y, g_pi_hat, g_y_hat = jax.grad(
        lambda *a: learned_policy_gradient_loss(*a, alpha)[0], argnums=(0, 1, 2, 3)
    )(log_prob, y_logits, pi_hat, y_hat)
    np.testing.assert_allclose(g_logp, -pi_hat / (T * B), rtol=1e-6)
    # dKL(softmax(z) || y_hat)/dz = y (log y - log y_hat - KL_row), averaged over T B and scaled by alpha.
    row_kl = np.sum(y * (np.log(y) - np.log(np.asarray(y_hat))), axis=-1, keepdims=True)
    np.testing.assert_allclose(g_y, alpha * y * (np.log(y) - np.log(np.asarray(y_hat)) - row_kl) / (T * B),
                               atol=1e-7)
    # The targets are constants (stop-gradient) ...
    assert not np.any(np.asarray(g_pi_hat)) and not np.any(np.asarray(g_y_hat))
    # ... and the prediction term vanishes where y = y_hat.
    g_at_target = jax.grad(lambda z: learned_policy_gradient_loss(log_prob, z, pi_hat, jax.nn.softmax(y_logits),
                                                                  alpha)[0])(y_logits)
    np.testing.assert_allclose(g_at_target, 0.0, atol=1e-8)


def test_agent_update_gives_the_meta_network_no_gradient():
    trainer = lpg.make_train(TINY)
    meta = lpg.init_meta(jax.random.PRNGKey(0), TINY)
    state = trainer.init(jax.random.PRNGKey(1), lpg.LPGHParams(meta=meta))

    def agent_loss(meta_params):
        new_state, metrics = trainer.update(state.replace(hparams=state.hparams.replace(meta=meta_params)))
        return metrics["loss"], new_state

    grads, new_state = jax.jit(jax.grad(agent_loss, has_aux=True))(meta)
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads))
    assert int(new_state.update_step) == 1
    assert any(np.any(np.asarray(a) != np.asarray(b))  # the agent did move
               for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params)))


def test_updates_past_the_lifetime_are_discarded():
    meta = lpg.init_meta(jax.random.PRNGKey(0), TINY)
    key = jax.random.PRNGKey(5)
    two, _ = jax.jit(lpg.make_train(TINY))(key, lpg.LPGHParams(meta=meta))
    three_cut, _ = jax.jit(lpg.make_train(TINY.with_horizon(3)))(key, lpg.LPGHParams(meta=meta, lifetime=2.0))
    assert int(two.update_step) == int(three_cut.update_step) == 2
    for a, b in zip(jax.tree.leaves(two.params), jax.tree.leaves(three_cut.params)):
        np.testing.assert_array_equal(a, b)


def test_population_vmap_of_lifetime_fitness_equals_separate_calls():
    fitness = lpg.lifetime_fitness(TINY)
    metas = [lpg.init_meta(jax.random.PRNGKey(i), TINY) for i in range(2)]
    keys = jax.random.split(jax.random.PRNGKey(6), 2)
    population = jax.tree.map(lambda *x: jnp.stack(x), *metas)
    together = jax.jit(jax.vmap(fitness))(population, keys)
    single = jax.jit(fitness)
    separate = [float(single(m, k)) for m, k in zip(metas, keys)]
    np.testing.assert_allclose(together, separate, rtol=1e-5)
    assert np.all((np.asarray(together) >= 0.0) & (np.asarray(together) <= 1.0))


@pytest.mark.slow  # three compiles of a TA-LPG generation; ES resume itself is in tests/test_es.py's default tier
def test_es_meta_train_writes_metrics_and_resumes(tmp_path):
    config = lpg.LPGConfig(**{**TINY.__dict__, "num_updates": 3, "temporal": True})
    fitness = lpg.lifetime_fitness(config, min_updates=1)
    init = lpg.init_meta(jax.random.PRNGKey(0), config)
    es_config = es.ESConfig(population_size=4, generations=2, fitness_shaping="pairwise", task_sharing="pair",
                            progress=False)
    key = jax.random.PRNGKey(7)
    whole = es.meta_train(fitness, init, es_config, key, run_dir=str(tmp_path / "whole"))
    first = es.meta_train(fitness, init, es_config, key, run_dir=str(tmp_path / "cut"), stop_after_generations=1)
    assert len(first.records) == 1
    resumed = es.meta_train(fitness, init, es_config, key, run_dir=str(tmp_path / "cut"), resume=True)
    assert [r["generation"] for r in resumed.records] == [2]
    for a, b in zip(jax.tree.leaves(whole.mean), jax.tree.leaves(resumed.mean)):
        np.testing.assert_array_equal(a, b)
    assert any(np.any(np.asarray(a) != np.asarray(b)) for a, b in zip(jax.tree.leaves(whole.mean),
                                                                      jax.tree.leaves(init)))
    for run in ("whole", "cut"):
        with open(os.path.join(tmp_path, run, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        assert [r["generation"] for r in records] == [1, 2]
        assert all(0.0 <= r["fitness_min"] <= r["fitness_max"] <= 1.0 for r in records)


def test_bad_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="LPGConfig.num_bins"):
        lpg.LPGConfig(num_bins=1)
    with pytest.raises(ConfigError, match="LPGConfig.gru_hidden"):
        lpg.LPGConfig(gru_hidden=0)
    with pytest.raises(ConfigError, match="LPGConfig.env.*discrete"):
        lpg.make_train(lpg.LPGConfig(env="gymnax/Pendulum-v1"))
    with pytest.raises(ConfigError, match="min_updates"):
        lpg.lifetime_fitness(TINY, min_updates=5)
    with pytest.raises(ValueError, match="LPGHParams.meta is None"):
        lpg.make_train(TINY).init(jax.random.PRNGKey(0), lpg.LPGHParams())
