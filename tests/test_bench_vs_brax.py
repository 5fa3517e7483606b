"""The brax-trainer comparison gives brax the same PPO as rljax's and reports what it promises."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from experiments.benchmarks import vs_brax


def test_brax_gets_the_same_ppo_and_batch_layout():
    case = vs_brax.cases(quick=False)[1]
    config, hp = case.config, case.hparams
    kwargs = vs_brax.brax_trainer_kwargs(case, quick=False)
    # brax collects batch_size * num_minibatches trajectories of unroll_length steps per update:
    # one 16-step unroll in each of the 256 envs, as rljax's 256 x 16 batch.
    assert kwargs["batch_size"] * kwargs["num_minibatches"] == kwargs["num_envs"] == config.num_envs == 256
    assert kwargs["unroll_length"] == config.num_steps == 16 and kwargs["num_minibatches"] == 8
    assert kwargs["num_updates_per_batch"] == config.update_epochs == 4
    assert kwargs["num_timesteps"] == config.total_timesteps == 50 * 256 * 16
    assert (kwargs["learning_rate"], kwargs["clipping_epsilon"], kwargs["entropy_cost"]) == (3e-4, 0.2, 0.0)
    assert (kwargs["discounting"], kwargs["gae_lambda"], kwargs["max_grad_norm"]) == (0.99, 0.95, 0.5)
    assert kwargs["vf_loss_coefficient"] == hp.vf_coef == 0.5
    assert kwargs["normalize_observations"] and config.normalize_obs
    networks = kwargs["network_factory"](observation_size=17, action_size=6)
    params = networks.policy_network.init(jax.random.PRNGKey(0))
    # 17 -> 256 -> 256 -> 6 means and 6 log-stds (state-independent: a parameter, not a layer output).
    kernels = sorted(leaf.shape for leaf in jax.tree.leaves(params) if leaf.ndim == 2)
    assert kernels == sorted([(17, 256), (256, 256), (256, 6)])
    vectors = sorted(leaf.shape for leaf in jax.tree.leaves(params) if leaf.ndim == 1)
    assert vectors == sorted([(256,), (256,), (6,), (6,)])  # two hidden biases, the mean's bias, the log-std


def test_brax_sac_gets_the_same_settings():
    case = vs_brax.cases(quick=False)[2]
    config, hp = case.config, case.hparams
    kwargs = vs_brax.brax_trainer_kwargs(case, quick=False)
    assert case.algorithm == "sac" and config.env == "brax/inverted_pendulum"
    assert kwargs["num_envs"] == config.num_envs == 4
    assert kwargs["grad_updates_per_step"] == 4 and config.gradient_steps == 4 and config.steps_per_update == 1
    assert kwargs["min_replay_size"] == config.learning_starts == 256
    assert kwargs["num_timesteps"] == config.total_timesteps == 20_256
    assert (kwargs["batch_size"], kwargs["max_replay_size"], kwargs["tau"]) == (256, 100_000, 0.005)
    assert kwargs["learning_rate"] == hp.actor_lr == hp.critic_lr == hp.alpha_lr == 3e-4
    assert config.target_entropy_scale == 0.5  # brax's -0.5 x action size
    # Two epochs of whole actor steps after the prefill: (20,256 - 256) / 2 / 4 envs = 2,500 each.
    assert (kwargs["num_timesteps"] - kwargs["min_replay_size"]) % (2 * kwargs["num_envs"]) == 0
    networks = kwargs["network_factory"](observation_size=4, action_size=1)
    kernels = sorted(leaf.shape for leaf in jax.tree.leaves(networks.policy_network.init(jax.random.PRNGKey(0)))
                     if leaf.ndim == 2)
    assert kernels == sorted([(4, 256), (256, 256), (256, 2)])  # mean and scale of a 1-d action


def test_brax_sac_refuses_settings_it_cannot_express():
    case = vs_brax.cases(quick=True)[2]
    uneven = dataclasses.replace(case, hparams=case.hparams.replace(alpha_lr=1e-3))
    with pytest.raises(ValueError, match="one learning rate"):
        vs_brax.brax_trainer_kwargs(uneven, quick=True)
    fractional = dataclasses.replace(case, config=dataclasses.replace(case.config, steps_per_update=3))
    with pytest.raises(ValueError, match="gradient_steps 4 per steps_per_update 3"):
        vs_brax.brax_trainer_kwargs(fractional, quick=True)


def test_device_put_replicated_stacks_a_copy_per_device():
    tree = {"w": np.arange(6.0).reshape(2, 3), "step": np.int32(7)}
    out = vs_brax._device_put_replicated(tree, jax.devices())
    n = len(jax.devices())
    assert out["w"].shape == (n, 2, 3) and out["step"].shape == (n,)
    np.testing.assert_array_equal(out["w"][0], tree["w"])
    assert int(out["step"][0]) == 7


@pytest.mark.slow
@pytest.mark.parametrize("name, env_steps", [("PPO brax/inverted_pendulum", 2 * 256 * 16),
                                             ("SAC brax/inverted_pendulum", 1_256)])
def test_quick_comparison_runs_brax_and_rljax(tmp_path, name, env_steps):
    out = tmp_path / "vs_brax.json"
    vs_brax.main(["--quick", "--repeats", "1", "--only", name, "--out", str(out)])
    (result,) = json.loads(out.read_text())["results"]
    for library in ("rljax", "brax"):
        r = result[library]
        assert r["env_steps"] == env_steps
        assert r["compile_seconds"] > 0 and r["run_seconds"] > 0 and np.isfinite(r["final_return"])
    # brax's second epoch runs without compiling: its rate is of the same order as rljax's, not 100x below.
    assert 0.1 < result["rljax_over_brax"] < 10
