"""C-MORL vs its stage 1 alone on concave Deep Sea Treasure, at equal env steps (Liu et al., ICLR 2025).

    python -m experiments cmorl-dst            # 3 seeds, one CPU core, about 6 minutes
    python -m experiments cmorl-dst --quick    # smoke test

Env: ``mo/deep-sea-treasure-concave`` (treasures 1 .. 124; its front is concave, so
linear scalarisation reaches only its two ends). Per seed:

* stage 1 (shared): M = 6 MOPPO policies on w in simplex_grid(2, 0.2), ``stage1_updates`` each;
* C-MORL: stage 1, then ``num_iterations`` x (N = 3 selected policies x 2 objectives x
  ``extension_updates``) constrained PPO updates; every intermediate policy enters the archive;
* stage 1 alone: the same 6 policies trained on for the same number of extra env
  steps (their learning rates do not anneal, so this is the same as one longer run);
  its archive is the 6 final policies.

Every policy is scored by the deterministic (mode) policy's undiscounted return
``[treasure, -steps]`` over ``eval_episodes`` episodes.

Claims, fixed before the first full run:

* ``cmorl_treasures``: C-MORL's final archive holds a policy whose return equals a
  true front point (a treasure on its shortest path) for >= 8 of the 10 treasures
  (judged on the mean over seeds; per-seed counts are reported);
* ``cmorl_hypervolume``: C-MORL's archive hypervolume >= 95% of the true front's
  (reference point (0, -25), both objectives maximised; mean over seeds);
* ``stage1_hull_only``: stage 1 alone recovers only the convex-hull points (the
  two ends, 1 @ 1 step and 124 @ 19 steps) in every seed: no interior treasure.

Return sign: the time objective is negative, so C-MORL's constraint
``G_j >= beta G_j(pi_r)`` is applied to returns shifted by the known lower bound
``(0, -max_steps_in_episode) = (0, -100)`` (see ``rljax.agents.cmorl``).

Writes config.json, result.json (per seed, mean and 95% CI), fronts.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

import envs
from envs.mo.deep_sea_treasure import pareto_front
from experiments.common import add_run_arguments, apply_overrides, setup_run
from rljax.agents import cmorl, moppo
from rljax.core.config import to_dict
from rljax.core.logging import write_json
from rljax.core.pareto import expected_utility, hypervolume, simplex_grid, sparsity
from rljax.core.pareto import pareto_front as nondominated
from rljax.core.stats import mean_ci95_by_key
from rljax.core.plotting import plt, save_figure

NAME = "cmorl-dst"
DESCRIPTION = "C-MORL vs stage-1 MOPPO alone on concave Deep Sea Treasure (equal env steps)"
ENV = "mo/deep-sea-treasure-concave"
REF_POINT = (0.0, -25.0)
TREASURES_MIN, HV_FRACTION_MIN = 8, 0.95


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="seeds, vmapped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a tiny run: a smoke test")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="override a CMORLConfig, MOPPOConfig or CMORLHParams field, e.g. --set num_iterations=4")
    add_run_arguments(parser, NAME)


def settings(args: argparse.Namespace) -> tuple[cmorl.CMORLConfig, cmorl.CMORLHParams]:
    """Fixed before the first full run. PPO: PureJaxRL's defaults except: no learning-rate annealing
    (training continues across stages), entropy 0.05 without advantage normalisation (with normalised
    advantages the greedy policies collapse to deterministic ones and the constrained step has nothing to
    explore with), rewards scaled by (0.01, 0.05) so both objectives are O(1) per episode."""
    _, env_params = envs.make(ENV)
    max_steps = env_params.max_steps_in_episode
    if args.quick:
        mcfg = moppo.MOPPOConfig(env=ENV, num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2,
                                 total_timesteps=128, reward_scale=(0.01, 0.05), normalize_advantages=False,
                                 eval_episodes=1)
        config = cmorl.CMORLConfig(moppo=mcfg, stage1_updates=3, num_iterations=2, num_selected=1,
                                   extension_updates=3, return_lower_bound=(0.0, -float(max_steps)))
    else:
        mcfg = moppo.MOPPOConfig(env=ENV, num_envs=16, num_steps=128, num_minibatches=4, update_epochs=4,
                                 reward_scale=(0.01, 0.05), normalize_advantages=False, eval_episodes=4)
        config = cmorl.CMORLConfig(moppo=mcfg, preference_step=0.2, stage1_updates=100, num_iterations=12,
                                   num_selected=3, extension_updates=20, return_lower_bound=(0.0, -float(max_steps)))
    hparams = cmorl.CMORLHParams(ent_coef=0.05, beta=0.9, barrier_t=20.0)
    mfields = {f.name for f in dataclasses.fields(moppo.MOPPOConfig)}
    moppo_pairs = [p for p in args.set or [] if p.split("=", 1)[0] in mfields]
    other_pairs = [p for p in args.set or [] if p.split("=", 1)[0] not in mfields]
    (mcfg,) = apply_overrides(moppo_pairs, config.moppo)
    config, hparams = apply_overrides(other_pairs, dataclasses.replace(config, moppo=mcfg), hparams)
    return config, hparams


def score(points, front: np.ndarray) -> dict:
    """Treasures found (exact front points), hypervolume and its fraction of the true front's, EU, sparsity."""
    points = np.asarray(points, np.float64)
    found = [bool(np.any(np.all(np.isclose(points, p, atol=1e-4), axis=1))) for p in front]
    hv, hv_true = hypervolume(points, REF_POINT), hypervolume(front, REF_POINT)
    weights = simplex_grid(2, 0.01)
    nd = nondominated(points)
    return {"treasures_found": int(sum(found)), "treasures": [float(t) for t, f in zip(front[:, 0], found) if f],
            "hypervolume": hv, "hypervolume_fraction": hv / hv_true,
            "expected_utility": expected_utility(nd, weights),
            "expected_utility_fraction": expected_utility(nd, weights) / expected_utility(front, weights),
            "sparsity": sparsity(nd), "front": nd.tolist()}




def _plot(results: dict, front: np.ndarray, run_dir: str) -> None:
    seeds = len(results["cmorl"]["per_seed"])
    fig, axes = plt.subplots(1, seeds, figsize=(4.2 * seeds, 3.8), squeeze=False)
    for s, ax in enumerate(axes[0]):
        ax.plot(-front[:, 1], front[:, 0], "k--", marker="*", markersize=9, label="true front", zorder=1)
        c = np.array(results["cmorl"]["per_seed"][s]["front"])
        b = np.array(results["stage1_only"]["per_seed"][s]["front"])
        ax.scatter(-c[:, 1], c[:, 0], s=60, facecolors="none", edgecolors="tab:blue", label="C-MORL archive", zorder=2)
        ax.scatter(-b[:, 1], b[:, 0], s=18, color="tab:orange", label="stage 1 alone", zorder=3)
        ax.set_xlim(0, 26)
        ax.set_xlabel("steps (-time return)")
        ax.set_ylabel("treasure")
        ax.set_title(f"seed {s}: C-MORL {results['cmorl']['per_seed'][s]['treasures_found']}/10, "
                     f"stage 1 {results['stage1_only']['per_seed'][s]['treasures_found']}/10", fontsize=9)
        ax.grid(alpha=0.3)
        if s == 0:
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("concave Deep Sea Treasure: non-dominated returns at equal env steps", fontsize=10)
    save_figure(fig, os.path.join(run_dir, "fronts.png"))


def main(args: argparse.Namespace) -> dict:
    if args.resume:
        raise SystemExit("cmorl-dst: --resume is not supported (the run is short); start a new --out")
    run_dir = setup_run(args, NAME)
    config, hparams = settings(args)
    k = 2
    m = len(config.preferences(k))
    extra_updates = cmorl.weight_sweep_updates(config, k)
    extra_steps = config.stage2_env_steps(k)
    front = pareto_front("concave")
    write_json(os.path.join(run_dir, "config.json"), {
        "experiment": NAME, "env": ENV, "config": to_dict(config), "hparams": to_dict(hparams), "seeds": args.seeds,
        "seed": args.seed, "ref_point": REF_POINT, "stage1_only_extra_updates": extra_updates})
    env_steps = config.stage1_env_steps(k) + extra_steps
    print(f"C-MORL on {ENV}: {args.seeds} seeds, {env_steps} env steps per seed and method "
          f"(stage 1 {config.stage1_env_steps(k)}, stage 2 {extra_steps}) -> {run_dir}")
    start = time.perf_counter()
    both = cmorl.run_with_weight_sweep(config, hparams, jax.random.PRNGKey(args.seed), args.seeds)
    out, stage1, baseline_returns = both["cmorl"], both["stage1"], both["weight_sweep_returns"]

    results = {"cmorl": [], "stage1_only": [], "stage1": []}
    for s in range(args.seeds):
        results["cmorl"].append(score(out["archives"][s].returns, front))
        results["stage1_only"].append(score(baseline_returns[s * m:(s + 1) * m], front))
        results["stage1"].append(score(stage1[1][s * m:(s + 1) * m], front))
    keys = ("treasures_found", "hypervolume", "hypervolume_fraction", "expected_utility", "sparsity")
    results = {name: {"per_seed": r, **mean_ci95_by_key(r, keys)} for name, r in results.items()}
    c, b = results["cmorl"], results["stage1_only"]
    interior = [float(t) for t in front[1:-1, 0]]
    claims = {
        "cmorl_treasures": {"mean": c["treasures_found"]["mean"], "threshold": TREASURES_MIN,
                            "holds": c["treasures_found"]["mean"] >= TREASURES_MIN},
        "cmorl_hypervolume": {"mean_fraction": c["hypervolume_fraction"]["mean"], "threshold": HV_FRACTION_MIN,
                              "holds": c["hypervolume_fraction"]["mean"] >= HV_FRACTION_MIN},
        "stage1_hull_only": {"interior_treasures_per_seed": [[t for t in s["treasures"] if t in interior]
                                                             for s in b["per_seed"]],
                             "holds": all(not any(t in interior for t in s["treasures"]) for s in b["per_seed"])},
    }
    wall = time.perf_counter() - start
    summary = {"experiment": NAME, "env": ENV, "seeds": args.seeds, "env_steps_per_seed_per_method": env_steps,
               "stage1_env_steps": config.stage1_env_steps(k), "stage2_env_steps": extra_steps,
               "ref_point": REF_POINT, "true_front": front.tolist(),
               "true_front_hypervolume": hypervolume(front, REF_POINT), "methods": results, "claims": claims,
               "cmorl_history": out["history"], "seconds": {**both["seconds"], "total": wall},
               "wall_seconds": wall}
    write_json(os.path.join(run_dir, "result.json"), summary)
    _plot(results, front, run_dir)
    for name in ("cmorl", "stage1_only", "stage1"):
        r = results[name]
        print(f"{name:>12}: treasures {[s['treasures_found'] for s in r['per_seed']]}, HV "
              f"{[round(float(s['hypervolume']), 1) for s in r['per_seed']]} "
              f"({[round(100 * float(s['hypervolume_fraction']), 1) for s in r['per_seed']]} % of the true front's)")
    for name, claim in claims.items():
        print(f"claim {name}: {'holds' if claim['holds'] else 'DOES NOT HOLD'} "
              f"({ {kk: v for kk, v in claim.items() if kk != 'holds'} })")
    print(f"wrote {run_dir} ({wall:.0f} s)")
    return summary
