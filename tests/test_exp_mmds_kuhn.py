"""The mmds-kuhn experiment: a smoke run and its settings' errors."""

import json

import pytest

from experiments.__main__ import main as cli


def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "mmds"
    assert cli(["mmds-kuhn", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "exploitability.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    assert len(result["mean_curve"]) == 11 and len(result["ratio_per_blueprint"]) == 3
    # Ten updates from random blueprints already lower the mean exploitability.
    assert result["exploitability"]["final"]["mean"] < result["exploitability"]["blueprint"]["mean"]


def test_bad_settings_exit_naming_the_field(tmp_path):
    with pytest.raises(SystemExit, match="--set blueprints / num_updates / step_size / regularization"):
        cli(["mmds-kuhn", "--set", "step_size=0", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
