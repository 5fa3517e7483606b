"""XLA compile time and run time of whole training programs at XLA's default CPU optimisation level and at
``xla_backend_optimization_level=1``, in one process.

    python -m experiments.benchmarks.cpu_compile --out runs/bench/cpu_compile.json

On CPU much of a short run's wall time is XLA compiling the training program (LLVM code generation).
Level 1 asks LLVM for less optimisation than the default; this measures what that saves in compile time
and costs in run time, on the same programs: PPO on CartPole (PureJaxRL's defaults, and 2048 envs), PPO on
brax inverted_pendulum, SAC on Pendulum-v1. Each case is compiled ``--compile-repeats`` times per level
(median reported; lowering timed apart), then run ``--repeats`` times per level (best reported).
``make test`` compiles at level 1.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp

from experiments.benchmarks.throughput import case_parser, cases, selected, training_program, write_report
from rljax.agents import ppo, sac

LEVELS = {"default": None, "level_1": {"xla_backend_optimization_level": 1}}


def trainers(quick: bool):
    """(name, trainer, hparams) of each case: the throughput benchmark's PPO cases on CartPole and
    inverted_pendulum, and SAC on Pendulum-v1."""
    ppo_cases = [c for c in cases(quick) if "halfcheetah" not in c.name]
    out = [(f"PPO {c.name}", ppo.make_train(c.config), c.hparams) for c in ppo_cases]
    sac_config, sac_hp = sac.preset("gymnax/Pendulum-v1")
    sac_config = dataclasses.replace(sac_config, total_timesteps=1_000 if quick else 10_000,
                                     learning_starts=256 if quick else 1_000)
    return out + [("SAC gymnax/Pendulum-v1", sac.make_train(sac_config), sac_hp)]


def measure(program, key, repeats: int, compile_repeats: int) -> dict:
    """Per level of ``LEVELS``: the median of ``compile_repeats`` compile times of ``program`` under jit
    (each from a fresh trace, since jax caches a traced program's executable; levels interleaved,
    alternating which goes first) and the best of ``repeats`` run times. Also the median lowering time."""
    compile_s, lower_s, compiled = {label: [] for label in LEVELS}, [], {}
    for r in range(compile_repeats):
        for label in list(LEVELS) if r % 2 == 0 else list(LEVELS)[::-1]:
            start = time.perf_counter()
            lowered = jax.jit(lambda k: program(k)).lower(key)  # a new function: traced, lowered, compiled anew
            lower_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            compiled[label] = lowered.compile(compiler_options=LEVELS[label])
            compile_s[label].append(time.perf_counter() - start)
    out = {"trace_and_lower_seconds": statistics.median(lower_s)}
    for label, executable in compiled.items():
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(executable(key))
            runs.append(time.perf_counter() - start)
        out[label] = {"compile_seconds": statistics.median(compile_s[label]), "compile_seconds_all": compile_s[label],
                      "run_seconds": min(runs)}
    return out


def main(argv=None) -> dict:
    parser = case_parser(__doc__.splitlines()[0], "runs/bench/cpu_compile.json")
    parser.add_argument("--compile-repeats", type=int, default=3, help="compiles per level (median reported)")
    args = parser.parse_args(argv)
    jax.jit(jnp.sin).lower(1.0).compile()  # backend start-up outside the first measurement
    key, results = jax.random.PRNGKey(0), []
    for name, trainer, hparams in trainers(args.quick):
        if not selected(name, args.only):
            continue
        measured = measure(training_program(trainer, hparams), key, args.repeats, args.compile_repeats)
        default, level_1 = measured["default"], measured["level_1"]
        row = {"case": name, "env_steps": trainer.total_env_steps, **measured,
               "compile_speedup": default["compile_seconds"] / level_1["compile_seconds"],
               "run_time_ratio": level_1["run_seconds"] / default["run_seconds"]}
        print(f"{name}: trace+lower {measured['trace_and_lower_seconds']:.1f} s; "
              f"compile {default['compile_seconds']:.1f} s -> {level_1['compile_seconds']:.1f} s "
              f"({row['compile_speedup']:.2f}x faster); run {default['run_seconds']:.2f} s -> "
              f"{level_1['run_seconds']:.2f} s ({row['run_time_ratio']:.2f}x the time)", flush=True)
        results.append(row)
    return write_report("cpu_compile", args.quick, results, args.out)


if __name__ == "__main__":
    main()
