"""ODICE: the V-DICE loss and policy weight by hand, the three gradient rules on a linear V, the agent
under jit+vmap, config errors, and the experiment's CLI."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from rljax.agents import odice
from rljax.core import dataset as dataset_lib
from rljax.core import rollout as rollout_lib
from rljax.core.config import ConfigError, broadcast_hparams
from rljax.core.dataset import DatasetError

# ---------------------------------------------------------------- the loss and the weight by hand


def test_vdice_loss_by_hand():
    # delta = r + gamma * not_done * V(s') - V(s) with gamma 0.9:
    #   row 0: 1 + 0.9 * 1 - 0 = 1.9      f*_p = 1.9 + 1.9^2 / 4 = 2.8025
    #   row 1: -1 + 0 - 1 = -2 (terminal)  f*_p = -2 + 1 = -1
    #   row 2: 0 + 0.9 * 0 - 3 = -3        f*_p = -1 (below -2 the optimal ratio is 0: f*_p = -f(0) = -1)
    v, next_v = jnp.array([0.0, 1.0, 3.0]), jnp.array([1.0, 0.5, 0.0])
    reward, not_done = jnp.array([1.0, -1.0, 0.0]), jnp.array([1.0, 0.0, 1.0])
    loss = odice.vdice_loss(v, next_v, reward, not_done, lam=0.6, gamma=0.9)
    expected = 0.4 * (0 + 1 + 3) / 3 + 0.6 * (2.8025 - 1 - 1) / 3
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # Heads on a leading axis are averaged like the batch.
    two = odice.vdice_loss(jnp.stack([v, v]), jnp.stack([next_v, next_v]), reward, not_done, 0.6, 0.9)
    np.testing.assert_allclose(two, expected, rtol=1e-6)


def test_policy_weight_is_the_papers_optimal_ratio_clipped():
    delta = jnp.array([-3.0, -2.0, -1.0, 0.0, 1.0, 300.0])
    # Paper: max(0, delta/2 + 1) clipped at 100.
    np.testing.assert_allclose(odice.policy_weight(delta), [0.0, 0.0, 0.5, 1.0, 1.5, 100.0])
    np.testing.assert_allclose(odice.policy_weight(delta, max_weight=1.2), [0.0, 0.0, 0.5, 1.0, 1.2, 1.2])
    # The official code's chi2 weight, max(0, delta), for comparison.
    np.testing.assert_allclose(odice.policy_weight(delta, kind="code"), [0.0, 0.0, 0.0, 0.0, 1.0, 100.0])
    # KL: exp(delta - 1).
    np.testing.assert_allclose(odice.policy_weight(jnp.array([1.0, 0.0]), "kl"), [1.0, np.exp(-1.0)], rtol=1e-6)
    # A constant for the policy loss: no gradient flows into the residual.
    grad = jax.grad(lambda d: odice.policy_weight(d).sum())(jnp.array([0.5, 1.0]))
    np.testing.assert_array_equal(grad, [0.0, 0.0])


# ---------------------------------------------------------------- the three rules on a linear V

LAM, GAMMA, ETA = 0.6, 0.9, 0.7


def linear_v(w, obs):
    """V(s) = w . s, one head: [1, B]."""
    return (obs @ w)[None]


@pytest.fixture
def linear_batch():
    rng = np.random.default_rng(0)
    obs, next_obs = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    batch = odice.ValueBatch(obs=jnp.asarray(obs, jnp.float32), next_obs=jnp.asarray(next_obs, jnp.float32),
                             reward=jnp.asarray(rng.normal(size=6), jnp.float32),
                             terminated=jnp.array([False, False, True, False, False, False]))
    w = jnp.array([0.3, -0.5, 0.8], jnp.float32)
    return batch, w


def chi2_slope(delta):
    """d f*_p / d delta for chi2: 1 + delta/2 above -2, 0 below (the optimal ratio)."""
    return np.maximum(0.0, 1.0 + delta / 2.0)


def by_hand(batch, w, w_target):
    s, s2 = np.asarray(batch.obs, np.float64), np.asarray(batch.next_obs, np.float64)
    r, nd = np.asarray(batch.reward, np.float64), 1.0 - np.asarray(batch.terminated, np.float64)
    w, wt = np.asarray(w, np.float64), np.asarray(w_target, np.float64)
    delta_f = r + GAMMA * nd * (s2 @ wt) - s @ w  # V(s') from the target
    delta_b = r + GAMMA * nd * (s2 @ w) - s @ wt  # V(s) from the target
    assert np.all(np.abs(delta_f + 2) > 1e-3) and np.all(np.abs(delta_b + 2) > 1e-3)  # away from the kink
    value = (1 - LAM) * s.mean(axis=0)
    forward = LAM * (chi2_slope(delta_f)[:, None] * -s).mean(axis=0)
    backward = LAM * (chi2_slope(delta_b)[:, None] * GAMMA * nd[:, None] * s2).mean(axis=0)
    return value, forward, backward


@pytest.mark.parametrize("rule", odice.UPDATE_RULES)
def test_gradient_rules_on_a_linear_v_by_hand(linear_batch, rule):
    batch, w = linear_batch
    value, forward, backward = by_hand(batch, w, w)
    direction, parts, aux = odice.value_gradients(linear_v, w, w, batch, LAM, GAMMA, ETA, rule)
    np.testing.assert_allclose(parts["value"], value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts["forward"], forward, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts["backward"], backward, rtol=1e-5, atol=1e-6)
    projected = backward - backward @ forward / (forward @ forward) * forward
    expected = {"semi": value + forward, "true": value + forward + backward,
                "orthogonal": value + forward + ETA * projected}[rule]
    np.testing.assert_allclose(direction, expected, rtol=1e-5, atol=1e-6)
    cos = forward @ backward / np.linalg.norm(forward) / np.linalg.norm(backward)
    np.testing.assert_allclose(aux["cos_forward_backward"], cos, rtol=1e-5)


def test_true_rule_is_the_autodiff_gradient_of_the_full_loss(linear_batch):
    # Target = online parameters (tau = 1, one head): forward + backward is the whole gradient.
    batch, w = linear_batch
    not_done = 1.0 - batch.terminated.astype(jnp.float32)

    def full_loss(p):
        return odice.vdice_loss(linear_v(p, batch.obs), linear_v(p, batch.next_obs), batch.reward, not_done, LAM, GAMMA)

    direction, _, _ = odice.value_gradients(linear_v, w, w, batch, LAM, GAMMA, ETA, "true")
    np.testing.assert_allclose(direction, jax.grad(full_loss)(w), rtol=1e-5, atol=1e-6)
    # ...and semi is the gradient with V(s') held fixed (stop-gradient), i.e. the forward part only.
    def semi_loss(p):
        return odice.vdice_loss(linear_v(p, batch.obs), jax.lax.stop_gradient(linear_v(p, batch.next_obs)),
                                batch.reward, not_done, LAM, GAMMA)

    direction, _, _ = odice.value_gradients(linear_v, w, w, batch, LAM, GAMMA, ETA, "semi")
    np.testing.assert_allclose(direction, jax.grad(semi_loss)(w), rtol=1e-5, atol=1e-6)


def test_true_rule_ignores_the_target_network(linear_batch):
    # The paper's true gradient (the official true_g_update): one residual r + gamma V(s') - V(s) with the
    # online V on both sides, so a lagging target changes nothing; grad_F + grad_B from the target
    # residuals would differ.
    batch, w = linear_batch
    w_target = w + jnp.array([0.1, 0.05, -0.2])
    not_done = 1.0 - batch.terminated.astype(jnp.float32)

    def full_loss(p):
        return odice.vdice_loss(linear_v(p, batch.obs), linear_v(p, batch.next_obs), batch.reward, not_done, LAM, GAMMA)

    direction, parts, aux = odice.value_gradients(linear_v, w, w_target, batch, LAM, GAMMA, ETA, "true")
    np.testing.assert_allclose(direction, jax.grad(full_loss)(w), rtol=1e-5, atol=1e-6)
    split = parts["value"] + parts["forward"] + parts["backward"]
    assert np.abs(np.asarray(direction - split)).max() > 1e-3
    delta = batch.reward + GAMMA * not_done * linear_v(w, batch.next_obs) - linear_v(w, batch.obs)
    np.testing.assert_allclose(aux["delta_policy"], delta, rtol=1e-5, atol=1e-6)


def test_orthogonal_backward_part_is_orthogonal_to_forward(linear_batch):
    batch, w = linear_batch
    _, parts, aux = odice.value_gradients(linear_v, w, w, batch, LAM, GAMMA, ETA, "orthogonal")
    f, b_orth = np.asarray(parts["forward"], np.float64), np.asarray(parts["backward_orthogonal"], np.float64)
    assert abs(f @ b_orth) < 1e-5 * np.linalg.norm(f) * np.linalg.norm(b_orth)
    # The projection removed the part of the backward gradient along the forward one, nothing else.
    b = np.asarray(parts["backward"], np.float64)
    np.testing.assert_allclose(b - b_orth, (b @ f) / (f @ f) * f, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(aux["grad_backward_orthogonal_norm"], np.linalg.norm(b_orth), rtol=1e-5)
    # The rule's direction minus semi's is exactly eta times that orthogonal part.
    semi, _, _ = odice.value_gradients(linear_v, w, w, batch, LAM, GAMMA, ETA, "semi")
    orth, _, _ = odice.value_gradients(linear_v, w, w, batch, LAM, GAMMA, ETA, "orthogonal")
    np.testing.assert_allclose(orth - semi, ETA * b_orth, rtol=1e-5, atol=1e-6)


def test_split_with_a_target_network_differentiates_one_side_each(linear_batch):
    # Forward: r + gamma Vbar(s') - V(s), through -V(s); backward: r + gamma V(s') - Vbar(s), through gamma V(s').
    batch, w = linear_batch
    w_target = w + jnp.array([0.1, 0.05, -0.2])
    value, forward, backward = by_hand(batch, w, w_target)
    _, parts, _ = odice.value_gradients(linear_v, w, w_target, batch, LAM, GAMMA, ETA, "true")
    np.testing.assert_allclose(parts["value"], value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts["forward"], forward, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts["backward"], backward, rtol=1e-5, atol=1e-6)


def test_twin_heads_use_the_min_of_the_target_heads(linear_batch):
    batch, w = linear_batch
    w2 = jnp.stack([w, -w])  # two heads

    def two_heads(p, obs):
        return jnp.stack([obs @ p[0], obs @ p[1]])

    _, parts, aux = odice.value_gradients(two_heads, w2, w2, batch, LAM, GAMMA, ETA, "semi")
    s, s2 = np.asarray(batch.obs, np.float64), np.asarray(batch.next_obs, np.float64)
    nd = 1.0 - np.asarray(batch.terminated, np.float64)
    target_next = np.minimum(s2 @ np.asarray(w), -(s2 @ np.asarray(w)))
    for head, sign in ((0, 1.0), (1, -1.0)):
        delta_f = np.asarray(batch.reward) + GAMMA * nd * target_next - sign * (s @ np.asarray(w))
        np.testing.assert_allclose(aux["delta_policy"][head], delta_f, rtol=1e-5, atol=1e-6)
        # Mean over heads and batch: each head's gradient carries a factor 1/2.
        expected = LAM * (chi2_slope(delta_f)[:, None] * -s).mean(axis=0) / 2
        np.testing.assert_allclose(parts["forward"][head], expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the agent

TINY = dict(num_updates=3, steps_per_update=4, batch_size=32, value_hidden_sizes=(8,), policy_hidden_sizes=(8,),
            eval_episodes=2, ood_env_kwargs=(("start_perturbation", 0.4),))


@pytest.fixture(scope="module")
def pointmass_data():
    env, params = envs.make("toy/pointmass")
    carry = rollout_lib.reset(env, params, jax.random.PRNGKey(0), 10)

    def policy(obs, key):
        return jnp.clip(0.5 * env.optimal_action(obs, params) + 0.5 * jax.random.normal(key, obs.shape), -1, 1), {}

    _, traj = rollout_lib.rollout(env, params, policy, carry, jax.random.PRNGKey(1), 60)
    return dataset_lib.from_trajectory(jax.device_get(traj), {"env": "toy/pointmass"}, drop_partial=False)


@pytest.mark.parametrize("rule", odice.UPDATE_RULES)
def test_agent_runs_under_jit_and_vmap_with_finite_metrics(pointmass_data, rule):
    trainer = odice.make_train(odice.ODICEConfig(update_rule=rule, **TINY), pointmass_data)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    hp = broadcast_hparams(odice.ODICEHParams(lam=jnp.array([0.6, 0.8])), 2)  # a vmapped sweep over lambda
    state, metrics = jax.jit(jax.vmap(trainer))(keys, hp)
    for name, value in metrics.items():
        assert value.shape == (2, 3), name
        assert np.isfinite(np.asarray(value)).all(), name
    assert np.all((0 <= metrics["cos_negative"]) & (metrics["cos_negative"] <= 1))
    np.testing.assert_array_equal(state.step, [12, 12])
    ev = jax.jit(jax.vmap(trainer.evaluate))(state, keys)
    for name in ("return", "return_ood", "length", "length_ood"):
        assert ev[name].shape == (2, 2) and np.isfinite(np.asarray(ev[name])).all(), name

    # value_function: the min over the twin heads, for any leading axes of positions.
    config = trainer.config
    v_params = jax.tree.map(lambda x: x[0], state.v_params)
    grid = jnp.stack(jnp.meshgrid(jnp.linspace(-1, 1, 3), jnp.linspace(-1, 1, 4)), axis=-1)  # [4, 3, 2]
    v = odice.value_function(config, v_params, grid)
    heads = odice.VEnsemble(config.num_v, config.value_hidden_sizes, config.layer_norm).apply(v_params, grid)
    assert v.shape == (4, 3) and heads.shape == (2, 4, 3)
    assert np.any(np.asarray(heads[0] != heads[1]))  # the heads differ, so the min is a real choice
    np.testing.assert_allclose(v, np.minimum(heads[0], heads[1]))
    np.testing.assert_allclose(v.reshape(-1), odice.value_function(config, v_params, grid.reshape(-1, 2)), rtol=1e-6)


def test_data_that_does_not_match_the_env_is_refused(pointmass_data):
    import dataclasses

    bad = dataclasses.replace(pointmass_data, obs=pointmass_data.obs[:, :1])
    with pytest.raises(DatasetError, match=r"dataset: field 'obs' has rows of shape \(1,\), the env expects \(2,\)"):
        odice.make_train(odice.ODICEConfig(**TINY), bad)


@pytest.mark.parametrize("changes,match", [
    ({"update_rule": "full"}, r"ODICEConfig.update_rule: expected one of \('semi', 'true', 'orthogonal'\), got 'full'"),
    ({"divergence": "tv"}, r"ODICEConfig.divergence: expected one of \('chi2', 'kl'\), got 'tv'"),
    ({"policy_weight": "awr"}, r"ODICEConfig.policy_weight: expected one of \('paper', 'code'\), got 'awr'"),
    ({"policy_weight": "code", "divergence": "kl"}, r"ODICEConfig.policy_weight = 'code' is the official code's chi2"),
    ({"batch_size": 0}, r"ODICEConfig.batch_size: expected a positive number, got 0"),
    ({"num_v": 0}, r"ODICEConfig.num_v: expected a positive number, got 0"),
    ({"value_hidden_sizes": (32, 0)}, r"ODICEConfig.value_hidden_sizes: expected positive layer widths"),
])  # fmt: skip
def test_bad_config_raises_naming_the_field(changes, match):
    with pytest.raises(ConfigError, match=match):
        odice.ODICEConfig(**changes)


@pytest.mark.parametrize("changes,match", [
    ({"lam": 1.0}, r"ODICEHParams.lam: expected a number in \(0, 1\), got 1.0"),
    ({"eta": -0.1}, r"ODICEHParams.eta: expected a number >= 0, got -0.1"),
    ({"tau": np.array([0.5, 0.0])}, r"ODICEHParams.tau: expected a number in \(0, 1\], got \[0.5, 0.0\]"),
    ({"gamma": 1.0}, r"ODICEHParams.gamma: expected a number in \[0, 1\), got 1.0"),
])  # fmt: skip
def test_bad_hparams_raise_naming_the_field(changes, match):
    with pytest.raises(ConfigError, match=match):
        odice.check_hparams(odice.ODICEHParams(**changes))


def test_ood_env_on_brax_is_the_env_with_larger_reset_noise():
    config = odice.ODICEConfig(env="brax/hopper", ood_env_kwargs=(("reset_noise_scale", 0.05),))
    raw_env, _, params = odice.make_env(config)
    ood_env, ood_params = odice.make_ood_env(config, raw_env, params)
    keys = jax.random.split(jax.random.PRNGKey(0), 256)
    obs = jax.vmap(raw_env.reset, in_axes=(0, None))(keys, params)[0]
    ood_obs = jax.vmap(ood_env.reset, in_axes=(0, None))(keys, ood_params)[0]
    # Hopper's observation starts with qpos[1:], drawn uniformly within +-reset_noise_scale of the pose.
    spread, ood_spread = np.ptp(np.asarray(obs)[:, 1:6], axis=0), np.ptp(np.asarray(ood_obs)[:, 1:6], axis=0)
    np.testing.assert_array_less(spread, 2 * 0.005 + 1e-6)
    np.testing.assert_allclose(ood_spread / spread, 10.0, rtol=0.1)
    assert odice.make_ood_env(odice.ODICEConfig(env="brax/hopper"), raw_env, params) == (None, None)


def test_env_and_ood_kwargs_errors_name_the_field(pointmass_data):
    with pytest.raises(ConfigError, match=r"ODICEConfig.ood_env_kwargs: .*'start_jitter'"):
        odice.make_train(odice.ODICEConfig(**{**TINY, "ood_env_kwargs": (("start_jitter", 1.0),)}), pointmass_data)
    with pytest.raises(ConfigError, match=r"ODICEConfig.env = 'gymnax/CartPole-v1' has discrete actions"):
        odice.make_train(odice.ODICEConfig(env="gymnax/CartPole-v1"), pointmass_data)
    with pytest.raises(ConfigError, match="update_rule: expected one of"):
        odice.value_gradients(linear_v, jnp.zeros(3), jnp.zeros(3), None, LAM, GAMMA, ETA, "half")


# ---------------------------------------------------------------- the experiment


def test_claim_orders_the_perturbed_start_means():
    from experiments import odice as experiment

    def rules(o, s, t):
        return {r: {"return": {"perturbed": {"mean": m}}} for r, m in (("orthogonal", o), ("semi", s), ("true", t))}

    assert experiment.check_claim(rules(-90.0, -95.0, -95.0))["holds"] is True
    claim = experiment.check_claim(rules(-90.0, -96.0, -95.0))
    assert claim["holds"] is False and claim["orthogonal_ge_semi"] and not claim["semi_ge_true"]
    assert experiment.check_claim({"semi": rules(0, 0, 0)["semi"]})["holds"] is None


@pytest.mark.integration
def test_quick_cli_writes_every_output(run_experiment):
    out, result = run_experiment("odice", "--quick", "--rules", "orthogonal",
                                 files=("returns.png", "curves.png", "dataset.npz", "dataset.json",
                                        "orthogonal/metrics.jsonl", "orthogonal/checkpoints"))
    assert result["finished"] and result["seeds"] == 2 and result["claim"]["holds"] is None
    r = result["rules"]["orthogonal"]
    for start in ("dataset", "perturbed"):
        assert len(r["return_per_seed"][start]) == 2
        ci = r["return"][start]
        assert ci["n"] == 2 and ci["ci95_low"] <= ci["mean"] <= ci["ci95_high"]
    assert 0.0 <= r["cos_negative_fraction"] <= 1.0
    saved = dataset_lib.load(str(out / "dataset"))
    assert saved.num_transitions == result["dataset"]["transitions"] == 5000
    assert result["references"]["perturbed"]["distance_to_nearest_dataset_state"]["mean"] > \
        result["references"]["dataset"]["distance_to_nearest_dataset_state"]["mean"]


@pytest.mark.slow
def test_quick_cli_on_brax_scales_rewards_and_perturbs_the_reset_noise(run_experiment):
    # The --gpu path's code at smoke-test size (a briefly trained SAC policy's data on brax hopper).
    out, result = run_experiment("odice", "--quick", "--env", "brax/hopper", "--rules", "semi", "--seeds", "1",
                                 files=("returns.png", "dataset.npz"))
    assert result["env"] == "brax/hopper" and result["ood_env_kwargs"] == {"reset_noise_scale": 0.05}
    returns = dataset_lib.load(str(out / "dataset")).episode_returns  # saved as collected, rewards unscaled
    assert result["dataset"]["reward_scale"] == pytest.approx(1000.0 / np.ptp(returns), rel=1e-5)
    r = result["rules"]["semi"]
    refs = result["references"]["dataset"]
    expected = 100 * (r["return"]["dataset"]["mean"] - refs["random_return"]) / (
        refs["behaviour_return"] - refs["random_return"])
    assert r["normalized_score"]["dataset"]["mean"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_full_experiment(run_experiment):
    _, result = run_experiment("odice")
    assert result["dataset"]["transitions"] == 50_000 and result["gradient_steps_per_seed"] == 20_000
    for rule in odice.UPDATE_RULES:
        r = result["rules"][rule]
        assert len(r["return_per_seed"]["perturbed"]) == 5
        # Every rule beats the behaviour policy from the dataset's starts.
        assert r["return"]["dataset"]["mean"] > result["references"]["dataset"]["behaviour_return"]
    # What the full run showed robustly (experiments/RESULTS.md): the true gradient is worst from perturbed
    # starts (paired difference semi - true about +20, CI well above 0), and forward and backward gradients
    # conflict on almost every batch. Orthogonal >= semi held by +0.25 with a paired CI across 0, so it is not pinned here.
    claim = result["claim"]
    assert isinstance(claim["holds"], bool) and claim["paired_difference"]["semi_minus_true"]["ci95_low"] > 0
    assert all(result["rules"][rule]["cos_negative_fraction"] > 0.5 for rule in odice.UPDATE_RULES)
