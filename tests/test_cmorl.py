"""C-MORL: crowding selection, the archive, the interior-point barrier by hand, feasibility, the extension step."""


import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.agents import cmorl, moppo
from rljax.core.config import ConfigError
from rljax.losses.policy_gradient import PPOBatch, clipped_surrogate, clipped_value_loss

TINY = moppo.MOPPOConfig(num_envs=4, num_steps=32, total_timesteps=128, update_epochs=1, num_minibatches=1,
                         hidden_sizes=(16, 16), eval_episodes=1, reward_scale=(0.01, 0.05),
                         normalize_advantages=False)


def test_crowding_selection_picks_extremes_first_and_skips_chosen():
    returns = np.array([[1, -1], [2, -3], [3, -5], [50, -14], [124, -19], [0.5, -30.0]])  # the last is dominated
    picked = cmorl.select_by_crowding(returns, 3)
    assert set(picked[:2]) == {0, 4}  # the two extremes (infinite distance) first
    assert picked[2] == 3  # then the largest crowding distance: 50 @ 14 sits in the widest gap
    excluded = np.zeros(6, bool)
    excluded[[0, 4]] = True
    assert list(cmorl.select_by_crowding(returns, 2, excluded)) == [3, 2]
    assert 5 not in cmorl.select_by_crowding(returns, 6)  # dominated points are never chosen


def test_archive_keeps_front_newest_policy_and_excludes_chosen():
    archive = cmorl.Archive.empty(2)
    archive.add([[1, -1], [124, -19], [0, -100]], ["a", "b", "c"])
    assert archive.returns.tolist() == [[1, -1], [124, -19]] and archive.params == ["a", "b"]
    assert sorted(archive.params[i] for i in archive.select(5)) == ["a", "b"]
    archive.add([[1, -1], [16, -9]], ["a2", "d"])  # a newer policy at 1 @ 1 replaces "a"
    assert sorted(archive.params) == ["a2", "b", "d"]
    picked = [archive.params[i] for i in archive.select(5)]
    assert picked == ["d"]  # 1 @ 1 and 124 @ 19 were chosen before: the points, whichever policy sits there
    assert [archive.params[i] for i in archive.select(1)][0] in {"a2", "b"}  # all chosen: exclusion lifted


def test_deploy_maximises_linear_utility():
    returns = np.array([[1, -1], [16, -9], [124, -19]])
    assert cmorl.deploy(returns, [0.0, 1.0]) == 0
    assert cmorl.deploy(returns, [1.0, 0.0]) == 2
    assert cmorl.deploy(returns, [0.5, 0.5]) == 2  # 124 - 19 beats 16 - 9 and 1 - 1


@pytest.mark.parametrize("preference, message", [
    ([0.7, 0.7], "summing to 1"),  # off the simplex: argmax would still answer
    ([1.5, -0.5], "non-negative"),
    ([0.2, 0.3, 0.5], "expected 2 weights"),  # 3 weights for 2 objectives
])
def test_deploy_refuses_a_preference_off_the_simplex(preference, message):
    returns = np.array([[1, -1], [16, -9], [124, -19]])
    with pytest.raises(ConfigError, match=message) as err:
        cmorl.deploy(returns, preference)
    assert "preference" in str(err.value)


def test_log_barrier_value_and_gradient_by_hand():
    t, eps = 20.0, 1e-2
    slack, mask = jnp.array([2.0, 0.5, 7.0]), jnp.array([1.0, 1.0, 0.0])
    value, grad = jax.value_and_grad(cmorl.log_barrier)(slack, mask, t, eps)
    np.testing.assert_allclose(value, -(np.log(2.0) + np.log(0.5)) / t, atol=1e-7)
    np.testing.assert_allclose(grad, [-1 / (t * 2.0), -1 / (t * 0.5), 0.0], rtol=1e-6)
    # below eps: the log continued linearly, value and slope matched at eps
    value, grad = jax.value_and_grad(cmorl.log_barrier)(jnp.array([-0.1]), jnp.array([1.0]), t, eps)
    np.testing.assert_allclose(value, -(np.log(eps) + (-0.1 - eps) / eps) / t, rtol=1e-6)
    np.testing.assert_allclose(grad, [-1 / (t * eps)], rtol=1e-6)


def test_return_surrogate_is_rollout_estimate_with_policy_gradient():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    actions = jnp.asarray(rng.integers(0, 3, 6))
    adv = jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)
    g_old, scale = jnp.array([3.0, -4.0]), 2.5
    old_lp = jax.nn.log_softmax(logits)[jnp.arange(6), actions]

    def g(l):
        lp = jax.nn.log_softmax(l)[jnp.arange(6), actions]
        return cmorl.return_surrogate(jnp.exp(lp - old_lp), adv, g_old, scale)

    np.testing.assert_allclose(g(logits), g_old, rtol=1e-6)  # at theta_old: the rollout estimate
    jac = jax.jacobian(g)(logits)  # [k, 6, 3]
    score = jax.jacobian(lambda l: jax.nn.log_softmax(l)[jnp.arange(6), actions])(logits)  # [6, 6, 3]
    expected = scale * jnp.einsum("bj,bxy->jxy", adv, score) / 6  # E_ep * mean_t[A_t grad log pi]
    np.testing.assert_allclose(jac, expected, rtol=1e-5, atol=1e-6)


def _tabular_batch(seed=0, n=16):
    rng = np.random.default_rng(seed)
    params = {"logits": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
              "v": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)}

    def apply_fn(p, obs):
        return distrax.Categorical(logits=p["logits"][obs]), p["v"][obs]

    obs = jnp.asarray(rng.integers(0, 4, n))
    action = jnp.asarray(rng.integers(0, 3, n))
    pi, value = apply_fn(params, obs)
    log_prob = pi.log_prob(action) + 0.05 * jnp.asarray(rng.normal(size=n), jnp.float32)
    adv = jnp.asarray(rng.normal(size=(n, 2)), jnp.float32)
    return params, apply_fn, PPOBatch(obs, action, log_prob, value + 0.1, adv, value + adv)


def test_extension_loss_feasible_is_ppo_clip_plus_scaled_barrier():
    params, apply_fn, batch = _tabular_batch()
    hp = cmorl.CMORLHParams(ent_coef=0.01, barrier_t=20.0)
    scale = jnp.array([0.01, 0.05])
    g_old, threshold, episode_scale = jnp.array([1.0, 95.0]), jnp.array([0.9, 89.0]), 4.0
    total, aux = cmorl.extension_loss(params, apply_fn, batch, hp, jnp.int32(0), threshold, g_old, episode_scale,
                                      scale, 1e-2, normalize_advantages=False)
    pi, value = apply_fn(params, batch.obs)
    lp = pi.log_prob(batch.action)
    ratio = np.exp(lp - batch.log_prob)
    surrogate, _ = clipped_surrogate(lp, batch.log_prob, batch.advantage[:, 0], hp.clip_eps)
    g1 = 95.0 + episode_scale * np.mean((ratio - 1) * batch.advantage[:, 1] / 0.05)  # objective 1 is constrained
    barrier = -np.log(g1 - 89.0) / 20.0
    value_loss = sum(clipped_value_loss(value[:, j], batch.value[:, j], batch.target[:, j], hp.clip_eps)
                     for j in range(2))
    expected = surrogate + (0.01 / episode_scale) * barrier + hp.vf_coef * value_loss - 0.01 * pi.entropy().mean()
    assert aux["feasible"] == 1.0
    np.testing.assert_allclose(aux["barrier"], barrier, rtol=1e-5)
    np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_infeasible_start_takes_a_recovery_step_without_barrier():
    params, apply_fn, batch = _tabular_batch(1)
    hp = cmorl.CMORLHParams()
    # maximise objective 0 while objective 1's constraint is violated: G_1 = -1 < b_1 = -0.9
    total, aux = cmorl.extension_loss(params, apply_fn, batch, hp, jnp.int32(0), jnp.array([0.0, -0.9]),
                                      jnp.array([1.0, -1.0]), 4.0, jnp.ones(2), 1e-2, normalize_advantages=False)
    assert aux["feasible"] == 0.0 and np.isfinite(total)
    pi, value = apply_fn(params, batch.obs)
    lp = pi.log_prob(batch.action)
    surrogate, _ = clipped_surrogate(lp, batch.log_prob, batch.advantage[:, 1], hp.clip_eps)  # the violated one
    value_loss = sum(clipped_value_loss(value[:, j], batch.value[:, j], batch.target[:, j], hp.clip_eps)
                     for j in range(2))
    np.testing.assert_allclose(total, surrogate + hp.vf_coef * value_loss - hp.ent_coef * pi.entropy().mean(),
                               rtol=1e-5)


@pytest.mark.parametrize("lower, feasible_at_start", [(None, 0.0), ((0.0, -100.0), 1.0)])
def test_extension_under_jit_vmap_and_the_sign_of_returns(lower, feasible_at_start):
    """DST's time return is negative: with no shift, G_time >= 0.9 G_time(pi_r) is violated by pi_r itself and
    the step starts in recovery; shifted by the lower bound -100 it starts feasible."""
    config = cmorl.CMORLConfig(moppo=TINY, extension_updates=2, return_lower_bound=lower)
    ext = cmorl.make_extension(config)
    params = moppo.init_params(ext.comp, jax.random.PRNGKey(0))
    params = jax.tree.map(lambda x: jnp.stack([x, x]), params)
    run = jax.jit(jax.vmap(ext.run, in_axes=(0, 0, 0, None)))
    _, history, returns, metrics = run(jax.random.split(jax.random.PRNGKey(1), 2), params,
                                       jnp.array([0, 1], jnp.int32), cmorl.CMORLHParams())
    assert returns.shape == (2, 2, 2)
    assert jax.tree.leaves(history)[0].shape[:2] == (2, 2)
    for name, value in metrics.items():
        assert np.isfinite(np.asarray(value)).all(), name
    assert float(metrics["feasible"][0, 0]) == feasible_at_start  # task 0 maximises treasure, constrains time


def test_stage1_preferences_and_config_errors():
    config = cmorl.CMORLConfig(moppo=TINY, return_lower_bound=(0.0,))
    assert config.preferences(2).shape == (6, 2)
    with pytest.raises(Exception, match="return_lower_bound: expected 2 values"):
        cmorl.make_extension(config)


@pytest.mark.integration
def test_quick_cli_writes_outputs(run_experiment):
    _, result = run_experiment("cmorl-dst", "--quick", "--seeds", "1", files=("fronts.png",))
    assert set(result["methods"]) == {"cmorl", "stage1_only", "stage1"}
    assert set(result["claims"]) == {"cmorl_treasures", "cmorl_hypervolume", "stage1_hull_only"}


@pytest.mark.slow
def test_full_experiment_claims(run_experiment):
    # The recorded seed. Not robust: on --seed 1 and --seed 2 one run in three collapses in stage 1 and the
    # mean hypervolume is 66.6% (experiments/RESULTS.md).
    claims = run_experiment("cmorl-dst")[1]["claims"]
    assert claims["cmorl_hypervolume"]["holds"] and claims["stage1_hull_only"]["holds"], claims
    if not claims["cmorl_treasures"]["holds"]:  # measured: 7 of 10 in every seed (never 2, 3 or 5)
        pytest.xfail(f"C-MORL recovers fewer than 8 treasures: {claims['cmorl_treasures']}")


def test_stage1_in_chunks_and_continued_equals_one_run():
    """The weight-sweep baseline continues stage 1's states: 2 + 2 updates (in chunks of 1) = 4 at once."""
    config = cmorl.CMORLConfig(moppo=TINY, stage1_updates=2)
    programs = cmorl.make_stage1(config)
    key, hp = jax.random.PRNGKey(3), cmorl.CMORLHParams()
    first, _ = cmorl.train_stage1(config, hp, key, 1, stage1=programs, chunk=1)
    continued, returns = cmorl.train_stage1(config, hp, key, 1, num_updates=2, initial_states=first,
                                            stage1=programs, chunk=1)
    at_once, at_once_returns = cmorl.train_stage1(config, hp, key, 1, num_updates=4, stage1=programs)
    assert returns.shape == (6, 2) and int(continued.update_step[0]) == 4
    for a, b in zip(jax.tree.leaves(continued.params), jax.tree.leaves(at_once.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns, at_once_returns, rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="chunk = 3 must be positive and divide num_updates = 4"):
        programs.train(first, 4, chunk=3)
