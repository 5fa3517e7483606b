"""DPO (or reward-model) training throughput of rljax's LM trainer beside TRL's trainer, in one process.

    python -m experiments.benchmarks.dpo_throughput --out runs/bench/dpo_throughput.json
    python -m experiments.benchmarks.dpo_throughput --objective reward --out runs/bench/reward_throughput.json
    python -m experiments.benchmarks.dpo_throughput --preset gpt2-124m-bf16 --no-trl --out gpu.json   # on a GPU

Case ``cpu`` (the issue's shapes): Llama-style model, hidden 256, 4 layers, 4
heads, SwiGLU width 1024, vocab 512, fp32; 16 pairs per step, prompt 32 +
completion 32 tokens (the completion's last token is EOS, as TRL lays it out),
AdamW, grad-norm clipping at 1. ``--objective dpo`` (TRL's ``DPOTrainer``):
sigmoid DPO with beta 0.1 and the reference model's forward on every step (a
frozen params copy, like TRL's ``precompute_ref_log_probs=False``).
``--objective reward`` (TRL's ``RewardTrainer``): the same transformer with only a
scalar reward head, read at the last non-pad token, and the Bradley-Terry loss
on chosen and rejected in one forward. tokens/s counts every token the model
sees: ``pairs * 2 * (prompt + completion) / step seconds``, as
``experiments/benchmarks/trl_baselines.py`` counts TRL's.

Each objective is trained twice: ``rljax``, the 2B rows ``[chosen; rejected]`` in
one forward (TRL's concatenated layout), and ``rljax_prefix_sharing``, each pair's
prompt run once and both completions attending to its cached keys and values
(``LMTrainConfig.prefix_sharing``; the same training up to rounding, B * prompt fewer
token positions; TRL's trainers have no such option).

Two timings of each, compile time apart (ahead-of-time ``lower().compile()``):
``per_step``: one jitted update per call (what TRL does: one step per Python
call), and ``scanned``: ``--chunk`` updates in one ``lax.scan`` call (what our
host loop runs). MFU (model FLOPs utilisation, on GPUs/TPUs with a known peak)
uses the PaLM count: ``6 N + 12 L H T`` FLOPs per trained token plus a third of
that for the reference forward, N = parameters except the input embedding.

The ceiling on this machine: a speed-up over TRL is bounded by how far TRL is from the
hardware. The report times one jitted matmul of the model's largest shape ([tokens per
step, hidden] @ [hidden, MLP width], the model's dtype) in JAX and in PyTorch, and gives
each library's model FLOP/s as a fraction of its own matmul rate, and the speed-up over
TRL that rljax would reach if every model FLOP ran at JAX's matmul rate (``ceiling``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from rljax.lm.model import gpt2_config, llama_config
from rljax.lm.train import LMHParams, LMTrainConfig, make_train

PRESETS = {
    "cpu": dict(model=lambda: llama_config(512, 256, 4, 4, intermediate_size=1024, norm_eps=1e-6, max_position_embeddings=64),
                pairs=16, prompt=32, completion=32),
    "smoke": dict(model=lambda: llama_config(64, 32, 1, 4, max_position_embeddings=16), pairs=4, prompt=8, completion=8),
    "gpt2-124m-bf16": dict(model=lambda: gpt2_config(dtype="bfloat16", param_dtype="bfloat16", max_position_embeddings=1024),
                           pairs=32, prompt=256, completion=256),
}
OBJECTIVES = ("dpo", "reward")
# Dense bf16 peak FLOP/s by device kind (vendor datasheets; SXM parts).
PEAK_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "TPU v4": 275e12, "TPU v5p": 459e12, "TPU v5 lite": 197e12}


def peak_flops(device) -> float | None:
    kind = device.device_kind
    return next((v for k, v in PEAK_FLOPS.items() if k in kind), None)


def cpu_model() -> dict:
    """The CPU's model name and widest x86 vector extension (``avx512f``, ``avx2`` or ``None``), from
    ``/proc/cpuinfo`` where there is one: the ratio to TRL depends on both (see ``ceiling`` in the report)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return {"model": platform.processor() or None, "vector_extension": None}
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), None)
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return {"model": model, "vector_extension": next((x for x in ("avx512f", "avx2") if x in flags), None)}


def matmul_shape(config, tokens: int) -> tuple[int, int, int]:
    """``(m, k, n)`` of the model's largest matmul in one step: ``[tokens, hidden] @ [hidden, MLP width]``."""
    return tokens, config.hidden_size, config.mlp_size


def call_rate(fn, flops: float, sync=lambda out: out, calls: int = 40, repeats: int = 5) -> float:
    """FLOP/s of ``fn()``, which does ``flops`` FLOPs: median of ``repeats`` timings of ``calls`` back-to-back
    calls after a warm-up call; ``sync(out)`` waits for the last call's result (``jax.block_until_ready``)."""
    sync(fn())
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn()
        sync(out)
        seconds.append((time.perf_counter() - start) / calls)
    return flops / statistics.median(seconds)


def matmul_rate(shape: tuple[int, int, int], dtype) -> float:
    """FLOP/s of one jitted ``[m, k] @ [k, n]`` matmul in ``dtype`` on the default device, compile apart."""
    m, k, n = shape
    a, b = jnp.ones((m, k), dtype), jnp.ones((k, n), dtype)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    return call_rate(lambda: matmul(a, b), 2 * m * k * n, sync=jax.block_until_ready)


def flops_per_step(config, tokens: int, seq_len: int, objective: str = "dpo") -> float:
    """PaLM-style model FLOPs of one step. DPO: policy fwd+bwd (3x forward) and reference forward (1x);
    reward: fwd+bwd only, with a scalar head (H weights) in place of the unembedding."""
    n = config.num_params(include_embeddings=True) - config.vocab_size * config.hidden_size  # no FLOPs for the lookup
    if config.tied:  # the tied unembedding is a matmul: count it once
        n += config.vocab_size * config.hidden_size
    if objective == "reward":
        n += config.hidden_size - config.vocab_size * config.hidden_size
    forward_per_token = 2 * n + 4 * config.num_layers * config.hidden_size * seq_len
    return tokens * forward_per_token * (3 + (objective == "dpo"))


def random_pairs(rng, rows: int, prompt: int, completion: int, vocab: int, eos: int = 1):
    """Unpadded pairs: ``prompt`` random tokens shared by both sides, then each side's ``completion - 1``
    random tokens and EOS."""
    T = prompt + completion
    prompts = rng.integers(3, vocab, size=(rows, prompt), dtype=np.int32)

    def side():
        ids = np.concatenate([prompts, rng.integers(3, vocab, size=(rows, completion), dtype=np.int32)], axis=1)
        ids[:, -1] = eos
        completion_mask = np.zeros((rows, T), np.int32)
        completion_mask[:, prompt:] = 1
        return ids, np.ones((rows, T), np.int32), completion_mask

    (ci, ca, cc), (ri, ra, rc) = side(), side()
    return dict(chosen_input_ids=ci, chosen_attention_mask=ca, chosen_completion_mask=cc,
                rejected_input_ids=ri, rejected_attention_mask=ra, rejected_completion_mask=rc)


def make_trainer(preset: str, objective: str, rows: int, prefix_sharing: bool = False, logits_chunk: int = 0,
                 seed: int = 0, attention: str = "xla"):
    """``(trainer, model)``: the benchmark's LM trainer for ``objective`` at ``preset`` on ``rows`` random pairs
    (sigmoid loss for DPO, the reference forward every step; a reward head alone for ``"reward"``)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")
    spec = PRESETS[preset]
    model = dataclasses.replace(spec["model"](), logits_chunk=logits_chunk, attention=attention)
    if objective == "reward":
        model = dataclasses.replace(model, heads=("reward",))
    data = random_pairs(np.random.default_rng(seed), rows, spec["prompt"], spec["completion"], model.vocab_size)
    config = LMTrainConfig(model=model, objective=objective, loss_types=("sigmoid",), batch_size=spec["pairs"],
                           num_epochs=10_000, prefix_sharing=prefix_sharing)
    return make_train(config, data), model


def rljax_throughput(preset: str = "cpu", steps: int = 20, chunk: int = 10, seed: int = 0,
                     objective: str = "dpo", prefix_sharing: bool = False, logits_chunk: int = 0,
                     attention: str = "xla") -> dict:
    """Compile seconds, step seconds, tokens/s and XLA's temporary memory of ``objective`` (``"dpo"`` or
    ``"reward"``) at ``preset``; ``prefix_sharing``: each pair's prompt runs once
    (``LMTrainConfig.prefix_sharing``); ``logits_chunk``: ``LMConfig.logits_chunk`` (0: full logits);
    ``attention``: ``LMConfig.attention``."""
    spec = PRESETS[preset]
    pairs, T = spec["pairs"], spec["prompt"] + spec["completion"]
    trainer, model = make_trainer(preset, objective, pairs * max(steps, chunk), prefix_sharing, logits_chunk, seed,
                                  attention)
    hp = LMHParams(learning_rate=1e-4, beta=0.1)
    state = jax.jit(trainer.init)(jax.random.key(seed), hp)
    jax.block_until_ready(state)

    def compiled(fn):
        start = time.perf_counter()
        out = jax.jit(fn, donate_argnums=0).lower(state).compile()
        return out, time.perf_counter() - start

    step_fn, step_compile = compiled(trainer.update)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        state, metrics = step_fn(state)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    times = times[2:]  # the first calls may still allocate
    chunk_fn, chunk_compile = compiled(lambda s: trainer.run_updates(s, chunk))
    state, metrics = chunk_fn(state)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    state, metrics = chunk_fn(state)
    jax.block_until_ready(metrics)
    scanned = (time.perf_counter() - start) / chunk
    assert np.isfinite(np.asarray(metrics["loss"])).all(), f"non-finite {objective} loss in the benchmark"

    tokens = pairs * 2 * T
    # Token positions the model computes: with prefix sharing, each pair's prompt once.
    computed = pairs * (spec["prompt"] + 2 * spec["completion"]) if prefix_sharing else tokens
    per_step = statistics.median(times)
    device = jax.devices()[0]
    peak = peak_flops(device)
    flops = flops_per_step(model, computed, T, objective)
    result = {
        "preset": preset, "objective": objective, "prefix_sharing": prefix_sharing, "logits_chunk": logits_chunk,
        "attention": attention,
        "model": {"style": model.style, "hidden": model.hidden_size, "layers": model.num_layers, "heads": model.num_heads,
                  "vocab": model.vocab_size, "dtype": model.dtype, "param_dtype": model.param_dtype,
                  "params": int(model.num_params())},
        "pairs": pairs, "seq_len": T, "tokens_per_step": tokens, "token_positions_computed_per_step": computed,
        "compile_seconds": {"per_step": step_compile, "scanned": chunk_compile},
        "update_temp_bytes": step_fn.memory_analysis().temp_size_in_bytes,  # XLA's buffers for one update
        "step_seconds": {"per_step_median": per_step, "per_step_all": times, "scanned": scanned},
        "tokens_per_second": {"per_step": tokens / per_step, "scanned": tokens / scanned},
        "model_flops_per_step": flops,
    }
    shape = matmul_shape(model, tokens)
    rate = matmul_rate(shape, model.dtype)
    result["matmul"] = {"shape": list(shape), "dtype": model.dtype, "flops_per_second": rate,
                        "model_flops_fraction": {"per_step": flops / per_step / rate, "scanned": flops / scanned / rate}}
    if peak:
        result["mfu"] = {"per_step": flops / per_step / peak, "scanned": flops / scanned / peak, "peak_flops": peak}
    return result


def ceiling(ours: dict, trl: dict, trl_flops_per_step: float) -> dict:
    """How close each library runs to its own matmul rate, and the speed-up over TRL that rljax would reach at
    JAX's matmul rate (every model FLOP as fast as the model's largest matmul alone). ``trl_flops_per_step``:
    TRL's model FLOPs (the concatenated forward's), which exceed ours with prefix sharing."""
    trl_flops_per_second = trl_flops_per_step / trl["median_step_s"]
    fastest_step = ours["model_flops_per_step"] / ours["matmul"]["flops_per_second"]
    return {
        "rljax_model_flops_fraction": ours["matmul"]["model_flops_fraction"],
        "trl_model_flops_fraction": trl_flops_per_second / trl["matmul_flops_per_second"],
        "speedup_vs_trl_at_jax_matmul_rate": trl["median_step_s"] / fastest_step,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objective", choices=OBJECTIVES, default="dpo", help="dpo (beside TRL's DPOTrainer) or "
                        "reward (beside its RewardTrainer)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--no-trl", action="store_true", help="skip the TRL baseline (e.g. where torch is absent)")
    parser.add_argument("--logits-chunk", type=int, default=0, help="LMConfig.logits_chunk for both variants "
                        "(0: full logits; N: N token positions unembedded at a time)")
    parser.add_argument("--out", help="default: runs/bench/<objective>_throughput.json")
    args = parser.parse_args(argv)
    args.out = args.out or f"runs/bench/{args.objective}_throughput.json"

    device = jax.devices()[0]
    report = {
        "machine": {"platform": platform.platform(), "device": str(device), "device_kind": device.device_kind,
                    "cpus": len(os.sched_getaffinity(0)), "cpu": cpu_model(), "jax": jax.__version__},
        "rljax": rljax_throughput(args.preset, args.steps, args.chunk, objective=args.objective,
                                  logits_chunk=args.logits_chunk),
    }
    # The same training with each pair's prompt run once (TRL's trainers have no such option).
    report["rljax_prefix_sharing"] = rljax_throughput(args.preset, args.steps, args.chunk, objective=args.objective,
                                                      prefix_sharing=True, logits_chunk=args.logits_chunk)
    variants = ["rljax", "rljax_prefix_sharing"]
    print(json.dumps({v: {k: report[v][k] for k in ("tokens_per_second", "compile_seconds")} for v in variants}, indent=1))
    if not args.no_trl and args.preset != "gpt2-124m-bf16":
        from experiments.benchmarks.trl_baselines import trl_throughput

        spec, m = PRESETS[args.preset], report["rljax"]["model"]
        trl = trl_throughput(args.objective, steps=args.steps, batch_pairs=spec["pairs"], prompt_len=spec["prompt"],
                                 completion_len=spec["completion"], hidden=m["hidden"], layers=m["layers"],
                                 heads=m["heads"], kv_heads=m["heads"], intermediate=spec["model"]().mlp_size,
                                 vocab=m["vocab"], matmul_shape=tuple(report["rljax"]["matmul"]["shape"]))
        report["trl"] = trl
        trl_flops = report["rljax"]["model_flops_per_step"]  # TRL computes every token position, as "rljax" does
        for variant in variants:
            suffix = variant.removeprefix("rljax")
            ours = report[variant]["tokens_per_second"]
            report["speedup_vs_trl" + suffix] = {k: v / trl["tokens_per_s_median"] for k, v in ours.items()}
            report["ceiling" + suffix] = ceiling(report[variant], trl, trl_flops)
        print(json.dumps({"trl_tokens_per_second": trl["tokens_per_s_median"]}
                         | {k: v for k, v in report.items() if k.startswith(("speedup", "ceiling"))}, indent=1))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
