"""The reward-ensembles experiment: a smoke run at a tiny budget, checked against exact identities."""

import json
import math

import numpy as np
import pytest

from experiments.__main__ import main as cli


@pytest.mark.integration
def test_quick_run_writes_all_outputs_and_exact_curves(tmp_path):
    out = tmp_path / "ensembles"
    assert cli(["reward-ensembles", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "gold_vs_kl.png", "world0/metrics.jsonl"):
        assert (out / name).exists(), name
    assert (out / "world0" / "checkpoints").is_dir()
    settings = json.loads((out / "config.json").read_text())["settings"]
    result = json.loads((out / "result.json").read_text())
    ns = np.asarray(result["ns"])
    np.testing.assert_array_equal(ns, 2 ** np.arange(settings["max_log2_n"] + 1))
    for name in ("single", "mean", "wco", "uwo", "oracle"):
        proxy = result["proxies"][name]
        gold, kl = np.asarray(proxy["gold_curve"]), np.asarray(proxy["kl_curve"])
        # n = 1 is the base policy: no KL, and the gold reward is standardised to mean 0 under it
        assert gold[0] == pytest.approx(0.0, abs=1e-5) and kl[0] == pytest.approx(0.0, abs=1e-5)
        # best-of-n's KL never exceeds log n - (n - 1) / n and grows with n
        assert np.all(kl <= np.log(ns) - (ns - 1) / ns + 1e-4) and np.all(np.diff(kl) > 0)
        assert proxy["drop"]["mean"] >= 0 and proxy["at_claim_n"]["n"] == settings["worlds"]
        assert math.isfinite(proxy["largest_n"]["mean"])
    # no proxy beats best-of-n on the gold reward itself
    oracle = np.asarray(result["proxies"]["oracle"]["gold_curve"])
    for name in ("single", "mean", "wco", "uwo"):
        assert np.all(np.asarray(result["proxies"][name]["gold_curve"]) <= oracle + 1e-5)
    claim = result["claim"]
    single_at = result["proxies"]["single"]["at_claim_n"]["mean"]
    for name in ("wco", "uwo"):
        ends_higher = result["proxies"][name]["at_claim_n"]["mean"] > single_at
        assert claim[name]["ends_higher"] == ends_higher
    assert claim["holds"] == (
        claim["single_overoptimises"] and all(claim[n]["falls_less"] and claim[n]["ends_higher"] for n in ("wco", "uwo"))
    )
    accuracy = np.asarray(result["reward_model_train_accuracy"]["per_world_member"])
    assert accuracy.shape == (settings["worlds"], settings["members"]) and np.all((accuracy >= 0) & (accuracy <= 1))
