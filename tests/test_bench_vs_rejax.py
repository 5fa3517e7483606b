"""The Rejax comparison runs both libraries on equal settings and reports what it promises (speed is not asserted)."""

import json

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks import vs_rejax
from rljax.agents import ppo, sac


def test_rejax_gets_the_same_settings_as_rljax():
    quick = {c.name: c for c in vs_rejax.cases(quick=True)}
    cartpole = vs_rejax.rejax_algorithm(next(c for c in quick.values() if c.algorithm == "ppo"))
    config, hparams = ppo.PRESETS["gymnax/CartPole-v1"]
    assert (cartpole.num_envs, cartpole.num_steps, cartpole.num_epochs, cartpole.num_minibatches) == (4, 128, 4, 4)
    assert (config.num_envs, config.num_steps, config.update_epochs, config.num_minibatches) == (4, 128, 4, 4)
    assert float(cartpole.learning_rate) == hparams.learning_rate == 2.5e-4
    assert float(cartpole.max_grad_norm) == 0.5 and float(cartpole.clip_eps) == 0.2
    assert float(cartpole.ent_coef) == 0.01 and float(cartpole.vf_coef) == 0.5
    assert cartpole.actor.hidden_layer_sizes == (64, 64) and cartpole.actor.activation is jax.nn.tanh

    pendulum = vs_rejax.rejax_algorithm(next(c for c in quick.values() if c.algorithm == "sac"))
    config, hparams = sac.PRESETS["gymnax/Pendulum-v1"]
    assert (pendulum.batch_size, pendulum.buffer_size, pendulum.fill_buffer) == (256, 100_000, 1_000)
    assert pendulum.num_epochs == config.gradient_steps == 1 and config.steps_per_update == 1
    assert pendulum.num_critics == config.num_q == 2
    assert float(pendulum.polyak) == 1.0 - hparams.tau == 0.995  # Rejax: target <- polyak target + (1 - polyak) online
    assert pendulum.critic.hidden_layer_sizes == (256, 256)


def test_five_tuple_env_ends_the_episode_on_truncation_as_old_gymnax():
    env, params = gymnax.make("CartPole-v1")
    shimmed = vs_rejax._FiveTupleEnv(env)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    late = state.replace(time=params.max_steps_in_episode - 1)  # upright, so only the time limit ends it
    out_new = env.step(jax.random.PRNGKey(1), late, 0, params)
    out_old = shimmed.step(jax.random.PRNGKey(1), late, 0, params)
    assert len(out_old) == 5 and not bool(out_new[3]) and bool(out_new[4])  # truncated, not terminated
    assert bool(out_old[3])
    np.testing.assert_array_equal(out_old[0], out_new[0])
    assert shimmed.num_actions == env.num_actions


@pytest.mark.integration
def test_quick_comparison_writes_both_libraries(tmp_path):
    out = tmp_path / "vs_rejax.json"
    vs_rejax.main(["--quick", "--repeats", "1", "--only", "CartPole-v1, PureJaxRL defaults, 1 seed", "--out", str(out)])
    (result,) = json.loads(out.read_text())["results"]
    for library in ("rljax", "rejax"):
        r = result[library]
        assert r["env_steps"] == 4 * 128 * 2  # two PPO updates each
        assert r["compile_seconds"] > 0 and r["run_seconds"] > 0
        assert len(r["final_return_per_seed"]) == 1 and 8 <= r["final_return_per_seed"][0] <= 500
    assert result["rljax_over_rejax"] == result["rljax"]["env_steps_per_second"] / result["rejax"]["env_steps_per_second"]
    assert jnp.isfinite(result["rljax_over_rejax"])


def test_ppo_seed_counts_are_chosen_by_flag():
    """--ppo-seeds 256 (issue 3's GPU figure) makes one PPO case of 256 vmapped seeds at PureJaxRL's 5e5 steps."""
    ppo_cases = [c for c in vs_rejax.cases(quick=False, ppo_seeds=(256,)) if c.algorithm == "ppo"]
    assert [(c.name, c.seeds, c.total_timesteps) for c in ppo_cases] == [
        ("PPO gymnax/CartPole-v1, PureJaxRL defaults, 256 seeds", 256, 499_712)]
    assert [c.seeds for c in vs_rejax.cases(quick=True) if c.algorithm == "ppo"] == [1, 8]
