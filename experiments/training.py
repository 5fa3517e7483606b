"""One experiment driver for every agent with ``preset(env)`` and ``make_train(config)``.

    python -m experiments ppo --env gymnax/CartPole-v1 --seeds 8 --total-steps 500000
    python -m experiments sac --env gymnax/Pendulum-v1 --seeds 4
    python -m experiments ppo --seeds 16 --shard pop          # seeds spread over all devices
    python -m experiments ppo --distributed --shard pop        # every host of a pod runs this

Writes config.json, metrics.jsonl, result.json (final return with a 95% interval
over seeds, steps, wall and compile time), curve.png and checkpoints/.
"""

from __future__ import annotations

import argparse
import os
import time
from types import ModuleType

import jax

from experiments.common import add_run_arguments, apply_overrides, setup_run
from rljax.core import loop as loop_lib
from rljax.core import sharding
from rljax.core.config import to_dict
from rljax.core.logging import write_json
from rljax.core.plotting import plot_learning_curve
from rljax.core.stats import mean_ci95


def add_arguments(parser: argparse.ArgumentParser, name: str, default_env: str, default_seeds: int) -> None:
    parser.add_argument("--env", default=default_env, help="registered env name (envs.names())")
    parser.add_argument("--seeds", type=int, default=default_seeds, help="number of seeds, trained side by side")
    parser.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    parser.add_argument("--total-steps", type=int, help="env steps per seed (default: the env's preset)")
    parser.add_argument("--chunk-updates", type=int, default=0, help="updates per jitted chunk (0: about 20 chunks)")
    parser.add_argument("--eval-every", type=int, default=5, help="evaluate every N chunks (0: only at the end)")
    parser.add_argument("--shard", choices=sharding.SHARD_MODES, help="spread seeds (pop) or envs over all devices")
    parser.add_argument("--distributed", action="store_true", help="multi-host: call jax.distributed.initialize()")
    parser.add_argument("--stop-after-updates", type=int, help=argparse.SUPPRESS)  # simulate an interruption
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config or hparams field")
    add_run_arguments(parser, name)


def run(name: str, agent: ModuleType, args: argparse.Namespace) -> dict:
    if args.distributed:
        sharding.initialize_distributed()
    config, hparams = agent.preset(args.env)
    changes = {"env": args.env} | ({"total_timesteps": args.total_steps} if args.total_steps else {})
    config, hparams = apply_overrides(args.set, config, hparams, **changes)
    logging_process = sharding.is_logging_process()
    run_dir = setup_run(args, name)
    trainer = agent.make_train(config)
    chunk = args.chunk_updates or max(1, trainer.num_updates // 20)
    run_config = {
        "experiment": name, "config": to_dict(config), "hparams": to_dict(hparams),
        "seeds": args.seeds, "seed": args.seed, "chunk_updates": chunk,
    }
    if not args.resume and logging_process:
        write_json(os.path.join(run_dir, "config.json"), run_config)

    print(f"{name.upper()} on {config.env}: {args.seeds} seeds x {trainer.total_env_steps:,} env steps -> {run_dir}")
    start = time.perf_counter()
    result = loop_lib.run(
        trainer, jax.random.PRNGKey(args.seed), hparams, num_seeds=args.seeds, run_dir=run_dir,
        config_dict=run_config, resume=bool(args.resume),
        loop=loop_lib.LoopConfig(
            chunk_updates=chunk, eval_every_chunks=args.eval_every, progress=not args.no_progress and logging_process,
            tensorboard=args.tensorboard, stop_after_updates=args.stop_after_updates, shard=args.shard,
        ),
    )
    wall = time.perf_counter() - start

    done = result.updates_done * trainer.env_steps_per_update
    summary = {
        "experiment": name, "env": config.env, "seeds": args.seeds,
        "env_steps_per_seed": done, "env_steps_total": done * args.seeds,
        "finished": result.updates_done == trainer.num_updates,
        "wall_seconds": wall, "compile_seconds": result.compile_seconds, "run_seconds": result.run_seconds,
        "env_steps_per_second": done * args.seeds / max(result.run_seconds, 1e-9),
        "devices": jax.device_count(), "shard": args.shard,
    }
    if result.records:
        summary["final_train_return"] = mean_ci95(result.records[-1]["episode_return/per_seed"])
    if result.final_eval is not None:
        summary["final_eval_return"] = mean_ci95(result.final_eval["return"])  # per seed: mean over episodes
        summary["final_eval_return_per_seed"] = result.final_eval["return"].mean(axis=1).tolist()
    if not logging_process:
        return summary
    write_json(os.path.join(run_dir, "result.json"), summary)
    if result.records:
        title = f"{name.upper()} on {config.env} ({args.seeds} seeds)"
        plot_learning_curve(result.records, os.path.join(run_dir, "curve.png"), title)
    if "final_eval_return" in summary:
        r = summary["final_eval_return"]
        print(f"final eval return {r['mean']:.1f} (95% CI {r['ci95_low']:.1f} .. {r['ci95_high']:.1f}, {r['n']} seeds); "
              f"{summary['env_steps_per_second']:,.0f} env steps/s, compile {result.compile_seconds:.1f} s")
    print(f"wrote {run_dir}")
    return summary
