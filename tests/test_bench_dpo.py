"""The DPO and reward-model throughput benchmark runs and reports what it promises (speed itself is not asserted)."""

import json

import pytest

from experiments.benchmarks import dpo_throughput


@pytest.mark.integration
@pytest.mark.parametrize("objective", dpo_throughput.OBJECTIVES)
def test_benchmark_smoke(tmp_path, objective):
    out = tmp_path / "b.json"
    report = dpo_throughput.main(["--objective", objective, "--preset", "smoke", "--steps", "2", "--chunk", "2",
                                 "--no-trl", "--out", str(out)])
    saved = json.loads(out.read_text())
    r = saved["rljax"]
    assert r["objective"] == objective and r["preset"] == "smoke"
    assert r["tokens_per_step"] == 4 * 2 * 16 and r["seq_len"] == 16
    assert r["tokens_per_second"]["per_step"] > 0 and r["compile_seconds"]["scanned"] > 0
    config = dpo_throughput.PRESETS["smoke"]["model"]()
    assert r["matmul"]["shape"] == [4 * 2 * 16, config.hidden_size, config.mlp_size]
    fraction = r["matmul"]["model_flops_fraction"]["scanned"]
    rate = r["model_flops_per_step"] / r["step_seconds"]["scanned"]
    assert fraction == pytest.approx(rate / r["matmul"]["flops_per_second"])
    assert set(saved["machine"]["cpu"]) == {"model", "vector_extension"}
    assert report["rljax"] == saved["rljax"]
    assert r["token_positions_computed_per_step"] == r["tokens_per_step"] and not r["prefix_sharing"]
    # The same training with each pair's 8-token prompt run once: 4 * (8 + 2 * 8) positions.
    shared = saved["rljax_prefix_sharing"]
    assert shared["prefix_sharing"] and shared["objective"] == objective and shared["tokens_per_step"] == r["tokens_per_step"]
    assert shared["token_positions_computed_per_step"] == 4 * (8 + 2 * 8)
    assert shared["model_flops_per_step"] == pytest.approx(r["model_flops_per_step"] * 96 / 128)
    assert r["logits_chunk"] == shared["logits_chunk"] == 0 and r["update_temp_bytes"] > 0


def test_ceiling_compares_each_library_with_its_own_matmul_rate():
    ours = {"model_flops_per_step": 100.0, "matmul": {"flops_per_second": 400.0, "model_flops_fraction": {"scanned": 0.5}}}
    trl = {"median_step_s": 0.5, "matmul_flops_per_second": 250.0}  # TRL runs the step's 100 FLOPs at 200 FLOP/s
    assert dpo_throughput.ceiling(ours, trl, trl_flops_per_step=100.0) == {
        "rljax_model_flops_fraction": {"scanned": 0.5},
        "trl_model_flops_fraction": pytest.approx(0.8),
        "speedup_vs_trl_at_jax_matmul_rate": pytest.approx(2.0),  # 400 / 200: no more is possible here
    }
    # With prefix sharing our step computes 75 of TRL's 100 FLOPs: 0.5 s against 75 / 400 s at best.
    shared = ours | {"model_flops_per_step": 75.0}
    assert dpo_throughput.ceiling(shared, trl, trl_flops_per_step=100.0)["speedup_vs_trl_at_jax_matmul_rate"] == (
        pytest.approx(0.5 / (75 / 400)))


def test_flop_count_matches_the_palm_formula():
    config = dpo_throughput.PRESETS["cpu"]["model"]()
    blocks = 4 * (4 * 256 * 256 + 3 * 256 * 1024)
    attention = 4 * 4 * 256 * 64
    # DPO: untied unembedding (no lookup FLOPs); policy forward + backward and the reference forward.
    assert dpo_throughput.flops_per_step(config, 2048, 64) == pytest.approx(2048 * (2 * (blocks + 512 * 256) + attention) * 4)
    # Reward model: a 256 -> 1 head instead of the unembedding; forward + backward only.
    assert dpo_throughput.flops_per_step(config, 2048, 64, "reward") == pytest.approx(
        2048 * (2 * (blocks + 256) + attention) * 3)


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="objective: expected one of"):
        dpo_throughput.rljax_throughput("smoke", objective="kto")


def test_lm_memory_reports_each_chunk_against_the_full_logits(tmp_path):
    from experiments.benchmarks import lm_memory

    out = tmp_path / "m.json"
    report = lm_memory.main(["--preset", "smoke", "--chunks", "0,4", "--out", str(out)])
    full, chunked = json.loads(out.read_text())["results"]
    assert report["results"] == [full, chunked]
    assert (full["logits_chunk"], chunked["logits_chunk"]) == (0, 4)
    assert full["full_logits_bytes"] == 2 * 4 * (8 + 1) * 64 * 4  # 2B rows x (completion + 1) positions x V, float32
    assert full["temp_bytes_vs_full_logits_run"] == 1.0
    assert chunked["temp_bytes_vs_full_logits_run"] == chunked["update_temp_bytes"] / full["update_temp_bytes"]
    with pytest.raises(SystemExit, match="--chunks: expected comma-separated ints"):
        lm_memory.main(["--chunks", "0,a"])
