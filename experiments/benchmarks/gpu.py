"""GPU benchmark (JSON out): the issues' figures on one accelerator, baselines in the same process.

    python -m experiments.benchmarks.gpu --out runs/bench/gpu.json          # on the GPU host
    python -m experiments.benchmarks.gpu --only cartpole --out gpu.json     # cases whose name contains the text
    python -m experiments.benchmarks.gpu --quick --out /tmp/gpu.json        # tiny smoke run on CPU

Cases, in this order (the issues' thresholds first, since GPU time is scarce):
PPO CartPole (PureJaxRL defaults, 5e5 steps) for 1 seed and for 256 vmapped
seeds; PPO on brax halfcheetah at 4096 envs with the raw env throughput of the
same wrapped env beside it; one OpenES generation of 64 TA-LPO lifetimes on
Breakout-MinAtar against one lifetime (``meta_es``); DPO on a 124M
GPT-2-shaped model in bf16 (32 pairs x 512 tokens), tokens/s and model FLOPs
utilisation (``dpo_throughput``'s ``gpt2-124m-bf16`` preset, which also times one bf16
matmul of the model's largest shape, so the step's FLOP/s can be read against what
the card reaches on a matmul alone as well as against its datasheet peak), with full
and with chunked logits (``LMConfig.logits_chunk``); PPO on brax ant
as halfcheetah; SAC on brax halfcheetah. Compile time is reported apart from
run time (best of --repeats).

The report is rewritten after every case, so a run cut short keeps what it
measured; a case that raises is recorded with its error, the others still run,
and the command then fails. ``claims`` holds the issues' thresholds:
PPO halfcheetah >= 0.6 x raw env (issue 3); CartPole 256 seeds x 5e5 steps in
less run time than the PureJaxRL-style reference of ../shared/offline-gpu/README.md
(9.4 s on an H100, issue 3); population speed-up >= 20x (issue 8); DPO MFU >= 35%
(issue 4).
"""

from __future__ import annotations

import dataclasses
import json
import traceback

from experiments.benchmarks import meta_es
from experiments.benchmarks.dpo_throughput import rljax_throughput
from experiments.benchmarks.throughput import case_parser, raw_env_throughput, training_throughput, write_report
from rljax.agents import ppo, sac

CARTPOLE_REFERENCE_RUN_SECONDS = 9.4  # PureJaxRL-style PPO, 256 seeds x 5e5 steps, H100 (offline-gpu README)


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


def cases(args) -> dict:
    """Name -> thunk, in the order they run."""
    seeds = 4 if args.quick else 256
    return {
        "ppo CartPole 1 seeds": lambda: ppo_cartpole(1, args),
        f"ppo CartPole {seeds} seeds": lambda: ppo_cartpole(seeds, args),
        "ppo brax/halfcheetah": lambda: ppo_brax("brax/halfcheetah", args),
        "meta-es minatar": lambda: meta_es.measure("minatar", 4 if args.quick else 64,
                                                   meta_es.LIFETIME_UPDATES["minatar"], args.repeats, args.quick),
        "dpo gpt2-124m bf16": lambda: rljax_throughput("smoke" if args.quick else "gpt2-124m-bf16", steps=10, chunk=5),
        # The same with the logits unembedded 64 positions of every row at a time: the [64 rows, 257 positions,
        # 50257] float32 logits (3.3 GB per forward) are never held at once, for one more unembedding matmul in
        # the backward.
        "dpo gpt2-124m bf16 chunked logits": lambda: rljax_throughput(
            "smoke" if args.quick else "gpt2-124m-bf16", steps=10, chunk=5, logits_chunk=4 if args.quick else 64),
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
    return out


def main(argv=None) -> dict:
    args = case_parser(__doc__.splitlines()[0], "runs/bench/gpu.json").parse_args(argv)
    every_case = cases(args)
    selected = {name: run for name, run in every_case.items() if not args.only or args.only.lower() in name.lower()}
    if not selected:
        raise ValueError(f"--only {args.only!r}: no case matches; the cases are {list(every_case)}")
    results, failed = {}, []
    for name, run in selected.items():
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
