"""The f-dpg experiment: a smoke run at a tiny budget."""

import json

import numpy as np
import pytest

from experiments import f_dpg as exp
from experiments.__main__ import main as cli


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "fdpg"
    assert cli(["f-dpg", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "curves.png"):
        assert (out / name).exists(), name
    settings = json.loads((out / "config.json").read_text())["settings"]
    result = json.loads((out / "result.json").read_text())
    evals = settings["num_updates"] // settings["eval_every"] + 1
    (beta,) = result["betas"]
    arms = result["betas"][beta]["arms"]
    assert set(arms) == set(exp.DIVERGENCES)
    for arm in arms.values():
        curves = {m: np.asarray(arm["mean_curve"][m]) for m in exp.METRICS}
        assert all(c.shape == (evals,) for c in curves.values())
        assert np.all(curves["forward_kl"] >= 0) and np.all(curves["reverse_kl"] >= 0)
        assert np.all((curves["js"] >= 0) & (curves["js"] <= np.log(2) + 1e-6))
        # every arm starts from the same pi_ref: identical first evaluations
        for m in exp.METRICS:
            assert curves[m][0] == pytest.approx(arms["js"]["mean_curve"][m][0], rel=1e-6)
    claim = result["claim"]
    assert claim["holds"] == all(all(v.values()) for v in claim["per_beta"].values())
    final = lambda d, m: arms[d]["final"][m]["mean"]  # noqa: E731
    assert claim["per_beta"][beta]["js_below_forward_kl"] == (final("js", "forward_kl") < final("forward_kl", "forward_kl"))
