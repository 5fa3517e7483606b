"""The rpo-vs-dpo experiment: a smoke run at a tiny budget, and the full reproduction (slow)."""

import json
import math

import pytest

from experiments.__main__ import main as cli


def _finite(x) -> bool:
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, list):
        return all(_finite(v) for v in x)
    if isinstance(x, float):
        return math.isfinite(x)
    return True


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "rpo"
    cli(["rpo-vs-dpo", "--quick", "--no-progress", "--out", str(out)])
    for name in ("config.json", "metrics.jsonl", "result.json", "chosen_logp.png", "gold_reward.png", "kl.png"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    result = json.loads((out / "result.json").read_text())
    arms = result["arms"]
    assert set(arms) == set(config["arms"]) and "dpo" in arms and result["claim"]["primary_rpo_arm"] in arms
    assert config["loss_weights"]["dpo"] == [1.0, 0.0]
    eta, beta = config["settings"]["primary_eta"], config["settings"]["beta"]
    assert config["loss_weights"][result["claim"]["primary_rpo_arm"]] == pytest.approx([1.0, eta * beta])

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs, seeds = result["epochs"], result["seeds"]
    assert len(records) == seeds * len(arms) * (epochs + 1)
    for r in records:
        assert all(math.isfinite(r[m]) for m in ("gold", "chosen_logp", "rejected_logp", "kl", "subset_mass"))
        assert r["total_mass"] == pytest.approx(1.0, abs=1e-3)  # the exact distribution is normalised
        assert r["kl"] >= -1e-4
    # epoch 0 is the reference policy, the same for every arm of a seed
    first = [r for r in records if r["epoch"] == 0 and r["seed"] == 0]
    assert len({round(r["chosen_logp"], 5) for r in first}) == 1 and all(abs(r["kl"]) < 1e-4 for r in first)
    assert _finite(result["arms"]) and _finite(result["claim"]["rpo_minus_dpo_final"])
    for name in arms:
        for metric in ("chosen_logp", "gold"):
            summary = arms[name][metric]
            assert summary["final"]["n"] == seeds and len(arms[name]["mean_curve"][metric]) == epochs + 1
            assert summary["peak"]["mean"] >= summary["final"]["mean"] - 1e-6
    assert (out / "seed0" / "metrics.jsonl").exists()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The full experiment (default settings, 3 seeds), run once for the slow tests below."""
    out = tmp_path_factory.mktemp("rpo_full") / "run"
    assert cli(["rpo-vs-dpo", "--no-progress", "--out", str(out)]) == 0
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_full_run_dpo_chosen_logp_falls_and_rpo_keeps_it(full_run):
    claim = full_run["claim"]
    assert claim["dpo_chosen_logp_falls"], claim
    assert claim["rpo_chosen_logp_stays_high"], claim
    assert claim["rpo_final_chosen_logp_above_dpo"] and claim["ci_separated"]["chosen_logp"], claim


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="measured (3 seeds): DPO's gold reward ends below its peak (0.84 -> 0.39) and below RPO's (0.74), but "
    "not significantly (drop 0.45 [-1.2, 2.1], RPO - DPO +0.35 [-2.2, 2.9]): DPO's policy collapses onto the best "
    "covered response in some seeds and onto uncovered ones in others; see experiments/rpo_vs_dpo.py",
)
def test_full_run_dpo_gold_falls_and_rpo_keeps_it(full_run):
    claim = full_run["claim"]
    assert claim["dpo_gold_falls"], claim
    assert claim["rpo_gold_stays_high"], claim
    assert claim["rpo_final_gold_above_dpo"], claim
    assert claim["holds"], claim
