"""AILBoost: mixture-weight bookkeeping, the weak-learner ring, rounds under jit/vmap, demo checks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import experts, make_demos
from rljax.agents import ailboost, sac
from rljax.core import dataset as dataset_lib
from rljax.core.config import ConfigError
from rljax.core.dataset import DatasetError

TINY = dict(num_rounds=12, episodes_per_round=1, max_learners=4, sac_steps_per_round=4, disc_steps_per_round=3,
            disc_batch_size=16, sac=sac.SACConfig(hidden_sizes=(16,), batch_size=16), eval_episodes=3)


def closed_form_weights(t: int, eta: float, k: int) -> np.ndarray:
    """Boosting's weights after learners 0..t: w_0 = (1-eta)^t, w_j = eta (1-eta)^(t-j); the k most recent, renormalised."""
    w = np.array([(1 - eta) ** t] + [eta * (1 - eta) ** (t - j) for j in range(1, t + 1)])
    w[: max(0, t + 1 - k)] = 0.0
    return w / w.sum()


def test_mixture_weights_over_many_rounds():
    eta, k, rounds = 0.05, 10, 40
    weights = jnp.zeros(rounds)
    add = jax.jit(ailboost.add_learner, static_argnums=3)
    for t in range(rounds):
        weights = add(weights, t, eta, k)
        mix = ailboost.mixture(weights)
        np.testing.assert_allclose(mix.sum(), 1.0, rtol=1e-6)
        np.testing.assert_allclose(mix[: t + 1], closed_form_weights(t, eta, k), rtol=1e-5, atol=1e-7)
        kept = np.flatnonzero(np.asarray(weights) > 0)
        # The k most recent learners keep weight; the oldest is dropped when the (k+1)-th arrives.
        np.testing.assert_array_equal(kept, np.arange(max(0, t + 1 - k), t + 1))
        assert not np.asarray(weights[t + 1:]).any()
    # After the first learner is gone, consecutive learners differ by the factor (1 - eta).
    np.testing.assert_allclose(weights[-9:] * (1 - eta), weights[-10:-1], rtol=1e-5)


def test_first_learner_starts_with_all_the_weight():
    weights = ailboost.add_learner(jnp.zeros(5), 0, 0.05, 3)
    np.testing.assert_allclose(weights, [1, 0, 0, 0, 0])
    weights = ailboost.add_learner(weights, 1, 0.05, 3)
    np.testing.assert_allclose(weights, [0.95, 0.05, 0, 0, 0], rtol=1e-6)


def test_evaluation_draws_one_learner_per_episode_by_its_mixture_weight():
    # Ring of 4 slots holding the learners of rounds 4, 2 and 3; slot 1 is empty.
    snapshot_round = jnp.array([4, -1, 2, 3])
    round_weights = jnp.array([0.0, 0.0, 0.2, 0.3, 0.5, 0.0])  # by round
    episodes = 20_000
    slots = jax.jit(ailboost.episode_learners, static_argnums=3)(jax.random.key(0), snapshot_round, round_weights,
                                                                 episodes)
    assert slots.shape == (episodes,)
    frequency = np.bincount(np.asarray(slots), minlength=4) / episodes
    # Slot j carries the weight of the round in it; 3 standard errors of 20,000 draws is below 0.011.
    np.testing.assert_allclose(frequency, [0.5, 0.0, 0.2, 0.3], atol=0.011)
    assert frequency[1] == 0.0  # an empty slot is never drawn
    # Unnormalised weights (the uniform ablation's 0/1 flags) draw the same way.
    flags = ailboost.episode_learners(jax.random.key(1), snapshot_round, (round_weights > 0).astype(jnp.float32),
                                      episodes)
    np.testing.assert_allclose(np.bincount(np.asarray(flags), minlength=4) / episodes, [1 / 3, 0, 1 / 3, 1 / 3],
                               atol=0.011)


@pytest.fixture(scope="module")
def pendulum_demos():
    """Two short greedy episodes of an (untrained-quality) SAC expert: the format, not the quality, matters here."""
    expert = experts.train("gymnax/Pendulum-v1", jax.random.PRNGKey(0), agent_steps=300,
                           config=sac.SACConfig(hidden_sizes=(16,), batch_size=16, learning_starts=100,
                                                total_timesteps=300))
    data = make_demos.demonstrations(expert, jax.random.PRNGKey(1), 2, metadata={"env": "gymnax/Pendulum-v1"})
    return data


def train_variant(variant: str, demos):
    """``variant`` trained for 12 rounds on 2 seeds (always the same keys), and its evaluation."""
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    config = ailboost.AILBoostConfig(variant=variant, **TINY)
    trainer = ailboost.make_train(config, demos)
    state, metrics = jax.jit(jax.vmap(trainer, in_axes=(0, None)))(keys, ailboost.AILBoostHParams())
    returns = jax.jit(jax.vmap(trainer.evaluate))(state, keys)["return"]
    return config, state, metrics, returns


@pytest.fixture(scope="module")
def runs(pendulum_demos):
    # The uniform ablation differs from AILBoost only in its sampling weights; it runs in the slow tier.
    return {variant: train_variant(variant, pendulum_demos) for variant in ("ailboost", "dac")}


@pytest.mark.parametrize("variant", [
    "ailboost", "dac", pytest.param("uniform", marks=pytest.mark.slow),
])
def test_rounds_run_under_jit_and_vmap(variant, runs, pendulum_demos):
    config, state, metrics, returns = runs[variant] if variant in runs else train_variant(variant, pendulum_demos)
    for name, value in metrics.items():
        assert value.shape == (2, config.num_rounds), name
        assert np.isfinite(np.asarray(value)).all(), name
    np.testing.assert_array_equal(metrics["num_learners"][0], np.minimum(np.arange(1, 13), 4))
    # The ring holds the 4 most recent learners: rounds 8..11 in slots 0..3.
    np.testing.assert_array_equal(state.snapshot_round[0], [8, 9, 10, 11])
    # Every round filled its own segment with one 200-step episode; nothing was evicted.
    np.testing.assert_array_equal(state.replay.size[0], np.full(12, 200))
    np.testing.assert_allclose(jax.vmap(ailboost.mixture)(state.weights).sum(axis=1), 1.0, rtol=1e-6)
    assert returns.shape == (2, 3) and np.isfinite(np.asarray(returns)).all()


def test_variants_train_different_discriminators(runs):
    # Same keys, same first round; then the discriminator's data and loss differ.
    leaf = lambda variant: np.asarray(jax.tree.leaves(runs[variant][1].disc_params)[0])  # noqa: E731
    assert not np.allclose(leaf("ailboost"), leaf("dac"))
    # AILBoost minimises the reverse-KL loss E_E[exp(-D)] + E_mix[D], which is 1 minus the divergence estimate on
    # the same batch; DAC minimises binary cross-entropy, which is not, and reports its accuracy.
    ail, dac = runs["ailboost"][2], runs["dac"][2]
    np.testing.assert_allclose(ail["disc_loss"] + ail["kl_estimate"], 1.0, rtol=1e-5, atol=1e-6)
    assert "disc_accuracy" in dac and "disc_accuracy" not in ail
    assert np.abs(dac["disc_loss"] + dac["kl_estimate"] - 1.0).min() > 1e-3
    # With the tanh-bounded logits in (-1, 1), BCE lies between 2 softplus(-1) = 0.627 and 2 softplus(1) = 2.627.
    assert (np.asarray(dac["disc_loss"]) > 2 * np.log1p(np.exp(-1.0))).all()
    assert (np.asarray(dac["disc_loss"]) < 2 * np.log1p(np.exp(1.0))).all()


def test_snapshot_is_the_actor_that_collected_the_round(pendulum_demos):
    tiny = {**TINY, "sac_steps_per_round": 1, "disc_steps_per_round": 1}
    trainer = ailboost.make_train(ailboost.AILBoostConfig(**tiny), pendulum_demos)
    state = trainer.init(jax.random.PRNGKey(0), ailboost.AILBoostHParams())
    before = state.learner.actor_params
    state, _ = jax.jit(trainer.update)(state)
    jax.tree.map(lambda ring, p: np.testing.assert_array_equal(ring[0], p), state.snapshots, before)
    # SAC kept training after the snapshot.
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state.learner.actor_params, before)
    assert max(jax.tree.leaves(moved)) > 0


@pytest.mark.parametrize("bounded", [True, False])
def test_discriminator_output_is_bounded_like_the_official_one(bounded, pendulum_demos):
    # The official Discriminator ends in a tanh, so D, SAC's reward, lies in (-1, 1) however large its
    # pre-activation; with disc_tanh_output=False it is the raw linear output. Scaling every weight and
    # bias by 4 scales a 2-hidden-layer ReLU net's output by 4^3 = 64.
    tiny = {**TINY, "disc_tanh_output": bounded, "sac_steps_per_round": 1, "disc_steps_per_round": 1}
    trainer = ailboost.make_train(ailboost.AILBoostConfig(**tiny), pendulum_demos)
    state = trainer.init(jax.random.PRNGKey(0), ailboost.AILBoostHParams())
    state = state.replace(disc_params=jax.tree.map(lambda p: 4.0 * p, state.disc_params))
    _, metrics = jax.jit(trainer.update)(state)
    reward = abs(float(metrics["imitation_reward"]))
    assert (reward <= 1.0) if bounded else (reward > 5.0), reward


def test_demonstrations_that_do_not_match_the_env_are_refused(pendulum_demos):
    cartpole = dataset_lib.Dataset(
        obs=np.zeros((3, 4), np.float32), action=np.zeros(3, np.int32), reward=np.ones(3, np.float32),
        next_obs=np.zeros((3, 4), np.float32), terminated=np.array([False, False, True]),
        truncated=np.zeros(3, bool), episode_id=np.zeros(3, np.int32), metadata={},
    )
    with pytest.raises(DatasetError, match=r"demos: field 'obs' has rows of shape \(4,\), the env expects \(3,\)"):
        ailboost.make_train(ailboost.AILBoostConfig(**TINY), cartpole)
    wrong_action = dataclasses.replace(pendulum_demos, action=np.zeros((pendulum_demos.num_transitions, 2), np.float32))
    with pytest.raises(DatasetError, match=r"field 'action' .* rows of shape \(2,\).*expected float rows of shape \(1,\)"):
        ailboost.make_train(ailboost.AILBoostConfig(**TINY), wrong_action)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="AILBoostConfig.variant: expected one of .* got 'gail'"):
        ailboost.AILBoostConfig(variant="gail")
    with pytest.raises(ConfigError, match="max_learners"):
        ailboost.AILBoostConfig(max_learners=0)
    with pytest.raises(ConfigError, match="AILBoostConfig.disc_activation: expected one of .* got 'sigmoid'"):
        ailboost.AILBoostConfig(disc_activation="sigmoid")
    with pytest.raises(ConfigError, match="discrete actions"):
        ailboost.make_env(ailboost.AILBoostConfig(env="gymnax/CartPole-v1"))


@pytest.mark.integration
def test_quick_cli_writes_every_output(tmp_path, pendulum_demos, run_experiment):
    demos = dict(pendulum_demos.metadata, expert_return=-150.0, random_return=-1200.0)
    dataset_lib.save(dataclasses.replace(pendulum_demos, metadata=demos), str(tmp_path / "demos"))
    run_experiment("ailboost", "--quick", "--demos", str(tmp_path / "demos"), "--variants", "ailboost,dac",
                   files=("learning_curves.png", "divergence.png", "ailboost/metrics.jsonl", "dac/metrics.jsonl"))


@pytest.mark.slow
def test_full_experiment_claims(run_experiment):
    """The reproduction at the recorded seed (about 6.5 minutes on one core). Measured with the official
    code's discriminator: the divergence claim holds; the final score (67.4: one seed collapses in the last
    rounds) and the learning-curve area (49.9 vs DAC's 68.0) do not. A replicate (--seed 1) gave a final
    score of 99.0 (experiments/RESULTS.md)."""
    claims = run_experiment("ailboost")[1]["claims"]
    assert claims["divergence"]["holds"]
    failing = {name: claims[name] for name in ("final", "auc") if not claims[name]["holds"]}
    if failing:
        pytest.xfail(f"AILBoost's claims that do not hold at the recorded seed: {failing}")


@pytest.mark.slow
def test_quick_cli_on_brax_hopper(run_experiment):
    """The --gpu path's env at smoke-test size: a briefly trained SAC expert's demonstration on brax hopper,
    then AILBoost and DAC rounds on it (about 4.5 minutes on one core, most of it compiling brax)."""
    _, result = run_experiment("ailboost", "--quick", "--env", "brax/hopper", "--seeds", "1",
                               "--variants", "ailboost,dac", files=("learning_curves.png", "divergence.png"))
    assert result["env"] == "brax/hopper" and result["rounds"] == 4
    assert result["env_steps_per_seed"] == 4 * 2 * 1000  # 2 episodes of hopper's 1000-step limit per round
    expert, random = result["expert_return"], result["random_return"]
    assert np.isfinite([expert, random]).all() and expert != random
    for variant in ("ailboost", "dac"):
        r = result["variants"][variant]
        assert len(r["kl_estimate_per_round"]) == 4 and np.isfinite(r["kl_estimate_per_round"]).all()
        # The score puts the random policy at 0 and the expert at 100, in hopper's return units.
        final = r["final_return"]["mean"]
        assert r["final_score"]["mean"] == pytest.approx(100 * (final - random) / (expert - random), rel=1e-4)


@pytest.mark.parametrize("variant, sac_replay", [("ailboost", "mixture"), ("ailboost", "buffer")])
def test_sac_replay_of_the_data_of_dropped_learners(variant, sac_replay, pendulum_demos):
    # sac_replay="mixture": SAC never samples the data of learners dropped from the mixture (older than the
    # max_learners most recent), which the discriminator is not trained on; "buffer" (the default) replays
    # everything. Poisoning that data with NaN leaves SAC finite only if it is never sampled.
    tiny = {**TINY, "variant": variant, "sac_replay": sac_replay, "sac_steps_per_round": 20, "disc_steps_per_round": 1}
    trainer = ailboost.make_train(ailboost.AILBoostConfig(**tiny), pendulum_demos)
    update = jax.jit(trainer.update)
    state = trainer.init(jax.random.PRNGKey(0), ailboost.AILBoostHParams())
    for _ in range(6):
        state, _ = update(state)
    dropped = (np.asarray(state.weights) == 0) & (np.asarray(state.replay.size) > 0)
    np.testing.assert_array_equal(np.flatnonzero(dropped), [0, 1])  # K = 4: rounds 2..5 are kept
    poison = lambda x: jnp.where(jnp.asarray(dropped).reshape((-1,) + (1,) * (x.ndim - 1)), jnp.nan, x)  # noqa: E731
    state = state.replace(replay=state.replay.replace(data=jax.tree.map(poison, state.replay.data)))
    state, metrics = update(state)
    finite = np.isfinite(float(metrics["q_loss"])) and all(
        np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves((state.learner.actor_params,
                                                                        state.learner.critic_params)))
    assert finite == (sac_replay == "mixture")
    with pytest.raises(Exception, match="sac_replay: expected one of"):
        ailboost.AILBoostConfig(**{**tiny, "sac_replay": "kept"})
