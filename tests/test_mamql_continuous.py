"""Continuous MAMQL on MABrax (rljax.agents.mamql_continuous): demonstration mapping, learning, evaluation."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs.multiagent
from experiments.__main__ import main as cli
from rljax.agents import mamql_continuous as mc
from rljax.agents.iq_learn import IQLearnHParams
from rljax.core import dataset as dataset_lib
from rljax.core.config import ConfigError, broadcast_hparams

ENV = "jaxmarl/hopper_3x1"
HP = IQLearnHParams(critic_lr=1e-3, actor_lr=1e-3, temperature=1e-2)


@pytest.fixture(scope="module")
def env():
    return envs.multiagent.make(ENV, **mc.MABRAX_KWARGS)[0]


def linear_expert_dataset(n=400, seed=0):
    """Global hopper observations [n, 11] and actions tanh(obs @ W) [n, 3]: agent i's joint is column i."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n + 1, 11)).astype(np.float32)
    weights = rng.normal(size=(11, 3)).astype(np.float32) / 2
    action = np.tanh(obs[:-1] @ weights)
    arrays = {"obs": obs[:-1], "action": action, "reward": np.zeros(n, np.float32), "next_obs": obs[1:],
              "terminated": np.zeros(n, bool), "truncated": np.r_[np.zeros(n - 1, bool), True],
              "episode_id": np.zeros(n, np.int64)}
    return dataset_lib.Dataset(**arrays, metadata={})


def test_demonstrations_are_mapped_by_the_envs_own_maps(env):
    data = linear_expert_dataset(n=8)
    demos = mc.MultiAgentDemonstrations.from_dataset(data, env)
    assert demos.obs.shape == (3, 8, 12) and demos.action.shape == (3, 8, 1) and demos.joint_action.shape == (8, 3)
    for i, agent in enumerate(env.agents):
        np.testing.assert_array_equal(demos.action[i, :, 0], data.action[:, i])  # hopper_3x1: agent i drives joint i
        for n in (0, 7):
            expected = env.unwrapped.map_global_obs_to_agents(jnp.asarray(data.obs[n]))[agent]
            np.testing.assert_array_equal(demos.obs[i, n], expected)
            assert demos.obs[i, n, i] == 1.0  # the one-hot agent index
    np.testing.assert_array_equal(demos.next_obs[:, :-1], demos.obs[:, 1:])


def test_mismatched_demonstrations_raise_naming_the_field(env):
    data = linear_expert_dataset(n=8)
    narrow = dataset_lib.Dataset(**{**data.arrays(), "obs": data.obs[:, :10]}, metadata={})
    with pytest.raises(ConfigError, match=r"dataset.obs: .* rows of size 11; the dataset's obs has shape \(8, 10\)"):
        mc.MultiAgentDemonstrations.from_dataset(narrow, env)
    loud = dataset_lib.Dataset(**{**data.arrays(), "action": 2 * np.ones_like(data.action)}, metadata={})
    with pytest.raises(ConfigError, match=r"dataset.action: brax actions lie in \[-1, 1\], got values up to 2.0"):
        mc.MultiAgentDemonstrations.from_dataset(loud, env)
    with pytest.raises(ConfigError, match="agents' observations differ in shape"):
        mc.make_train(mc.MAMQLContinuousConfig(env_kwargs=(("auto_reset", False),)),
                      mc.MultiAgentDemonstrations.from_dataset(data, env))
    with pytest.raises(ConfigError, match="MAMQLContinuousConfig.method: expected one of"):
        mc.MAMQLContinuousConfig(method="gail")


def _train(env, method, steps, seed=0):
    demos = mc.MultiAgentDemonstrations.from_dataset(linear_expert_dataset(), env)
    config = mc.MAMQLContinuousConfig(method=method, num_updates=1, gradient_steps=steps, batch_size=128,
                                      hidden_sizes=(64, 64), eval_episodes=2, max_episode_steps=20)
    trainer = mc.make_train(config, demos)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(seed), HP)
    return trainer, demos, config, state


def _action_error(config, state, demos):
    """Mean |tanh(mean) - expert action| over agents and demonstrations, each agent's own joint."""
    actor = mc.SquashedGaussianActor(demos.joint_action.shape[1] if config.method == "joint_iq" else 1,
                                     config.hidden_sizes)
    means = jax.vmap(lambda p, o: jnp.tanh(actor.apply(p, o).distribution.mean()))(state.actor_params, demos.obs)
    if config.method == "joint_iq":  # agent i acts with the i-th component of its joint policy
        means = jnp.stack([means[i, :, i:i + 1] for i in range(means.shape[0])])
    return float(jnp.abs(means - demos.action).mean())


@pytest.mark.parametrize("method, factor", [("bc", 0.2), ("mamql", 0.5), ("joint_iq", 0.5)])
def test_each_method_moves_every_agents_actions_to_the_expert(env, method, factor):
    trainer, demos, config, state = _train(env, method, steps=300)
    before = _action_error(config, state, demos)
    state, metrics = jax.jit(trainer.update)(state)
    for name, value in metrics.items():
        assert np.isfinite(np.asarray(value)).all(), name
    after = _action_error(config, state, demos)
    assert after < factor * before, (before, after)


@pytest.mark.slow  # about a minute of brax compiling on CPU
def test_seeds_vmap_and_evaluation_is_the_team_return_of_brax(env):
    trainer, demos, config, _ = _train(env, "mamql", steps=2)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    states, metrics = jax.jit(jax.vmap(trainer))(keys, broadcast_hparams(HP, 2))
    assert metrics["loss"].shape == (2, 1) and np.isfinite(np.asarray(metrics["loss"])).all()
    # With zero actor weights every agent's action is tanh(0) = 0: compare with brax's hopper itself.
    zero = jax.tree.map(jnp.zeros_like, jax.tree.map(lambda x: x[0], states))
    key = jax.random.PRNGKey(5)
    ev = jax.jit(trainer.evaluate)(zero, key)
    assert ev["return"].shape == (config.eval_episodes,)
    brax_env = env.unwrapped.env
    reset, step = jax.jit(brax_env.reset), jax.jit(brax_env.step)
    for episode, episode_key in enumerate(jax.random.split(key, config.eval_episodes)):
        state, total, length = reset(episode_key), 0.0, 0
        while length < config.max_episode_steps:
            state = step(state, jnp.zeros(3))
            total, length = total + float(state.reward), length + 1
            if bool(state.done):
                break
        np.testing.assert_allclose(float(ev["return"][episode]), total, rtol=1e-4)
        assert int(ev["length"][episode]) == length


@pytest.mark.slow
def test_quick_cli_runs_the_brax_path(tmp_path):
    out = tmp_path / "run"
    assert cli(["mamql-gems", "--env", ENV, "--quick", "--no-progress", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["env"] == ENV and result["expert_env"] == "brax/hopper" and set(result["methods"]) == set(mc.METHODS)
    for r in result["methods"].values():
        assert len(r["per_seed_return_percent"]) == 2
    assert (out / "returns.png").exists() and (out / "demos.npz").exists()
