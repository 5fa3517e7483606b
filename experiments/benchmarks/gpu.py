"""GPU benchmark (JSON out): the issue's figures on one accelerator, baselines in the same process.

    python -m experiments.benchmarks.gpu --out runs/bench/gpu.json          # on the GPU host
    python -m experiments.benchmarks.gpu --quick --out /tmp/gpu.json        # tiny smoke run on CPU

Cases: PPO on brax halfcheetah and ant at 4096 envs with the raw env
throughput of the same wrapped env beside it; PPO CartPole (PureJaxRL
defaults, 5e5 steps) for 1 seed and for 256 vmapped seeds; SAC on brax
halfcheetah; DPO on a 124M GPT-2-shaped model in bf16 (32 pairs x 512 tokens),
tokens/s and model FLOPs utilisation (``dpo_throughput``'s ``gpt2-124m-bf16``
preset); one OpenES generation of 64 TA-LPO lifetimes on Breakout-MinAtar against
one lifetime (``meta_es``). Compile time is reported apart from run time (best of --repeats).
Reference from ../shared/offline-gpu/README.md (H100, PureJaxRL-style PPO):
CartPole 256 seeds x 5e5 steps in 9.4 s run + 8.5 s compile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from experiments.benchmarks import meta_es
from experiments.benchmarks.dpo_throughput import rljax_throughput
from experiments.benchmarks.throughput import raw_env_throughput, training_throughput, write_report
from rljax.agents import ppo, sac


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/gpu.json")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test on CPU, not a measurement")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    envs_n, seeds, scale = (8, 4, 0.01) if args.quick else (4096, 256, 1.0)

    results = {}
    continuous, continuous_hp = ppo.PRESETS["brax/inverted_pendulum"]
    for env in ("brax/halfcheetah", "brax/ant"):
        # 4096 envs x 16 steps per update, 32 minibatches, 4 epochs: brax/PureJaxRL-scale PPO.
        config = dataclasses.replace(continuous, env=env, num_envs=envs_n, num_steps=16, num_minibatches=32 if not args.quick else 4,
                                     total_timesteps=envs_n * 16 * max(1, int(50 * scale)))
        raw = raw_env_throughput(config, 16 * 8, args.repeats)
        trained = training_throughput(ppo.make_train(config), continuous_hp, args.repeats)
        results[f"ppo {env} {envs_n} envs"] = {"raw_env": raw, "ppo": trained,
                                               "ppo_over_raw": trained["env_steps_per_second"] / raw["env_steps_per_second"]}
        print(env, json.dumps(results[f"ppo {env} {envs_n} envs"]), flush=True)

    cartpole, cartpole_hp = ppo.PRESETS["gymnax/CartPole-v1"]
    cartpole = dataclasses.replace(cartpole, total_timesteps=max(512, int(500_000 * scale) // 512 * 512))
    for n in (1, seeds):
        results[f"ppo CartPole {n} seeds"] = training_throughput(ppo.make_train(cartpole), cartpole_hp, args.repeats, n)
        print(n, json.dumps(results[f"ppo CartPole {n} seeds"]), flush=True)

    sac_config, sac_hp = sac.preset("brax/halfcheetah")
    sac_config = dataclasses.replace(sac_config, num_envs=128 if not args.quick else 2, total_timesteps=int(100_000 * scale) or 64,
                                     learning_starts=0)
    results["sac brax/halfcheetah"] = training_throughput(sac.make_train(sac_config), sac_hp, args.repeats)
    print("sac", json.dumps(results["sac brax/halfcheetah"]), flush=True)

    results["dpo gpt2-124m bf16"] = rljax_throughput("smoke" if args.quick else "gpt2-124m-bf16", steps=10, chunk=5)
    print("dpo", json.dumps({k: results["dpo gpt2-124m bf16"].get(k) for k in ("tokens_per_second", "mfu")}), flush=True)

    # Issue 8: one OpenES generation of 64 TA-LPO lifetimes on Breakout-MinAtar vs one lifetime.
    results["meta-es minatar"] = meta_es.measure("minatar", 4 if args.quick else 64, meta_es.LIFETIME_UPDATES["minatar"],
                                                 args.repeats, args.quick)
    print("meta-es", json.dumps(results["meta-es minatar"]), flush=True)

    return write_report("gpu", args.quick, results, args.out)


if __name__ == "__main__":
    main()
