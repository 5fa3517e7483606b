"""XLA's temporary memory for one DPO update, with the full logits and with chunked logits (JSON out; compiles only).

    python -m experiments.benchmarks.lm_memory --out runs/bench/lm_memory.json    # GPT-2 124M bf16, 32 pairs x 512
    python -m experiments.benchmarks.lm_memory --preset cpu --chunks 0,8 --out /tmp/lm_memory.json

For each ``LMConfig.logits_chunk`` in ``--chunks`` (0: unembed every scored position at
once, [2B, T, V] float32 logits), the DPO update of a ``dpo_throughput`` preset (its
``make_trainer``: sigmoid loss, the reference forward on every step, AdamW) is lowered and compiled for the default
device from abstract shapes. Nothing runs, so the 124M model's figures come out on a CPU
in a minute or two. The report gives XLA's temporary-buffer bytes (``memory_analysis``:
activations, logits, gradients in flight; params and optimiser state are the arguments and
not counted), the bytes of the full float32 logits for scale, and the compile time. Each
backend assigns its own buffers: the figure that matters is the one from the device that
trains.
"""

from __future__ import annotations

import argparse
import time

import jax

from experiments.benchmarks.dpo_throughput import PRESETS, make_trainer
from experiments.benchmarks.throughput import write_report
from rljax.lm.train import LMHParams


def update_memory(preset: str, logits_chunk: int, prefix_sharing: bool = False) -> dict:
    """Temporary bytes and compile seconds of one DPO update at ``preset`` with ``LMConfig.logits_chunk``."""
    spec = PRESETS[preset]
    trainer, model = make_trainer(preset, "dpo", spec["pairs"], prefix_sharing, logits_chunk)
    state = jax.eval_shape(trainer.init, jax.random.key(0), LMHParams())  # shapes only: no params are made
    start = time.perf_counter()
    compiled = jax.jit(trainer.update, donate_argnums=0).lower(state).compile()
    seconds = time.perf_counter() - start
    # Positions whose logits the loss scores: from the prompt's last token to the end, on 2B rows.
    scored = 2 * spec["pairs"] * (spec["completion"] + 1)
    return {
        "preset": preset, "logits_chunk": logits_chunk, "prefix_sharing": prefix_sharing,
        "update_temp_bytes": compiled.memory_analysis().temp_size_in_bytes,
        "full_logits_bytes": scored * model.vocab_size * 4,
        "compile_seconds": seconds,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpt2-124m-bf16")
    parser.add_argument("--chunks", default="0,64", help="comma-separated LMConfig.logits_chunk values (0: full)")
    parser.add_argument("--prefix-sharing", action="store_true", help="run each pair's prompt once")
    parser.add_argument("--out", default="runs/bench/lm_memory.json")
    args = parser.parse_args(argv)
    try:
        chunks = [int(c) for c in args.chunks.split(",")]
    except ValueError:
        raise SystemExit(f"--chunks: expected comma-separated ints, got {args.chunks!r}") from None
    results = []
    for chunk in chunks:
        results.append(update_memory(args.preset, chunk, args.prefix_sharing))
        print(results[-1], flush=True)
    full = next((r for r in results if r["logits_chunk"] == 0), None)
    if full:
        for r in results:
            r["temp_bytes_vs_full_logits_run"] = r["update_temp_bytes"] / full["update_temp_bytes"]
    return write_report("lm_memory", False, results, args.out)


if __name__ == "__main__":
    main()
