"""The reversal-curse experiment: a --quick smoke run, the log-prob test's bookkeeping, and the full claim (slow)."""

import json

import numpy as np
import pytest

from envs.text import facts as facts_lib
from experiments import reversal_curse
from experiments.__main__ import main as cli

CELLS = [f"{g}/{d}" for g in facts_lib.GROUPS for d in ("p2d", "d2p")]
CLAIMS = ["forward_p2d_only", "forward_d2p_only", "reverse_p2d_only_at_chance", "reverse_d2p_only_at_chance",
          "both_p2d", "both_d2p", "logprob_no_preference", "all"]


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "run"
    cli(["reversal-curse", "--quick", "--seeds", "2", "--out", str(out), "--no-progress"])
    for name in ("config.json", "metrics.jsonl", "result.json", "exact_match.png", "final.png", "checkpoints"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["quick"] and config["seeds"] == 2 and config["criteria"]["forward_min"] == 0.9
    result = json.loads((out / "result.json").read_text())
    assert result["finished"] and result["seeds"] == 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == result["updates"]  # one record per update
    last = json.loads(lines[-1])
    for cell in CELLS + ["train/p2d", "train/d2p"]:
        em = result["exact_match"][cell]
        assert em["n"] == 2 and len(em["per_seed"]) == 2 and 0 <= em["mean"] <= 1
        assert em["ci95_low"] <= em["mean"] <= em["ci95_high"]
        assert last[f"eval/{cell}/per_seed"] == pytest.approx(em["per_seed"])
    assert set(result["claims"]) == set(CLAIMS) and all(isinstance(v, bool) for v in result["claims"].values())
    assert result["criteria"]["reverse_max"] == pytest.approx(3 / result["num_names"])
    for test in result["logprob_test"].values():
        assert 0 <= test["p_value"] <= 1 and len(test["p_value_per_seed"]) == 2
        assert test["mean_difference"] == pytest.approx(test["mean_logp_correct"] - test["mean_logp_others"])
    # Teacher-forced argmax exact match == greedy decoding with the KV cache, example by example.
    check = result["greedy_decoding_check"]
    assert check["agreement"] == 1.0 and check["examples"] == 2 * 2 * result["num_facts"] * 2  # 2 test templates


@pytest.mark.parametrize("bonus", [1.0, 100.0])
def test_logprob_test_finds_the_correct_candidate(monkeypatch, bonus):
    """Bookkeeping: give each question's correct entity ``bonus`` nats over its base score."""
    corpus = facts_lib.make_fact_corpus(0, num_facts=12, num_train_templates=2, num_test_templates=3)
    questions = corpus.test_d2p.where(corpus.group[corpus.test_d2p.fact] == facts_lib.D2P_ONLY)
    members = np.flatnonzero(corpus.group == facts_lib.D2P_ONLY)
    base = np.random.default_rng(0).normal(-20, 1, size=len(members))  # one score per candidate

    def fake(params, model, corpus_, qs, candidates):
        assert [c.tolist() for c in candidates] == [corpus.names[f].tolist() for f in members]
        logps = np.tile(base, (2, len(qs), 1))  # [2 seeds, Q, C]
        logps[:, np.arange(len(qs)), np.searchsorted(members, qs.fact)] += bonus
        return logps

    monkeypatch.setattr(reversal_curse, "_candidate_logps", fake)
    out = reversal_curse.logprob_test(None, None, corpus, questions, corpus.names, facts_lib.D2P_ONLY)
    C = len(base)
    expected = np.mean([base[i] + bonus - (base.sum() - base[i]) / (C - 1) for i in range(C)])
    assert out["mean_difference"] == pytest.approx(expected)
    assert out["num_candidates"] == C and out["questions_per_seed"] == len(questions)
    if bonus == 100.0:
        assert out["mean_rank_of_correct"] == 1.0 and out["top1_among_candidates"] == 1.0 and out["p_value"] < 1e-6


@pytest.mark.slow
def test_full_run_shows_the_reversal_curse(tmp_path):
    out = tmp_path / "run"
    result = cli(["reversal-curse", "--out", str(out), "--no-progress"])
    assert result == 0
    result = json.loads((out / "result.json").read_text())
    assert result["claims"] == {name: True for name in CLAIMS}, result["claims"]
    assert result["greedy_decoding_check"]["agreement"] == 1.0
    assert result["logprob_test"]["control_trained_names"]["p_value"] < 1e-6  # the test can detect a preference
