"""The parl-tabular experiment: a smoke run and its settings' errors."""

import json

import numpy as np
import pytest

from experiments.__main__ import main as cli


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "parl"
    assert cli(["parl-tabular", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "curves.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    assert set(result["mean_curve"]) == {"parl", "myopic"} and len(result["mean_curve"]["parl"]) == 21
    per_seed = result["queries_to_level_per_seed"]["myopic"]
    assert result["reached_level"]["myopic"] == int(np.isfinite(per_seed).sum())
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["config"]["hypergradient"] == "parl"


def test_bad_settings_exit_or_raise_naming_the_field(tmp_path):
    with pytest.raises(SystemExit, match="--set seeds"):
        cli(["parl-tabular", "--set", "seeds=0", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    with pytest.raises(Exception, match="hypergradient"):
        cli(["parl-tabular", "--set", "config.hypergradient='x'", "--out", str(tmp_path / "y")])
