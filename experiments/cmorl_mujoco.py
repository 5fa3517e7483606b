"""C-MORL vs a weight-sweep MOPPO baseline on MO-halfcheetah and MO-hopper-2d, at equal env steps (Liu et al., ICLR 2025).

    python -m experiments cmorl-mujoco                      # both envs, 3 seeds, small CPU budget
    python -m experiments cmorl-mujoco --envs hopper-2d     # one env
    python -m experiments cmorl-mujoco --gpu                # the paper's budget: 1.5e6 steps, 1000-step episodes
    python -m experiments cmorl-mujoco --quick              # smoke test

Envs: ``mo/halfcheetah`` ``[run, control]`` and ``mo/hopper-2d`` ``[forward, jump]``,
brax physics with MO-Gymnasium's reward vectors (``envs.mo.brax_mo``). Per env and seed:

* stage 1 (shared): M = 6 MOPPO policies on w in simplex_grid(2, 0.2), ``stage1_updates`` each;
* C-MORL: stage 1, then ``num_iterations`` x (N selected policies x 2 objectives x
  ``extension_updates``) constrained PPO updates; every intermediate policy enters the archive;
* weight-sweep MOPPO: the same 6 preference policies trained on for the same number of
  extra env steps (no learning-rate schedule, so this is one longer run per weight);
  its front is the 6 final policies.

Equal env steps count training transitions; evaluation episodes (C-MORL scores every
intermediate policy, the baseline its final ones) are not training data and are not
counted. Every policy is scored by the deterministic (mode) policy's undiscounted
return over ``eval_episodes`` episodes. Metrics (morl-baselines' definitions,
``rljax.core.pareto``): hypervolume with reference point (-100, -100), expected
utility over the weight grid of step 0.01, sparsity of the non-dominated set.

Budgets. CPU (default): 100-step episodes, 8 envs x 128 steps per update, stage 1
24 updates per policy, stage 2 2 x 3 x 2 x 6 updates: 221,184 env steps per seed and
method (2/3 of them in stage 1, as the paper's 1.0M of 1.5M on hopper-2d). ``--gpu``:
1000-step episodes (MO-Gymnasium's), 4 envs x 1024 steps, stage 1 40 updates, stage 2
1 x 3 x 2 x 20 (the paper's 20 PPO iterations per problem): 1,474,560 steps per seed
and method. Every rollout is longer than an episode, so each update's rollout
finishes episodes for C-MORL's return estimates (``rljax.agents.cmorl``).

Signs. Both envs have objectives that are negative for some policies (control cost,
backward running), so C-MORL's constraint ``G_j >= beta G_j(pi_r)`` is applied to
returns shifted by the hypervolume reference point, ``return_lower_bound = (-100, -100)``:
the relaxation ``beta`` then shrinks each policy's dominated box towards the reference.

Claims, fixed before the first full run: per env, C-MORL's hypervolume and expected
utility (means over the seeds) are >= the weight-sweep baseline's.

Writes config.json, result.json (per env: per seed, mean and 95% CI), fronts.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

from experiments.common import add_run_arguments, apply_overrides, setup_run
from rljax.agents import cmorl, moppo
from rljax.core.config import to_dict
from rljax.core.logging import write_json
from rljax.core.pareto import expected_utility, hypervolume, simplex_grid, sparsity
from rljax.core.pareto import pareto_front as nondominated
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95_by_key

NAME = "cmorl-mujoco"
DESCRIPTION = "C-MORL vs weight-sweep MOPPO on MO-halfcheetah and MO-hopper-2d (equal env steps)"
ENVS = {"halfcheetah": "mo/halfcheetah", "hopper-2d": "mo/hopper-2d"}
REF_POINT = (-100.0, -100.0)
METRICS = ("hypervolume", "expected_utility", "sparsity", "front_size")

# (episode length, MOPPOConfig fields, CMORLConfig fields) per budget.
BUDGETS = {
    "cpu": (100, dict(num_envs=8, num_steps=128, num_minibatches=4, update_epochs=4, eval_episodes=2),
            dict(stage1_updates=24, num_iterations=2, num_selected=3, extension_updates=6)),
    "gpu": (1000, dict(num_envs=4, num_steps=1024, num_minibatches=4, update_epochs=4, eval_episodes=4),
            dict(stage1_updates=40, num_iterations=1, num_selected=3, extension_updates=20)),
    "quick": (20, dict(num_envs=2, num_steps=32, num_minibatches=2, update_epochs=1, eval_episodes=1),
              dict(stage1_updates=2, num_iterations=1, num_selected=3, extension_updates=2)),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--envs", nargs="+", choices=sorted(ENVS), default=list(ENVS), help="which envs (default both)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds, vmapped")
    parser.add_argument("--seed", type=int, default=0)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--gpu", action="store_true", help="the paper's budget (1.5e6 env steps per seed and method)")
    budget.add_argument("--quick", action="store_true", help="a tiny run: a smoke test")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="override a CMORLConfig, MOPPOConfig or CMORLHParams field, e.g. --set num_iterations=4")
    add_run_arguments(parser, NAME)


def budget_name(args: argparse.Namespace) -> str:
    return "gpu" if args.gpu else "quick" if args.quick else "cpu"


def settings(env: str, budget: str, overrides=None) -> tuple[cmorl.CMORLConfig, cmorl.CMORLHParams]:
    """Fixed before the first full run. PPO: CleanRL's MuJoCo PPO (64x64 tanh, Adam 3e-4, no entropy bonus,
    normalised advantages) without a learning-rate schedule (training continues across stages); rewards x 0.1
    for the critic (the same factor for both objectives, so preferences keep their meaning); C-MORL: the
    paper's beta = 0.9 and t = 20."""
    episode_length, moppo_fields, cmorl_fields = BUDGETS[budget]
    batch = moppo_fields["num_envs"] * moppo_fields["num_steps"]
    mcfg = moppo.MOPPOConfig(env=ENVS[env], env_kwargs=(("episode_length", episode_length),), total_timesteps=batch,
                             reward_scale=(0.1, 0.1), normalize_advantages=True, **moppo_fields)
    config = cmorl.CMORLConfig(moppo=mcfg, preference_step=0.2, return_lower_bound=REF_POINT, **cmorl_fields)
    hparams = cmorl.CMORLHParams(learning_rate=3e-4, ent_coef=0.0, beta=0.9, barrier_t=20.0)
    mfields = {f.name for f in dataclasses.fields(moppo.MOPPOConfig)}
    moppo_pairs = [p for p in overrides or [] if p.split("=", 1)[0] in mfields]
    other_pairs = [p for p in overrides or [] if p.split("=", 1)[0] not in mfields]
    (mcfg,) = apply_overrides(moppo_pairs, config.moppo)
    config, hparams = apply_overrides(other_pairs, dataclasses.replace(config, moppo=mcfg), hparams)
    return config, hparams


def score(points) -> dict:
    """Hypervolume (reference (-100, -100)), expected utility, sparsity and the non-dominated set of ``points [n, 2]``."""
    points = np.asarray(points, np.float64)
    front = nondominated(points)
    dominating = (points > np.asarray(REF_POINT)).all(axis=1).any()
    return {"hypervolume": hypervolume(points, REF_POINT) if dominating else 0.0,
            "expected_utility": expected_utility(front, simplex_grid(2, 0.01)), "sparsity": sparsity(front),
            "front_size": len(front), "front": front.tolist()}


def run_env(env: str, budget: str, seeds: int, key: jax.Array, overrides=None, log=print) -> dict:
    """Stage 1, the weight-sweep continuation and C-MORL's stage 2 on one env; scores and timings."""
    config, hparams = settings(env, budget, overrides)
    k = 2
    extra_updates = cmorl.weight_sweep_updates(config, k)
    steps = config.stage1_env_steps(k) + config.stage2_env_steps(k)
    log(f"{ENVS[env]}: {seeds} seeds, {steps} env steps per seed and method (stage 1 {config.stage1_env_steps(k)}, "
        f"stage 2 {config.stage2_env_steps(k)})")
    start = time.perf_counter()
    both = cmorl.run_with_weight_sweep(config, hparams, key, seeds, log=log)
    out, stage1, sweep_returns = both["cmorl"], both["stage1"], both["weight_sweep_returns"]
    m = len(config.preferences(k))
    methods = {
        "cmorl": [score(out["archives"][s].returns) for s in range(seeds)],
        "weight_sweep": [score(sweep_returns[s * m:(s + 1) * m]) for s in range(seeds)],
        "stage1": [score(stage1[1][s * m:(s + 1) * m]) for s in range(seeds)],
    }
    methods = {name: {"per_seed": per_seed, **mean_ci95_by_key(per_seed, METRICS)} for name, per_seed in methods.items()}
    c, w = methods["cmorl"], methods["weight_sweep"]
    claims = {f"{metric}_ge_weight_sweep": {"cmorl": c[metric]["mean"], "weight_sweep": w[metric]["mean"],
                                            "holds": c[metric]["mean"] >= w[metric]["mean"]}
              for metric in ("hypervolume", "expected_utility")}
    return {"env": ENVS[env], "config": to_dict(config), "hparams": to_dict(hparams),
            "env_steps_per_seed_per_method": steps, "stage1_env_steps": config.stage1_env_steps(k),
            "stage2_env_steps": config.stage2_env_steps(k), "weight_sweep_extra_updates": extra_updates,
            "methods": methods, "claims": claims, "cmorl_history": out["history"],
            "seconds": {**both["seconds"], "total": time.perf_counter() - start}}


def _plot(results: dict, run_dir: str) -> None:
    envs_run = list(results)
    seeds = len(results[envs_run[0]]["methods"]["cmorl"]["per_seed"])
    fig, axes = plt.subplots(len(envs_run), seeds, figsize=(4.2 * seeds, 3.8 * len(envs_run)), squeeze=False)
    for row, env in zip(axes, envs_run):
        objectives = {"halfcheetah": ("run", "control"), "hopper-2d": ("forward", "jump")}[env]
        for s, ax in enumerate(row):
            c = np.array(results[env]["methods"]["cmorl"]["per_seed"][s]["front"])
            w = np.array(results[env]["methods"]["weight_sweep"]["per_seed"][s]["front"])
            ax.scatter(c[:, 0], c[:, 1], s=40, facecolors="none", edgecolors="tab:blue", label="C-MORL archive")
            ax.scatter(w[:, 0], w[:, 1], s=18, color="tab:orange", label="weight-sweep MOPPO")
            hv_c = results[env]["methods"]["cmorl"]["per_seed"][s]["hypervolume"]
            hv_w = results[env]["methods"]["weight_sweep"]["per_seed"][s]["hypervolume"]
            ax.set_title(f"{env} seed {s}: HV {hv_c:.0f} vs {hv_w:.0f}", fontsize=9)
            ax.set_xlabel(objectives[0])
            ax.set_ylabel(objectives[1])
            ax.grid(alpha=0.3)
            if s == 0:
                ax.legend(fontsize=7)
    fig.suptitle("non-dominated returns at equal env steps (HV reference (-100, -100))", fontsize=10)
    save_figure(fig, os.path.join(run_dir, "fronts.png"))


def main(args: argparse.Namespace) -> dict:
    if args.resume:
        raise SystemExit(f"{NAME}: --resume is not supported; start a new --out")
    run_dir = setup_run(args, NAME)
    budget = budget_name(args)
    for env in args.envs:  # a bad --set fails before any compile
        cmorl.weight_sweep_updates(settings(env, budget, args.set)[0], 2)
    write_json(os.path.join(run_dir, "config.json"), {
        "experiment": NAME, "envs": args.envs, "budget": budget, "seeds": args.seeds, "seed": args.seed,
        "ref_point": REF_POINT, "set": args.set or []})
    start = time.perf_counter()
    key = jax.random.PRNGKey(args.seed)
    results = {env: run_env(env, budget, args.seeds, jax.random.fold_in(key, i), args.set)
               for i, env in enumerate(args.envs)}
    wall = time.perf_counter() - start
    summary = {"experiment": NAME, "budget": budget, "seeds": args.seeds, "ref_point": REF_POINT, "envs": results,
               "claims": {f"{env}/{name}": claim for env, r in results.items() for name, claim in r["claims"].items()},
               "wall_seconds": wall}
    write_json(os.path.join(run_dir, "result.json"), summary)
    _plot(results, run_dir)
    for env, r in results.items():
        for name in ("cmorl", "weight_sweep", "stage1"):
            per_seed = r["methods"][name]["per_seed"]
            print(f"{env:>12} {name:>12}: HV {[round(s['hypervolume']) for s in per_seed]}, "
                  f"EU {[round(s['expected_utility'], 1) for s in per_seed]}, "
                  f"front sizes {[s['front_size'] for s in per_seed]}")
    for name, claim in summary["claims"].items():
        print(f"claim {name}: {'holds' if claim['holds'] else 'DOES NOT HOLD'} "
              f"(C-MORL {claim['cmorl']:.2f} vs weight sweep {claim['weight_sweep']:.2f})")
    print(f"wrote {run_dir} ({wall:.0f} s)")
    return summary
