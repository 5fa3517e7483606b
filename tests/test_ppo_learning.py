"""Learning thresholds: PPO solves CartPole (default tier) and brax inverted_pendulum (slow)."""

import jax
import numpy as np
import pytest

from rljax.agents import ppo
from rljax.core.config import broadcast_hparams


def train_seeds(config, hparams, num_seeds, seed=0):
    trainer = ppo.make_train(config)
    keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    states, metrics = jax.jit(jax.vmap(trainer))(keys, broadcast_hparams(hparams, num_seeds))
    evaluation = jax.jit(jax.vmap(trainer.evaluate))(states, jax.random.split(jax.random.PRNGKey(99), num_seeds))
    return np.asarray(metrics["episode_return"]), np.asarray(evaluation["return"])


def test_ppo_solves_cartpole_with_purejaxrl_defaults():
    config, hparams = ppo.PRESETS["gymnax/CartPole-v1"]
    assert (config.num_envs, config.num_steps, config.total_timesteps) == (4, 128, 500_000)
    train_returns, eval_returns = train_seeds(config, hparams, num_seeds=8)
    assert eval_returns.mean() >= 475, eval_returns.mean(axis=1)
    assert train_returns[:, -1].mean() >= 475, train_returns[:, -1]


@pytest.mark.slow
def test_ppo_balances_brax_inverted_pendulum():
    config, hparams = ppo.PRESETS["brax/inverted_pendulum"]
    assert config.total_timesteps <= 500_000
    _, eval_returns = train_seeds(config, hparams, num_seeds=4)
    assert eval_returns.mean() >= 900, eval_returns.mean(axis=1)
