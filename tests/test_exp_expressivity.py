"""The expressivity experiment: its corridor and rewards, and a smoke run whose claims hold."""

import json

import numpy as np
import pytest

from experiments import expressivity as exp
from experiments.__main__ import main as cli


def test_corridor_moves_and_walls():
    tau = exp.corridor(4)
    assert tau.shape == (4, 2, 4) and np.all(tau.sum(-1) == 1)
    assert tau[0, 0, 0] == 1 and tau[3, 1, 3] == 1  # walls
    assert tau[1, 0, 0] == 1 and tau[1, 1, 2] == 1
    reward = exp.entering(3, 4)
    assert reward[:, :, 3].min() == 1 and reward[:, :, :3].max() == 0


@pytest.mark.integration
def test_quick_run_writes_all_outputs_and_its_claims_hold(tmp_path):
    out = tmp_path / "ex"
    assert cli(["expressivity", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "corridor.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    assert all(claim["holds"] for claim in result["claims"].values()), result["claims"]
    # Entering B after A first happens at t = 5 from the middle cell: gamma^5.
    assert result["a_then_b"]["product_value_iteration"] == pytest.approx(0.9**5, rel=1e-12)
    # Max-min: randomise once in the middle, then keep going: 0.5 * gamma / (1 - gamma).
    assert result["max_min"]["lp"] == pytest.approx(0.5 * 0.9 / 0.1, rel=1e-9)


@pytest.mark.parametrize("setting, message", [("num_cells=2", "expected 3 to 6 cells"), ("num_cells=7", "expected 3 to 6 cells"),
                                              ("mr_gammas=(1.0,)", "discounts must lie in")])
def test_bad_settings_exit_naming_the_field(tmp_path, setting, message):
    with pytest.raises(SystemExit, match=message):
        cli(["expressivity", "--set", setting, "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
