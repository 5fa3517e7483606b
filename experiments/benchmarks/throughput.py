"""Raw env throughput next to PPO training throughput, in one process.

    python -m experiments.benchmarks.throughput --out runs/bench/throughput.json

For each case the same wrapped env that PPO trains on is first stepped with
uniformly random actions (the ceiling: no network, no learning), then PPO is
run for the case's budget. Compile time (ahead-of-time ``lower().compile()``)
is reported apart from run time; run time is the best of ``--repeats`` calls.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import jax

from rljax.agents import ppo
from rljax.core import rollout as rollout_lib
from rljax.core.config import broadcast_hparams


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    config: ppo.PPOConfig
    hparams: ppo.PPOHParams = ppo.PPOHParams()


def cases(quick: bool) -> list[Case]:
    cartpole, cartpole_hp = ppo.PRESETS["gymnax/CartPole-v1"]
    continuous, continuous_hp = ppo.PRESETS["brax/inverted_pendulum"]
    scale = 0.02 if quick else 1.0

    def steps(n, batch):  # a budget of about n steps, whole updates only
        return max(batch, int(n * scale) // batch * batch)

    brax = lambda env: dataclasses.replace(  # noqa: E731
        continuous, env=env, num_envs=256, num_steps=16, num_minibatches=8,
        total_timesteps=steps(204_800, 256 * 16),
    )
    return [
        Case("gymnax/CartPole-v1 4 envs (PureJaxRL defaults)",
             dataclasses.replace(cartpole, total_timesteps=steps(500_000, 512)), cartpole_hp),
        Case("gymnax/CartPole-v1 2048 envs",
             dataclasses.replace(cartpole, num_envs=2048, num_steps=16, num_minibatches=32,
                                 total_timesteps=steps(2048 * 16 * 32, 2048 * 16)), cartpole_hp),
        Case("brax/inverted_pendulum 256 envs", brax("brax/inverted_pendulum"), continuous_hp),
        Case("brax/halfcheetah 256 envs", brax("brax/halfcheetah"), continuous_hp),
    ]


def timed(fn, *args, repeats: int):
    """(compile seconds, best run seconds) of ``jax.jit(fn)(*args)``."""
    compile_s, run_s, _ = timed_output(fn, *args, repeats=repeats)
    return compile_s, run_s


def timed_output(fn, *args, repeats: int):
    """(compile seconds, best run seconds, output of the last run) of ``jax.jit(fn)(*args)``."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        output = jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return compile_s, best, output


def raw_env_throughput(config, num_steps: int, repeats: int, make_env=ppo.make_env) -> dict:
    """Random actions in the env the agent trains on (``make_env(config)``): the ceiling."""
    env, env_params = make_env(config)
    space = env.action_space(env_params)

    def run(key):
        carry = rollout_lib.reset(env, env_params, key, config.num_envs)
        policy = lambda obs, k: (jax.vmap(space.sample)(jax.random.split(k, config.num_envs)), {})  # noqa: E731
        carry, traj = rollout_lib.rollout(env, env_params, policy, carry, key, num_steps)
        # Consume observations too: with a constant reward XLA would drop the physics.
        return traj.reward.sum() + traj.obs.sum()

    compile_s, run_s = timed(run, jax.random.PRNGKey(0), repeats=repeats)
    total = num_steps * config.num_envs
    return {"env_steps": total, "compile_seconds": compile_s, "run_seconds": run_s, "env_steps_per_second": total / run_s}


def training_program(trainer, hparams, num_seeds: int = 1):
    """``run(key) -> scalar``: ``num_seeds`` vmapped training runs, reduced to what depends on every update
    (so that XLA cannot drop the last one)."""
    hparams = broadcast_hparams(hparams, num_seeds)

    def run(key):
        state, metrics = jax.vmap(trainer)(jax.random.split(key, num_seeds), hparams)
        return metrics["episode_return"][:, -1].mean() + sum(x.sum() for x in jax.tree.leaves(state))

    return run


def training_throughput(trainer, hparams, repeats: int, num_seeds: int = 1) -> dict:
    """Env steps per second of whole training runs (``num_seeds`` vmapped), compile apart."""
    run = training_program(trainer, hparams, num_seeds)
    compile_s, run_s = timed(run, jax.random.PRNGKey(0), repeats=repeats)
    total = trainer.total_env_steps * num_seeds
    result = {"env_steps": total, "compile_seconds": compile_s, "run_seconds": run_s, "env_steps_per_second": total / run_s}
    return result | {"seeds": num_seeds}


def case_parser(description: str, out: str) -> argparse.ArgumentParser:
    """The command line of a benchmark made of named cases: --out, --quick, --repeats, --only."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=out)
    parser.add_argument("--quick", action="store_true", help="tiny budgets (a smoke test, not a measurement)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", action="append", help="run only cases whose name contains this text "
                        "(case-insensitive; repeat it for cases that contain any of several)")
    return parser


def selected(name: str, only: list[str] | None) -> bool:
    """Whether case ``name`` runs under ``--only``: no filter, or one of its texts is in the name."""
    return not only or any(text.lower() in name.lower() for text in only)


def main(argv=None) -> dict:
    args = case_parser(__doc__.splitlines()[0], "runs/bench/throughput.json").parse_args(argv)
    results = []
    for case in cases(args.quick):
        if not selected(case.name, args.only):
            continue
        print(f"{case.name}: raw env ...", flush=True)
        raw = raw_env_throughput(case.config, case.config.num_steps * 8, args.repeats)
        print(f"  raw env  {raw['env_steps_per_second']:>12,.0f} steps/s (compile {raw['compile_seconds']:.1f} s)", flush=True)
        trained = training_throughput(ppo.make_train(case.config), case.hparams, args.repeats)
        print(f"  PPO      {trained['env_steps_per_second']:>12,.0f} steps/s (compile {trained['compile_seconds']:.1f} s)", flush=True)
        results.append({
            "case": case.name, "env": case.config.env, "num_envs": case.config.num_envs,
            "num_steps": case.config.num_steps, "raw_env": raw, "ppo": trained,
            "ppo_over_raw": trained["env_steps_per_second"] / raw["env_steps_per_second"],
        })

    return write_report("throughput", args.quick, results, args.out)


def compare_libraries(benchmark: str, baseline: str, cases, args, run_rljax, run_baseline, describe) -> dict:
    """Each case of ``cases`` (those :func:`selected` by ``args.only``) trained by rljax and by ``baseline``.

    ``run_rljax(case)`` and ``run_baseline(case)`` return ``env_steps_per_second``, ``compile_seconds``,
    ``run_seconds`` and ``final_return``; ``describe(case)`` the case's fields for the JSON. Prints each
    pair and ``rljax / baseline``, and writes the report (``rljax_over_<baseline>`` per case).
    """
    results = []
    for case in cases:
        if not selected(case.name, args.only):
            continue
        print(f"{case.name}:", flush=True)
        ours, theirs = run_rljax(case), run_baseline(case)
        for name, r in (("rljax", ours), (baseline, theirs)):
            print(f"  {name:6s} {r['env_steps_per_second']:>10,.0f} steps/s (compile {r['compile_seconds']:.1f} s, "
                  f"run {r['run_seconds']:.2f} s), final return {r['final_return']:.1f}", flush=True)
        ratio = ours["env_steps_per_second"] / theirs["env_steps_per_second"]
        print(f"  rljax / {baseline} = {ratio:.2f}x", flush=True)
        results.append({"case": case.name, **describe(case), "rljax": ours, baseline: theirs,
                        f"rljax_over_{baseline}": ratio})
    return write_report(benchmark, args.quick, results, args.out)


def write_report(name: str, quick: bool, results, out: str) -> dict:
    """The benchmark's JSON, with the machine it ran on."""
    report = {
        "benchmark": name, "quick": quick,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "devices": [str(d) for d in jax.devices()], "jax": jax.__version__},
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
