"""Determinism, checkpoint/resume and the host loop's guards."""

import json

import jax
import numpy as np
import pytest

from rljax.agents import ppo
from rljax.core import loop as loop_lib
from rljax.core.checkpoint import CheckpointMismatchError
from rljax.core.config import ConfigError, broadcast_hparams, to_dict

CONFIG = ppo.PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 8, eval_episodes=2)
HPARAMS = ppo.PPOHParams()
LOOP = loop_lib.LoopConfig(chunk_updates=2, eval_every_chunks=0, checkpoint_every_chunks=1, progress=False)


def run(run_dir, config=CONFIG, resume=False, **loop_changes):
    trainer = ppo.make_train(config)
    loop = loop_lib.LoopConfig(**{**LOOP.__dict__, **loop_changes})
    return loop_lib.run(
        trainer, jax.random.PRNGKey(42), HPARAMS, num_seeds=2, run_dir=str(run_dir),
        config_dict={"config": to_dict(config)}, loop=loop, resume=resume,
    )


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def assert_bit_identical(a, b):
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_same_key_same_config_is_bit_identical(tmp_path):
    a = run(tmp_path / "a")
    b = run(tmp_path / "b")
    assert_bit_identical(a.state.params, b.state.params)
    # and the pure train() entry point agrees with itself too
    trainer = ppo.make_train(CONFIG)
    s1, _ = jax.jit(trainer)(jax.random.PRNGKey(0), HPARAMS)
    s2, _ = jax.jit(trainer)(jax.random.PRNGKey(0), HPARAMS)
    assert_bit_identical(s1.params, s2.params)
    s3, _ = jax.jit(trainer)(jax.random.PRNGKey(1), HPARAMS)
    assert any((x != y).any() for x, y in zip(leaves(s1.params), leaves(s3.params)))


def test_resume_half_way_is_bit_identical_to_uninterrupted(tmp_path):
    full = run(tmp_path / "full")
    half = run(tmp_path / "split", stop_after_updates=4)
    assert half.updates_done == 4
    resumed = run(tmp_path / "split", resume=True)
    assert resumed.updates_done == 8
    assert_bit_identical(full.state, resumed.state)  # params, optimiser, envs, keys: everything
    with open(tmp_path / "split" / "metrics.jsonl") as f:
        updates = [json.loads(line)["update"] for line in f]
    assert updates == list(range(1, 9))  # each update logged once


def test_resume_with_another_config_is_refused(tmp_path):
    run(tmp_path / "r", stop_after_updates=2)
    other = ppo.PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 8, eval_episodes=2, update_epochs=3)
    with pytest.raises(CheckpointMismatchError, match=r"update_epochs: 4 != 3"):
        run(tmp_path / "r", config=other, resume=True)


def test_minibatches_must_divide_the_batch():
    with pytest.raises(ConfigError) as e:
        ppo.PPOConfig(num_envs=3, num_steps=5, num_minibatches=4)
    message = str(e.value)
    assert "num_envs * num_steps = 3 * 5 = 15" in message and "num_minibatches = 4" in message


def test_vmap_over_seeds_and_hyperparameters():
    trainer = ppo.make_train(CONFIG)
    hparams = broadcast_hparams(ppo.PPOHParams(learning_rate=np.array([1e-4, 1e-3, 1e-2], np.float32)), 3)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    states, metrics = jax.jit(jax.vmap(trainer))(keys, hparams)
    assert metrics["loss"].shape == (3, trainer.num_updates)
    np.testing.assert_allclose(states.hparams.learning_rate, [1e-4, 1e-3, 1e-2])


def test_hyperparameter_axis_must_match_seeds():
    trainer = ppo.make_train(CONFIG)
    with pytest.raises(ConfigError, match="learning_rate.*size 3, expected 2"):
        loop_lib.run(trainer, jax.random.PRNGKey(0), ppo.PPOHParams(learning_rate=np.ones(3)), num_seeds=2, loop=LOOP)
