"""MAMQL vs BC vs joint-action IQ-Learn on multi-agent brax: ``mamql-gems --gpu`` (Haynam et al. 2025).

    python -m experiments mamql-gems --gpu                                 # MABrax hopper_3x1 (GPU)
    python -m experiments mamql-gems --gpu --env jaxmarl/halfcheetah_6x1
    python -m experiments mamql-gems --env jaxmarl/hopper_3x1 --quick      # smoke test of this path (CPU)

The Gems experiment (``experiments.mamql_gems``) scaled to continuous control, offline, with
``rljax.agents.mamql_continuous`` (each MABrax agent drives one joint of the brax robot):

1. Expert and data: a SAC expert on the underlying single-agent brax env
   (``experiments.make_demos``: ``sac.PRESETS``, 1e6 env steps), ``num_demos`` = 50 greedy
   episodes of it; each global observation and action is mapped onto the agents by
   JaxMARL's own maps (``homogenisation_method="max"``). The demonstrations are written to
   the run directory.
2. Methods, same networks (2x256 twin critics, 2x256 tanh-Gaussian actors), data, optimiser
   and budget (``num_updates`` x ``gradient_steps`` = 1e5 Adam steps of batch 256): MAMQL
   (marginal critics on each agent's own action), joint-action IQ-Learn per agent, BC per
   agent. Hyperparameters: IQ-Learn's brax preset (``iq_learn.PRESETS["brax/hopper"]``: lr
   3e-4 for critic and actor, temperature 1e-2, chi-squared alpha 0.5, gamma 0.99); no
   target network (the paper's objective, as in the Gems run). Seeds are vmapped.
3. Metric: the team return of the agents acting together (deterministic actions, 10 episodes
   per seed), as % of the expert's (the brax env's return; MABrax gives every agent the
   same reward). The Gems run's reward-recovery metric needs exact per-agent rewards and
   is not computed here.

Claims, checked as in the Gems run: MAMQL >= 90% of the expert's return, and higher than
both baselines. These settings were fixed before any run; this path has not been run at
full size yet (the one GPU session so far went to the benchmarks; ``--quick`` runs it at toy
size on CPU).

Writes config.json, demos.npz/.json, one sub-directory per method (metrics.jsonl,
checkpoints/), result.json and returns.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

import envs.multiagent
from experiments.make_demos import make_demos
from rljax.agents import iq_learn
from rljax.agents import mamql_continuous as mc
from rljax.core import dataset as dataset_lib
from rljax.core import loop as loop_lib
from rljax.core.config import to_dict
from rljax.core.logging import write_json
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95

GPU_ENV = "jaxmarl/hopper_3x1"
RETURN_MIN_PERCENT = 90.0


@dataclasses.dataclass(frozen=True)
class BraxSettings:
    num_demos: int = 50
    num_updates: int = 1_000
    gradient_steps: int = 100  # per update: 1e5 in all
    batch_size: int = 256
    hidden_sizes: tuple[int, ...] = (256, 256)
    eval_episodes: int = 10
    eval_every: int = 50  # updates between evaluations
    max_episode_steps: int = 1_000
    expert_steps: int | None = None  # None: the SAC preset's 1e6


QUICK = BraxSettings(num_demos=2, num_updates=2, gradient_steps=5, batch_size=32, hidden_sizes=(16, 16),
                     eval_episodes=2, eval_every=1, max_episode_steps=50, expert_steps=2_000)


def brax_env_of(env: str) -> str:
    """``jaxmarl/hopper_3x1`` -> ``brax/hopper``: the single-agent env the expert is trained on."""
    name = env.split("/", 1)[-1].split("_")[0]
    return f"brax/{name}"


def _plot(summary: dict, path: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    colors = {"mamql": "tab:blue", "joint_iq": "tab:orange", "bc": "tab:green"}
    for k, (method, r) in enumerate(summary["methods"].items()):
        ci = r["return_percent"]
        ax.bar(k, ci["mean"], 0.6, yerr=[[ci["mean"] - ci["ci95_low"]], [ci["ci95_high"] - ci["mean"]]], capsize=4,
               color=colors[method])
        ax.scatter(np.full(len(r["per_seed_return_percent"]), k), r["per_seed_return_percent"], color="k", s=12)
    ax.axhline(RETURN_MIN_PERCENT, color="tab:red", linestyle="--", linewidth=0.8,
               label=f"claim >= {RETURN_MIN_PERCENT:g}")
    ax.axhline(summary["random_return_percent"], color="k", linestyle=":", linewidth=0.8, label="uniform random")
    ax.set_xticks(range(len(summary["methods"])), list(summary["methods"]))
    ax.set_ylabel("team return, % of expert (mean, 95% CI; dots: seeds)")
    ax.set_title(f"{summary['env']}, {summary['num_demos']} demos, {summary['seeds']} seeds", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main(args: argparse.Namespace, run_dir: str) -> dict:
    settings = QUICK if args.quick else BraxSettings()
    start = time.perf_counter()
    key = jax.random.PRNGKey(args.seed)
    demo_key, train_key = jax.random.split(key)
    base_env = brax_env_of(args.env)
    env, _ = envs.multiagent.make(args.env, **mc.MABRAX_KWARGS)
    data = make_demos(base_env, settings.num_demos, demo_key, agent_steps=settings.expert_steps,
                      metadata={"multiagent_env": args.env})
    dataset_lib.save(data, os.path.join(run_dir, "demos"))
    demos = mc.MultiAgentDemonstrations.from_dataset(data, env)
    expert_return, random_return = float(data.metadata["expert_return"]), float(data.metadata["random_return"])
    hparams = iq_learn.PRESETS["brax/hopper"][1]
    write_json(os.path.join(run_dir, "config.json"), {
        "experiment": "mamql-gems", "env": args.env, "expert_env": base_env, "settings": to_dict(settings),
        "hparams": to_dict(hparams), "seeds": args.seeds, "seed": args.seed, "quick": bool(args.quick)})
    print(f"MAMQL on {args.env} ({len(env.agents)} agents): expert ({base_env}) return {expert_return:.1f}, random "
          f"{random_return:.1f}; {settings.num_demos} demos, {demos.num_transitions} transitions; {args.seeds} seeds "
          f"-> {run_dir}")

    results = {}
    for method in mc.METHODS:
        config = mc.MAMQLContinuousConfig(
            env=args.env, method=method, num_updates=settings.num_updates, gradient_steps=settings.gradient_steps,
            batch_size=settings.batch_size, hidden_sizes=settings.hidden_sizes, eval_episodes=settings.eval_episodes,
            max_episode_steps=settings.max_episode_steps)
        result = loop_lib.run(
            mc.make_train(config, demos), train_key, hparams, num_seeds=args.seeds,
            run_dir=os.path.join(run_dir, method), config_dict={"method": method, "config": to_dict(config)},
            loop=loop_lib.LoopConfig(chunk_updates=settings.eval_every, eval_every_chunks=1,
                                     eval_episodes=settings.eval_episodes, progress=not args.no_progress))
        per_seed = result.final_eval["return"].mean(axis=1)
        percent = 100.0 * per_seed / expert_return
        results[method] = {"return": mean_ci95(per_seed), "return_percent": mean_ci95(percent),
                           "per_seed_return_percent": percent.tolist(),
                           "compile_seconds": result.compile_seconds, "run_seconds": result.run_seconds}
        print(f"  {method:<9} return {results[method]['return']['mean']:8.1f} = "
              f"{results[method]['return_percent']['mean']:5.1f}% of the expert")

    mamql = results["mamql"]["return_percent"]["mean"]
    claims = {"return": mamql >= RETURN_MIN_PERCENT,
              "beats_baselines_return": all(mamql > results[m]["return_percent"]["mean"] for m in ("joint_iq", "bc"))}
    summary = {"experiment": "mamql-gems", "env": args.env, "expert_env": base_env, "quick": bool(args.quick),
               "seeds": args.seeds, "num_demos": settings.num_demos, "demo_transitions": demos.num_transitions,
               "expert_return": expert_return, "random_return": random_return,
               "random_return_percent": 100.0 * random_return / expert_return, "methods": results, "claims": claims,
               "wall_seconds": time.perf_counter() - start}
    write_json(os.path.join(run_dir, "result.json"), summary)
    _plot(summary, os.path.join(run_dir, "returns.png"))
    print(f"claims: {claims}; wall {summary['wall_seconds']:.0f} s; wrote {run_dir}")
    return summary
