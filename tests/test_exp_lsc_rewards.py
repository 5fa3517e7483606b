"""The lsc-rewards experiment: a smoke run at a tiny budget."""

import json

import numpy as np
import pytest

from experiments.__main__ import main as cli
from rljax.losses.reward_transforms import AGGREGATIONS


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "lsc"
    assert cli(["lsc-rewards", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "curves.png"):
        assert (out / name).exists(), name
    settings = json.loads((out / "config.json").read_text())["settings"]
    result = json.loads((out / "result.json").read_text())
    evals = settings["num_updates"] // settings["eval_every"] + 1
    (target,) = result["exact"]
    for agg in AGGREGATIONS:
        exact = result["exact"][target][agg]
        assert exact["kl"]["mean"] == pytest.approx(float(target), rel=1e-3)  # the matched beta's optimum
        assert 0.0 <= exact["both_good"]["mean"] <= min(exact["help_good"]["mean"], exact["harmless_good"]["mean"])
        trained = result["trained"][target][agg]
        assert all(np.asarray(c).shape == (evals,) for c in trained["mean_curve"].values())
        assert trained["mean_curve"]["kl"][0] == pytest.approx(0.0, abs=1e-6)  # training starts at pi_0
        curve = result["curves"][agg]
        assert np.all(np.diff(curve["kl"]) < 0)  # the optimum's KL falls as beta grows
    claim = result["claim"]
    verdicts = claim["per_kl_target"][target]
    expected = verdicts["exact_lsc_more_both_good"] and verdicts["trained_lsc_more_both_good"] and verdicts["trained_kl_matched"]
    assert claim["holds"] == expected
    exact_gap = result["exact"][target]["lsc_sum"]["both_good"]["mean"] - result["exact"][target]["raw_sum"]["both_good"]["mean"]
    assert result["exact"][target]["lsc_minus_raw"]["mean"] == pytest.approx(exact_gap, abs=1e-9)
