"""Sharded training equals single-device training (8 forced CPU devices, in a subprocess)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.integration  # one subprocess compiling nine sharded programs: 3-4 minutes on 2 cores


@pytest.fixture(scope="module")
def report():
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=false"
    env = dict(os.environ, XLA_FLAGS=flags.strip())
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "multidevice_check.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_eight_devices_were_used(report):
    assert report["devices"] == 8


@pytest.mark.parametrize("mode", ["pop", "envs"])
def test_sharded_ppo_matches_single_device(report, mode):
    diffs = report[f"ppo_{mode}_max_diff"]
    assert diffs["episode_return"] == 0.0  # same actions, same episodes
    assert diffs["loss"] < 1e-4 and diffs["value_loss"] < 1e-4, diffs
    assert report["ppo_eval_equal"]


@pytest.mark.parametrize("mode", ["pop", "envs"])
def test_sharded_sac_matches_single_device(report, mode):
    diffs = report[f"sac_{mode}_max_diff"]
    assert report["sac_q_loss_scale"] > 0  # it did learn something to compare
    assert diffs["episode_return"] < 1e-3, diffs
    for key in ("q_loss", "actor_loss", "alpha"):
        assert diffs[key] < 1e-3 * max(1.0, report["sac_q_loss_scale"]), diffs


def test_population_of_16_splits_over_8_devices(report):
    assert report["population_leaf_shape"][0] == 16
    assert report["population_devices"] == 8
    assert [s[0] for s in report["population_shards"]] == [2]  # two runs per device


def test_env_batch_splits_over_devices(report):
    assert report["envs_shard_shapes"] == [[8, 1, 4]]  # 8 seeds x 1 of 8 envs x CartPole obs


def test_dpo_data_parallel_matches_single_device(report):
    assert report["dpo_param_change"] > 1e-3  # it trained
    # SGD: a wrong split or reduction is off by O(1) of the change; rounding by ~1e-6 of it
    assert report["dpo_data_parallel_max_param_diff"] < 1e-4 * report["dpo_param_change"]
    assert report["dpo_data_parallel_max_loss_diff"] < 1e-5


def test_es_population_sharded_over_8_devices_gives_the_same_fitnesses(report):
    single = np.asarray(report["es_smooth_fitness_single"])
    sharded = np.asarray(report["es_smooth_fitness_sharded"])
    assert single.shape == (16,) and len(set(single.round(3))) == 16  # members differ: a real comparison
    np.testing.assert_allclose(sharded, single, rtol=1e-6)
    assert report["es_smooth_fitness_devices"] == 8  # the fitness vector really lives on all 8 devices


def test_lpo_lifetimes_train_sharded_over_8_devices(report):
    # equality is not expected here (see es_population_sharding in tests/multidevice_check.py)
    sharded = np.asarray(report["es_lpo_fitness_sharded"])
    assert sharded.shape == (16,) and np.isfinite(sharded).all() and (sharded >= 1).all()  # episode returns
    assert report["es_lpo_fitness_devices"] == 8
