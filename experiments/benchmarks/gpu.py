"""GPU benchmark (JSON out): the issues' figures on one accelerator, baselines in the same process.

    python -m experiments.benchmarks.gpu --out runs/bench/gpu.json          # on the GPU host
    python -m experiments.benchmarks.gpu --only cartpole --out gpu.json     # cases whose name contains the text
    python -m experiments.benchmarks.gpu --only dpo --only meta-es          # ... or any of several
    python -m experiments.benchmarks.gpu --quick --out /tmp/gpu.json        # tiny smoke run on CPU

Cases, in this order (the issues' thresholds first, since GPU time is scarce):
PPO CartPole (PureJaxRL defaults, 5e5 steps) for 1 seed and for 256 vmapped
seeds; PPO on brax halfcheetah at 4096 envs with the raw env throughput of the
same wrapped env beside it; one OpenES generation of 64 TA-LPO lifetimes on
Breakout-MinAtar against one lifetime (``meta_es``); DPO on a 124M
GPT-2-shaped model in bf16 (32 pairs x 512 tokens), tokens/s and model FLOPs
utilisation (``dpo_throughput``'s ``gpt2-124m-bf16`` preset, which also times one bf16
matmul of the model's largest shape, so the step's FLOP/s can be read against what
the card reaches on a matmul alone as well as against its datasheet peak), with XLA's
and with cuDNN's fused attention (``LMConfig.attention``), each with full and with
chunked logits (``LMConfig.logits_chunk``); PPO on brax ant
as halfcheetah; SAC on brax halfcheetah. Compile time is reported apart from
run time (best of --repeats).

The report is rewritten after every case, so a run cut short keeps what it
measured; a case that raises is recorded with its error, the others still run,
and the command then fails. ``claims`` holds the issues' thresholds:
PPO halfcheetah >= 0.6 x raw env (issue 3); CartPole 256 seeds x 5e5 steps in
less run time than the PureJaxRL-style reference of ../shared/offline-gpu/README.md
(9.4 s on an H100, issue 3); population speed-up >= 20x (issue 8); DPO MFU >= 35%
(issue 4, the best DPO case), and cuDNN's attention equal to XLA's on the preset's
shapes (outputs and gradients, bf16). The cuDNN cases are recorded as skipped on
other backends (--quick on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import meta_es
from experiments.benchmarks.dpo_throughput import rljax_throughput
from experiments.benchmarks.throughput import (case_parser, raw_env_throughput, selected, training_throughput,
                                               write_report)
from rljax.agents import ppo, sac
from rljax.lm import model as model_lib

CARTPOLE_REFERENCE_RUN_SECONDS = 9.4  # PureJaxRL-style PPO, 256 seeds x 5e5 steps, H100 (offline-gpu README)
ATTENTION_TOLERANCE = 2e-2  # of the largest entry: a few bf16 roundings (8 bits of mantissa: 4e-3 each)


def ppo_brax(env: str, args) -> dict:
    """PPO at brax/PureJaxRL scale (4096 envs x 16 steps per update, 32 minibatches) beside the raw env."""
    envs_n = 8 if args.quick else 4096
    continuous, continuous_hp = ppo.PRESETS["brax/inverted_pendulum"]
    config = dataclasses.replace(continuous, env=env, num_envs=envs_n, num_steps=16,
                                 num_minibatches=4 if args.quick else 32,
                                 total_timesteps=envs_n * 16 * (1 if args.quick else 50))
    raw = raw_env_throughput(config, 16 * 8, args.repeats)
    trained = training_throughput(ppo.make_train(config), continuous_hp, args.repeats)
    return {"num_envs": envs_n, "raw_env": raw, "ppo": trained,
            "ppo_over_raw": trained["env_steps_per_second"] / raw["env_steps_per_second"]}


def ppo_cartpole(num_seeds: int, args) -> dict:
    cartpole, cartpole_hp = ppo.PRESETS["gymnax/CartPole-v1"]
    steps = 512 * 9 if args.quick else 500_000 // 512 * 512
    return training_throughput(ppo.make_train(dataclasses.replace(cartpole, total_timesteps=steps)), cartpole_hp,
                               args.repeats, num_seeds)


def sac_halfcheetah(args) -> dict:
    config, hparams = sac.preset("brax/halfcheetah")
    config = dataclasses.replace(config, num_envs=2 if args.quick else 128,
                                 total_timesteps=1000 if args.quick else 100_000, learning_starts=0)
    return training_throughput(sac.make_train(config), hparams, args.repeats)


def no_gpu() -> dict | None:
    """The record of a cuDNN case off an NVIDIA GPU (--quick on CPU): skipped, with the reason."""
    if jax.default_backend() != "gpu":
        return {"skipped": f"cuDNN attention needs an NVIDIA GPU; the backend is {jax.default_backend()!r}"}
    return None


def cudnn_attention_check(args) -> dict:
    """cuDNN's fused attention (``LMConfig.attention="cudnn"``) against XLA's on random bf16 ``q, k, v``
    [4, 512, 12, 64] (4 rows of the DPO preset's length, heads and head dim) under a causal mask with right padding: the
    largest absolute difference of the outputs and of the q, k, v gradients of a random projection of them,
    beside the largest entry of each."""
    if skipped := no_gpu():
        return skipped
    B, T, N, D = (2, 16, 2, 8) if args.quick else (4, 512, 12, 64)
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(key, (B, T, N, D), jnp.bfloat16) for key in keys[:3])
    projection = jax.random.normal(keys[3], (B, T, N, D), jnp.float32)
    lengths = T - jnp.arange(B) * (T // 4)  # row b is padded by b * T / 4 slots on the right
    keep = jnp.arange(T)[None, :] < lengths[:, None]
    mask = (jnp.tril(jnp.ones((T, T), bool))[None] & keep[:, None, :])[:, None]  # [B, 1, T, T]

    def out_and_grads(attention):
        loss = lambda q, k, v: (attention(q, k, v).astype(jnp.float32) * projection).sum()  # noqa: E731
        out = jax.jit(attention)(q, k, v)
        return (out, *jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v))

    xla = out_and_grads(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask))
    cudnn = out_and_grads(lambda q, k, v: model_lib.cudnn_attention(q, k, v, mask, causal=True))
    names = ("out", "dq", "dk", "dv")
    as_float = lambda x: np.asarray(x, np.float32)  # noqa: E731
    return {"shape": [B, T, N, D], "dtype": "bfloat16", "lengths": lengths.tolist(),
            "max_abs_diff": {n: float(np.abs(as_float(a) - as_float(b)).max()) for n, a, b in zip(names, xla, cudnn)},
            "max_abs": {n: float(np.abs(as_float(a)).max()) for n, a in zip(names, xla)}}


def dpo_gpt2(args, **variant) -> dict:
    """DPO on the 124M GPT-2 preset (``smoke`` with --quick); ``variant``: ``logits_chunk``, ``attention``."""
    if variant.get("attention") == "cudnn" and (skipped := no_gpu()):
        return skipped
    return rljax_throughput("smoke" if args.quick else "gpt2-124m-bf16", steps=10, chunk=5, **variant)


def cases(args) -> dict:
    """Name -> thunk, in the order they run."""
    seeds = 4 if args.quick else 256
    logits_chunk = 4 if args.quick else 64
    return {
        "ppo CartPole 1 seeds": lambda: ppo_cartpole(1, args),
        f"ppo CartPole {seeds} seeds": lambda: ppo_cartpole(seeds, args),
        "ppo brax/halfcheetah": lambda: ppo_brax("brax/halfcheetah", args),
        "meta-es minatar": lambda: meta_es.measure("minatar", 4 if args.quick else 64,
                                                   meta_es.LIFETIME_UPDATES["minatar"], args.repeats, args.quick),
        "dpo gpt2-124m bf16": lambda: dpo_gpt2(args),
        "dpo gpt2-124m attention cudnn = xla": lambda: cudnn_attention_check(args),
        # The same with cuDNN's fused attention: XLA's holds the [64 rows, 12 heads, 512, 512] scores in float32
        # (805 MB a layer; XLA's memory analysis, experiments/RESULTS.md), the fused kernel never materialises them.
        "dpo gpt2-124m bf16 cudnn attention": lambda: dpo_gpt2(args, attention="cudnn"),
        # With the logits unembedded 64 positions of every row at a time: the [64 rows, 257 positions, 50257]
        # float32 logits (3.3 GB per forward) are never held at once, for one more unembedding matmul in the
        # backward.
        "dpo gpt2-124m bf16 chunked logits": lambda: dpo_gpt2(args, logits_chunk=logits_chunk),
        "dpo gpt2-124m bf16 cudnn attention chunked logits": lambda: dpo_gpt2(args, attention="cudnn",
                                                                            logits_chunk=logits_chunk),
        "ppo brax/ant": lambda: ppo_brax("brax/ant", args),
        "sac brax/halfcheetah": lambda: sac_halfcheetah(args),
    }


def claims(results: dict) -> dict:
    """The issues' thresholds, for the cases that ran."""
    out = {}
    if "ppo brax/halfcheetah" in results:
        out["issue 3: ppo halfcheetah >= 0.6 x raw env"] = results["ppo brax/halfcheetah"]["ppo_over_raw"] >= 0.6
    many = next((v for k, v in results.items() if k.startswith("ppo CartPole") and v.get("seeds", 1) > 1), None)
    if many:
        out[f"issue 3: CartPole {many['seeds']} seeds run < {CARTPOLE_REFERENCE_RUN_SECONDS} s"] = (
            many["run_seconds"] < CARTPOLE_REFERENCE_RUN_SECONDS)
    if "meta-es minatar" in results:
        out["issue 8: population speed-up >= 20x"] = results["meta-es minatar"]["population_speedup"] >= 20
    mfus = [v["mfu"] for k, v in results.items() if k.startswith("dpo gpt2-124m") and "mfu" in v]
    if mfus:
        out["issue 4: DPO MFU >= 35%"] = max(max(m["per_step"], m["scanned"]) for m in mfus) >= 0.35
    check = results.get("dpo gpt2-124m attention cudnn = xla", {})
    if "max_abs_diff" in check:
        out[f"cudnn attention = xla to {ATTENTION_TOLERANCE} of the largest entry"] = all(
            check["max_abs_diff"][name] <= ATTENTION_TOLERANCE * check["max_abs"][name] for name in check["max_abs"])
    return out


def main(argv=None) -> dict:
    args = case_parser(__doc__.splitlines()[0], "runs/bench/gpu.json").parse_args(argv)
    every_case = cases(args)
    chosen = {name: run for name, run in every_case.items() if selected(name, args.only)}
    if not chosen:
        raise ValueError(f"--only {args.only}: no case matches; the cases are {list(every_case)}")
    results, failed = {}, []
    for name, run in chosen.items():
        print(f"{name} ...", flush=True)
        try:
            results[name] = run()
        except Exception as error:  # one broken case must not cost the GPU time of the others
            traceback.print_exc()
            results[name] = {"error": f"{type(error).__name__}: {error}"}
            failed.append(name)
        print(name, json.dumps(results[name]), flush=True)
        report = write_report("gpu", args.quick, results | {"claims": claims({k: v for k, v in results.items()
                                                                               if "error" not in v})}, args.out)
    print("claims", json.dumps(report["results"]["claims"]), flush=True)
    if failed:
        raise RuntimeError(f"gpu benchmark: cases {failed} raised (their errors are in {args.out})")
    return report


if __name__ == "__main__":
    main()
