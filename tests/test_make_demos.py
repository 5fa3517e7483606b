"""make-demos: expert training or loading, greedy demonstration episodes, metadata, errors."""

import json

import jax
import numpy as np
import pytest

from experiments import experts, make_demos
from experiments.__main__ import main as cli
from rljax.agents import ppo
from rljax.core import dataset as ds
from rljax.core.config import ConfigError

SMALL_PPO = ppo.PPOConfig(env="gymnax/CartPole-v1", num_envs=4, num_steps=16, total_timesteps=4 * 16 * 4,
                          update_epochs=1, num_minibatches=1, hidden_sizes=(16,))


def test_demonstrations_are_whole_first_episodes():
    expert = experts.train("gymnax/CartPole-v1", jax.random.PRNGKey(0), config=SMALL_PPO)
    data = make_demos.demonstrations(expert, jax.random.PRNGKey(1), 3, metadata={"env": "gymnax/CartPole-v1"})
    ds.validate(data)
    assert data.num_episodes == 3
    ends = np.flatnonzero(data.terminated | data.truncated)
    np.testing.assert_array_equal(ends, np.cumsum(data.episode_lengths) - 1)  # each episode ends done
    # Greedy: every stored action is the policy's most likely action at that observation.
    greedy = np.asarray(expert.greedy(data.obs, jax.random.PRNGKey(2))[0])
    np.testing.assert_array_equal(data.action, greedy)
    # One episode per env: the first of each column of the collection (column 0's is episode 0).
    source = data.metadata["source_episodes"]
    assert source[0] == 0 and source == sorted(set(source))


def test_sac_expert_actions_are_in_the_env_box():
    from rljax.agents import sac

    config = sac.SACConfig(hidden_sizes=(16,), batch_size=16, learning_starts=100, total_timesteps=200)
    expert = experts.train("gymnax/Pendulum-v1", jax.random.PRNGKey(0), config=config)
    assert expert.metadata["agent"] == "sac" and expert.metadata["agent_steps"] == 200
    data = make_demos.demonstrations(expert, jax.random.PRNGKey(1), 2, stochastic=True)
    assert data.action.shape == (400, 1) and data.action.dtype == np.float32
    assert np.abs(data.action).max() <= 2.0 and np.abs(data.action).max() > 1.0  # Pendulum's box is [-2, 2]


@pytest.mark.integration
def test_make_demos_cli_from_a_saved_run(tmp_path, capsys):
    run = tmp_path / "ppo_run"
    assert cli(["ppo", "--env", "gymnax/CartPole-v1", "--seeds", "2", "--total-steps", "2048", "--out", str(run),
                "--no-progress", "--eval-every", "0"]) == 0
    out = tmp_path / "demos"
    assert cli(["make-demos", "--env", "gymnax/CartPole-v1", "--episodes", "2", "--expert-run", str(run),
                "--expert-seed", "1", "--out", str(out)]) == 0
    data = ds.load(str(out))
    meta = data.metadata
    assert data.num_episodes == 2 and meta["agent"] == "ppo" and meta["expert_seed_index"] == 1
    assert meta["agent_steps"] == 2048 and meta["expert_run"] == str(run)
    assert 0 < meta["random_return"] < 50 and meta["expert_return"] > 0
    assert meta["command"].startswith("python -m experiments make-demos --env gymnax/CartPole-v1 --episodes 2")
    assert "expert mean return" in capsys.readouterr().out
    with open(run / "config.json") as f:
        assert json.load(f)["seeds"] == 2
    with pytest.raises(ConfigError, match=r"seed_index: expected 0 <= seed_index < 2 .* got 5"):
        experts.load(str(run), 5)
    with pytest.raises(ConfigError, match="trained on 'gymnax/CartPole-v1', not on --env 'gymnax/Acrobot-v1'"):
        make_demos.make_demos("gymnax/Acrobot-v1", 1, jax.random.PRNGKey(0), expert_run=str(run))


def test_agent_errors():
    with pytest.raises(ConfigError, match="agent: expected one of"):
        experts.train("gymnax/CartPole-v1", jax.random.PRNGKey(0), agent="dqn")
    with pytest.raises(ConfigError, match="agent 'sac' cannot train on 'gymnax/CartPole-v1'.*discrete"):
        experts.train("gymnax/CartPole-v1", jax.random.PRNGKey(0), agent="sac")
    with pytest.raises(FileNotFoundError, match="expected the directory of a ppo or sac run"):
        experts.load("/nonexistent/run")
