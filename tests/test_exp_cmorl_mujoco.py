"""cmorl-mujoco: budgets at equal env steps, scoring against the (-100, -100) reference, the quick run."""


import numpy as np
import pytest

from experiments import cmorl_mujoco
from rljax.agents import cmorl
from rljax.core.config import ConfigError


@pytest.mark.parametrize("budget, steps, extra", [("cpu", 221_184, 12), ("gpu", 1_474_560, 20), ("quick", 1_536, 2)])
def test_budgets_give_equal_env_steps(budget, steps, extra):
    for env in cmorl_mujoco.ENVS:
        config, hparams = cmorl_mujoco.settings(env, budget)
        assert config.stage1_env_steps(2) + config.stage2_env_steps(2) == steps
        assert cmorl.weight_sweep_updates(config, 2) == extra
        # The weight sweep's 6 policies take (stage-1 + extra) updates: exactly C-MORL's env steps.
        assert 6 * (config.stage1_updates + extra) * config.moppo.batch_size == steps
        # every rollout is longer than an episode, so each update's rollout finishes episodes
        assert config.moppo.num_steps > dict(config.moppo.env_kwargs)["episode_length"]
        assert config.return_lower_bound == cmorl_mujoco.REF_POINT
        assert (hparams.beta, hparams.barrier_t) == (0.9, 20.0)
    assert cmorl_mujoco.settings("hopper-2d", "gpu")[0].stage1_env_steps(2) == 983_040  # the paper's 1.0M of 1.5M


def test_overrides_and_unequal_budgets_are_refused():
    config, hparams = cmorl_mujoco.settings("halfcheetah", "cpu", ["num_envs=4", "barrier_t=10.0"])
    assert config.moppo.num_envs == 4 and hparams.barrier_t == 10.0
    config, _ = cmorl_mujoco.settings("halfcheetah", "cpu", ["num_selected=2", "extension_updates=4"])
    with pytest.raises(ConfigError, match="do not divide over 6 weight-sweep policies"):
        cmorl.weight_sweep_updates(config, 2)  # 2 x 2 x 2 x 4 = 32 updates: not 6 equal continuations


def test_score_against_the_reference_point():
    s = cmorl_mujoco.score([[0.0, 0.0], [-50.0, 50.0], [-60.0, -10.0]])  # the last is dominated
    assert s["hypervolume"] == pytest.approx(100 * 100 + 50 * 50)
    assert s["front_size"] == 2 and s["front"] == [[0.0, 0.0], [-50.0, 50.0]]
    w = np.linspace(0, 1, 101)
    assert s["expected_utility"] == pytest.approx(np.maximum(0.0, -50 * w + 50 * (1 - w)).mean())
    assert cmorl_mujoco.score([[-150.0, 10.0]])["hypervolume"] == 0.0  # dominates no part of the reference box


@pytest.mark.slow  # compiles brax physics four times: about 3.5 minutes on one core
def test_quick_cli_writes_outputs(run_experiment):
    _, result = run_experiment("cmorl-mujoco", "--quick", "--seeds", "2", files=("fronts.png",))
    assert set(result["envs"]) == {"halfcheetah", "hopper-2d"}
    assert set(result["claims"]) == {f"{env}/{metric}_ge_weight_sweep" for env in ("halfcheetah", "hopper-2d")
                                     for metric in ("hypervolume", "expected_utility")}
    for env in result["envs"].values():
        assert env["env_steps_per_seed_per_method"] == 1_536
        for method in env["methods"].values():
            assert len(method["per_seed"]) == 2 and np.isfinite(method["hypervolume"]["mean"])


@pytest.mark.slow  # the full CPU reproduction: about 8 minutes on one core
def test_full_experiment_claims(run_experiment):
    claims = run_experiment("cmorl-mujoco")[1]["claims"]
    assert all(c["holds"] for c in claims.values()), claims
