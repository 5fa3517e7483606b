"""The mdpo-cartpole experiment: the arms' settings, steps-to-solve, and a smoke run."""

import json

import numpy as np
import pytest

from experiments import mdpo_cartpole as exp
from experiments.__main__ import main as cli
from rljax.agents import mdpo


def test_arms_share_the_batch_and_differ_only_where_the_ablation_says():
    s = exp.Settings()
    arms = exp.arm_trainers(s)
    assert set(arms) == set(exp.ARMS)
    configs = {arm: trainer.config for arm, (trainer, _) in arms.items()}
    assert configs["mdpo"].ppo.update_epochs == 10 and configs["mdpo_m1"].ppo.update_epochs == 1
    assert configs["mdpo"].anneal_step_size and not configs["mdpo_fixed_t"].anneal_step_size
    assert configs["ppo"].update_epochs == 4 and configs["ppo"].num_minibatches == 4
    for arm in ("mdpo", "mdpo_m1", "mdpo_fixed_t"):
        assert isinstance(arms[arm][1], mdpo.MDPOHParams) and configs[arm].ppo.num_minibatches == 1
    batches = {(c.ppo if arm != "ppo" else c).num_envs * (c.ppo if arm != "ppo" else c).num_steps
               for arm, c in configs.items()}
    assert batches == {512} and configs["ppo"].total_timesteps == s.total_timesteps == 196 * 512


def test_steps_to_solve_counts_updates_until_the_first_solved_return():
    curve = np.array([[10.0, 480.0, 20.0], [10.0, 20.0, 30.0]])
    assert exp.steps_to_solve(curve, 512) == [1024, None]


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "mdpo"
    assert cli(["mdpo-cartpole", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "curves.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    assert set(result["returns_per_seed"]) == set(exp.ARMS)
    assert all(len(v) == 2 for v in result["returns_per_seed"].values())
    claims = result["claims"]
    assert claims["mdpo_solves"]["holds"] == (np.mean(result["returns_per_seed"]["mdpo"]) >= 475)
