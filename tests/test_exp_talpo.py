"""The talpo experiments (one script, three presets) and the meta-ES benchmark."""

import argparse
import json

import numpy as np
import pytest

from experiments import EXPERIMENTS, load
from experiments.__main__ import main as cli
from experiments.talpo import PRESETS, relative_change
from rljax.core.stats import difference_ci95


def test_presets_are_registered_under_their_names():
    for preset in ("cartpole", "minatar", "brax"):
        name = f"talpo-{preset}"
        assert EXPERIMENTS[name] == f"experiments.talpo:{preset}"
        module = load(name)
        assert preset in module.DESCRIPTION and callable(module.main)
    assert PRESETS["minatar"].es.population_size == 64


def test_relative_change_and_difference_interval():
    a = np.array([1.0, 3.0])
    assert relative_change(a, a) == 0.0
    assert relative_change(a, 2 * a) == pytest.approx(np.mean([1.0, 3.0]) / np.mean([1.5, 4.5]))
    assert relative_change(np.zeros(3), np.zeros(3)) == 0.0
    d = difference_ci95(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 0.0]))
    assert d["diff"] == pytest.approx(2.0)
    assert d["ci95_low"] == pytest.approx(2.0 - 1.96 * np.sqrt(1.0 / 3))


@pytest.mark.integration
def test_quick_run_writes_everything_and_resumes(tmp_path):
    out = tmp_path / "run"
    cli(["talpo-cartpole", "--quick", "--no-progress", "--out", str(out)])
    for name in ("config.json", "result.json", "horizons.png", "drift.png", "meta_training.png",
                 "drift_lpo.safetensors", "drift_talpo.safetensors", "meta_lpo/metrics.jsonl",
                 "meta_talpo/checkpoints"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    assert result["horizons"] == [2, 4, 8]
    assert set(result["returns"]) == {"ppo", "lpo", "talpo"}
    assert result["meta_training"]["lpo"]["generations_run"] == 2
    cli(["talpo-cartpole", "--quick", "--no-progress", "--resume", str(out)])  # nothing left to meta-train
    again = json.loads((out / "result.json").read_text())
    assert again["meta_training"]["lpo"]["generations_run"] == 0
    assert again["returns"] == result["returns"]  # the same evolved drifts, the same evaluation keys


@pytest.mark.slow
def test_meta_es_benchmark_writes_json(tmp_path):
    from experiments.benchmarks import meta_es

    report = meta_es.main(["--quick", "--repeats", "1", "--out", str(tmp_path / "b.json")])
    r = report["results"]["cartpole"]
    assert r["population"] == 4 and r["generation"]["run_s"] > 0 and r["population_speedup"] > 0
    assert json.loads((tmp_path / "b.json").read_text())["benchmark"] == "meta_es"


@pytest.mark.slow
def test_full_cartpole_run_shows_the_claims(tmp_path):
    """The paper's claims at CPU scale and the recorded seed (about 9 minutes on one core); figures in the
    experiments/RESULTS.md. Not robust: a replicate (--seed 1) had TA-LPO below LPO at 2N (401.6 vs 419.6), and so
    had the recorded seed on an AVX-512 Xeon (387.9 vs 392.9; recorded on an AVX2 AMD EPYC): this test fails there."""
    result = load("talpo-cartpole").main(argparse.Namespace(**_defaults("talpo-cartpole", str(tmp_path / "run"))))
    claims = result["claims"]
    assert claims["talpo_ge_lpo_every_horizon"]["holds"], claims
    assert claims["drift_changes_over_lifetime"]["relative_change"] >= 0.1
    assert claims["lpo_matches_ppo"]["holds"] and claims["talpo_matches_ppo"]["holds"]


def _defaults(name: str, out: str) -> dict:
    parser = argparse.ArgumentParser()
    load(name).add_arguments(parser)
    return vars(parser.parse_args(["--out", out, "--no-progress"]))
