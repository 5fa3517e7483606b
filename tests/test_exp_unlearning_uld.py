"""The unlearning-uld experiment: a smoke run at a tiny budget."""

import json

import numpy as np
import pytest

from experiments.__main__ import main as cli


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "uld"
    assert cli(["unlearning-uld", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "curves.png"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    settings, splits = config["settings"], config["splits"]
    # the three sets partition the facts
    every = np.concatenate([splits["forget"], splits["retain"], splits["untouched"]])
    np.testing.assert_array_equal(np.sort(every), np.arange(settings["num_facts"]))
    result = json.loads((out / "result.json").read_text())
    evals = settings["steps"] // settings["eval_every"] + 1
    for name in ("uld", "ga_gd", "npo_gd"):
        method = result["methods"][name]
        for split in ("forget", "retain", "untouched"):
            curve = np.asarray(method["mean_curve"][split])
            assert curve.shape == (evals,) and np.all((curve >= 0) & (curve <= 1))
        at = method["forgets_at_step"]
        forget = np.asarray(method["mean_curve"]["forget"])
        if at is None:
            assert np.all(forget > settings["forget_em_max"])
        else:  # the first evaluation at or below the threshold
            i = at // settings["eval_every"]
            assert forget[i] <= settings["forget_em_max"] and np.all(forget[:i] > settings["forget_em_max"])
        assert method["seconds_per_step"] > 0
    # before any step, every method's system is the target itself, except ULD, whose fresh adapters (B = 0)
    # still subtract the shallow assistant's logits
    for name in ("ga_gd", "npo_gd"):
        for split in ("forget", "retain", "untouched"):
            assert result["methods"][name]["mean_curve"][split][0] == pytest.approx(result["target_em"][split]["mean"])
    claim = result["claim"]
    assert claim["holds"] == (claim["uld_forgets"] and claim["uld_keeps_untouched"] and claim["ga_gd_damages_untouched"])
