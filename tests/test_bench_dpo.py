"""The DPO throughput benchmark runs and reports what it promises (speed itself is not asserted)."""

import json

import pytest

from experiments.benchmarks import dpo_throughput


def test_dpo_benchmark_smoke(tmp_path):
    out = tmp_path / "b.json"
    report = dpo_throughput.main(["--preset", "smoke", "--steps", "2", "--chunk", "2", "--no-trl", "--out", str(out)])
    saved = json.loads(out.read_text())
    r = saved["rljax"]
    assert r["tokens_per_step"] == 4 * 2 * 16 and r["seq_len"] == 16
    assert r["tokens_per_second"]["per_step"] > 0 and r["compile_seconds"]["scanned"] > 0
    assert report["rljax"]["preset"] == "smoke"


def test_flop_count_matches_the_palm_formula():
    config = dpo_throughput.PRESETS["cpu"]["model"]()
    n = 4 * (4 * 256 * 256 + 3 * 256 * 1024) + 512 * 256  # blocks + untied unembedding (no lookup FLOPs)
    expected = 2048 * (2 * n + 4 * 4 * 256 * 64) * 4
    assert dpo_throughput.flops_per_step(config, 2048, 64) == pytest.approx(expected)
