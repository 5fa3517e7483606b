"""f-DVL vs XQL on offline Pendulum: does f-DVL fix XQL's value divergence? (Sikchi et al., ICLR 2024)

    python -m experiments fdvl-vs-xql                       # 1e5 mixed transitions, 4 temperatures x 5 seeds, CPU
    python -m experiments fdvl-vs-xql --dataset data/pendulum_mixed
    python -m experiments fdvl-vs-xql --quick               # smoke test
    python -m experiments fdvl-vs-xql --gpu                 # brax hopper: 1e6 mixed transitions, 1e6 updates (GPU)
    python -m experiments fdvl-vs-xql --gpu --env brax/halfcheetah

1. Data: ``--dataset FILE`` (``make-dataset`` output) or ``make_dataset.make("mixed", ...)``:
   1e5 transitions, half from a uniform random policy, half from a "medium" SAC policy.
   The normalised score puts the random policy at 0 and the medium policy at 100
   (the dataset's ``random_return`` and ``policy_return``). On brax hopper, halfcheetah and
   walker2d (``--gpu``) the rewards are scaled by 1000 / (the dataset's return range) first, as
   the DVL code (``train_offline.normalize``) does for those MuJoCo tasks; returns and scores
   stay in the env's units, and the divergence threshold uses the scaled rewards.
2. Methods (``rljax.agents.implicit_value``), same networks, batch, updates and AWR
   policy extraction; the temperature ``alpha`` (``--alphas``, default 0.5, 1, 2, 5)
   enters each value loss as follows (``diff = Qbar - V``):

   * ``xql``: Gumbel regression ``exp(z) - z - 1``, ``z = diff / alpha`` (XQL's beta = alpha),
     with the official code's clip of z at 7 and batch-max rescaling;
   * ``fdvl_chi2``: ``lam alpha f*_p(diff / alpha) - (1 - lam) diff``, chi2 ``f*_p``, lam = 1/2
     (alpha is the dual-V temperature of ``max_d E_d[r] - alpha D_f(d || d^O)``);
   * ``fdvl_tv``: the same with TV's ``f*_p``, lam = 0.8 (there alpha only shifts V by alpha/2:
     the loss is piecewise linear);
   * ``iql`` (reference, not swept): expectile 0.7.

   All temperatures x seeds of a method run as one vmapped program.
3. Divergence (defined before the first run): a run *diverges* if at any training step
   ``max |V|`` or ``max |Q|`` over the batch (online and target critics) exceeds
   ``10 r_max / (1 - gamma)`` (``r_max``: the largest ``|r|`` in the dataset), or any of
   them is NaN/inf. A run whose evaluation return is not finite counts, in means, as
   the dataset's random-policy return (per-seed values are stored as they were).

Claim, fixed before the first full run: XQL diverges in at least half of its runs at
the small temperatures (alpha in {0.5, 1}), while chi2 and TV f-DVL diverge in none of
their runs (every alpha) and reach a final return (mean over seeds, at their best
alpha) at least XQL's best (mean over seeds, at its best alpha).

Budget: 64x64 networks, batch 128, 20,000 gradient steps per run (chosen for the
10-minute single-core CPU budget before any full run; the paper used 2x256, batch
1024, 1e6 steps; the digest's experiment 1e5). At 2e4 no method has finished learning;
``--updates 100000`` (about 45 CPU-minutes for everything) takes every method to 95-99%
of the medium policy, and still no run diverges (experiments/RESULTS.md). Writes
config.json, result.json, returns.png, divergence.png and one sub-directory per method
(metrics.jsonl: means over all its runs; checkpoints/).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

import envs
from experiments.common import (GPU_ENV, add_run_arguments, apply_gpu_defaults, apply_overrides, offline_rl_rewards,
                                setup_run)
from rljax.agents import implicit_value as iv
from rljax.core import dataset as dataset_lib
from rljax.core import loop as loop_lib
from rljax.core import offline
from rljax.core.config import to_dict
from rljax.core.logging import write_json
from rljax.core.stats import mean_ci95
from rljax.core.plotting import plt, save_figure

NAME = "fdvl-vs-xql"
DESCRIPTION = "f-DVL (chi2, TV) vs XQL (and IQL) value divergence over temperatures, offline Pendulum (CPU)"
METHODS = ("xql", "fdvl_chi2", "fdvl_tv", "iql")
SWEPT = ("xql", "fdvl_chi2", "fdvl_tv")  # iql has no temperature: one setting
SMALL_ALPHAS = (0.5, 1.0)
DIVERGENCE_FACTOR = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="gymnax/Pendulum-v1", help="continuous-action env")
    parser.add_argument("--dataset", metavar="FILE", help="offline data (make-dataset); default: build a mixed one")
    parser.add_argument("--steps", type=int, default=100_000, help="transitions when building the dataset")
    parser.add_argument("--alphas", default="0.5,1,2,5", help="comma-separated temperatures")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per method and temperature")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--updates", type=int, default=20_000, help="gradient steps per run")
    parser.add_argument("--eval-every", type=int, default=5_000, help="gradient steps between evaluations")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true", help="tiny data, networks and budget: a smoke test")
    scale.add_argument("--gpu", action="store_true", help=f"the brax scale-up ({GPU_ENV}, 1e6 transitions, 1e6 "
                       "updates of batch 1024 on 256x256 networks): a GPU run")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="override an ImplicitValueConfig or ImplicitValueHParams field for every method "
                             "(not value_loss, temperature or lam), e.g. --set batch_size=256")
    add_run_arguments(parser, NAME)


def _parse_list(text: str, cast, flag: str) -> list:
    try:
        values = [cast(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise SystemExit(f"{flag}: {e}") from None
    if not values:
        raise SystemExit(f"{flag}: expected at least one value, got {text!r}")
    return values


def settings(args: argparse.Namespace, method: str) -> tuple[iv.ImplicitValueConfig, iv.ImplicitValueHParams]:
    if args.quick:
        sizes = dict(hidden_sizes=(16, 16), batch_size=32, eval_episodes=2)
    elif args.gpu:  # f-DVL's MuJoCo sizes
        sizes = dict(hidden_sizes=(256, 256), batch_size=1024, eval_episodes=10)
    else:
        sizes = dict(hidden_sizes=(64, 64), batch_size=128, eval_episodes=10)
    config, hparams = iv.preset(method, env=args.env, num_updates=args.updates, **sizes)
    for pair in args.set or []:
        if pair.split("=", 1)[0] in ("value_loss", "temperature", "lam"):
            raise SystemExit(f"--set {pair}: the method fixes this field; see the module docstring")
    config, hparams = apply_overrides(args.set, config, hparams)
    return config, hparams


def load_dataset(args: argparse.Namespace) -> dataset_lib.Dataset:
    if args.dataset:
        data = dataset_lib.load(args.dataset)
    else:
        from experiments.make_dataset import make

        extra = {"agent_steps": 2_000} if args.quick else {}
        data = make("mixed", args.env, jax.random.PRNGKey(args.seed + 1000), steps=args.steps, **extra)
    for key in ("random_return", "policy_return"):
        if key not in data.metadata:
            raise SystemExit(f"--dataset {args.dataset}: metadata has no {key!r}; write it with make-dataset")
    return data


def run_method(method, args, alphas, data, meta, threshold, run_dir) -> dict:
    config, hparams = settings(args, method)
    swept = method in SWEPT
    settings_alphas = alphas if swept else [None]
    num_runs = len(settings_alphas) * args.seeds
    if swept:  # run i: alpha i // seeds, seed i % seeds
        hparams = hparams.replace(temperature=np.repeat(np.asarray(alphas, np.float32), args.seeds))
        for a in alphas:
            iv.check_hparams(config, hparams.replace(temperature=a))
    else:
        iv.check_hparams(config, hparams)
    trainer = iv.make_train(config, data)
    run_config = {"experiment": NAME, "method": method, "config": to_dict(config), "hparams": to_dict(hparams),
                  "alphas": alphas if swept else None, "seeds": args.seeds, "seed": args.seed}
    chunk = min(args.eval_every, config.num_updates)
    result = loop_lib.run(
        trainer, jax.random.PRNGKey(args.seed), hparams, num_seeds=num_runs,
        run_dir=os.path.join(run_dir, method), config_dict=run_config,
        loop=loop_lib.LoopConfig(chunk_updates=chunk, eval_every_chunks=1, checkpoint_every_chunks=0,
                                 progress=not args.no_progress),
    )
    ev = result.final_eval
    final_returns = np.asarray(ev["return"], np.float64).mean(axis=1)  # [runs]
    peak_v, peak_q = np.asarray(ev["peak_abs_v"], np.float64), np.asarray(ev["peak_abs_q"], np.float64)
    nonfinite = ~np.isfinite(peak_v) | ~np.isfinite(peak_q)
    diverged = nonfinite | (peak_v > threshold) | (peak_q > threshold)
    evals = [r for r in result.records if "eval_return/per_seed" in r]
    curves = np.array([r["eval_return/per_seed"] for r in evals], np.float64).T  # [runs, points]

    per_alpha = {}
    for i, alpha in enumerate(settings_alphas):
        idx = slice(i * args.seeds, (i + 1) * args.seeds)
        r = final_returns[idx]
        counted = np.where(np.isfinite(r), r, meta["random_return"])
        ok = ~diverged[idx]
        per_alpha["ref" if alpha is None else f"{alpha:g}"] = {
            "alpha": alpha,
            "diverged_fraction": float(diverged[idx].mean()),
            "nonfinite_fraction": float(nonfinite[idx].mean()),
            "final_return": mean_ci95(counted),
            "final_score": mean_ci95(score(counted, meta)),
            "final_return_not_diverged": mean_ci95(r[ok]) if ok.any() else None,
            "final_return_per_seed": [float(x) if np.isfinite(x) else None for x in r],
            "final_score_per_seed": [float(x) if np.isfinite(x) else None for x in score(r, meta)],
            "diverged_per_seed": diverged[idx].tolist(),
            "nonfinite_per_seed": nonfinite[idx].tolist(),
            "peak_abs_v_per_seed": [float(x) if np.isfinite(x) else None for x in peak_v[idx]],
            "peak_abs_q_per_seed": [float(x) if np.isfinite(x) else None for x in peak_q[idx]],
            "eval_return_curve_per_seed": [[float(x) if np.isfinite(x) else None for x in row] for row in curves[idx]],
        }
    return {"value_loss": config.value_loss, "hparams": to_dict(hparams.replace(temperature=None))
            if swept else to_dict(hparams), "eval_updates": [r["update"] for r in evals], "per_alpha": per_alpha,
            "compile_seconds": result.compile_seconds, "run_seconds": result.run_seconds}


def score(returns, meta) -> np.ndarray:
    return dataset_lib.normalized_score(returns, meta["random_return"], meta["policy_return"])


def evaluate_claim(methods: dict, alphas: list[float]) -> dict:
    needed = {"xql", "fdvl_chi2", "fdvl_tv"}
    if not needed <= set(methods):
        return {"holds": None, "why": f"needs methods {sorted(needed)}"}
    small = [f"{a:g}" for a in alphas if a in SMALL_ALPHAS]
    if not small:
        return {"holds": None, "why": f"no small temperature {SMALL_ALPHAS} was run"}
    xql = methods["xql"]["per_alpha"]
    xql_small = np.concatenate([xql[a]["diverged_per_seed"] for a in small])
    best = {m: max(v["final_return"]["mean"] for v in methods[m]["per_alpha"].values()) for m in needed}
    fdvl_diverged = {m: float(np.mean(np.concatenate([v["diverged_per_seed"] for v in methods[m]["per_alpha"].values()])))
                     for m in ("fdvl_chi2", "fdvl_tv")}
    parts = {
        "xql_small_alpha_diverged_fraction": float(xql_small.mean()),
        "xql_diverges_in_half_of_small_alpha_runs": bool(xql_small.mean() >= 0.5),
        "fdvl_diverged_fraction_all_alphas": fdvl_diverged,
        "fdvl_all_finite": bool(all(v == 0 for v in fdvl_diverged.values())),
        "best_alpha_mean_return": best,
        "fdvl_reach_xql_best": bool(best["fdvl_chi2"] >= best["xql"] and best["fdvl_tv"] >= best["xql"]),
    }
    parts["holds"] = bool(parts["xql_diverges_in_half_of_small_alpha_runs"] and parts["fdvl_all_finite"]
                          and parts["fdvl_reach_xql_best"])
    return parts


COLORS = {"xql": "tab:red", "fdvl_chi2": "tab:blue", "fdvl_tv": "tab:green", "iql": "tab:gray"}


def _plot(summary: dict, run_dir: str, alphas: list[float]) -> None:
    methods = summary["methods"]
    meta = summary["dataset"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for k, (m, r) in enumerate(methods.items()):
        if m not in SWEPT:
            ci = r["per_alpha"]["ref"]["final_return"]
            ax.axhspan(ci["ci95_low"], ci["ci95_high"], color=COLORS[m], alpha=0.15)
            ax.axhline(ci["mean"], color=COLORS[m], linestyle="--", label=f"{m} (reference)")
            continue
        xs = np.array(alphas) * (1.0 + 0.04 * (k - 1))  # small offsets so the markers do not hide each other
        stats = [r["per_alpha"][f"{a:g}"]["final_return"] for a in alphas]
        mean = np.array([s["mean"] for s in stats])
        err = np.array([[s["mean"] - s["ci95_low"] for s in stats], [s["ci95_high"] - s["mean"] for s in stats]])
        ax.errorbar(xs, mean, yerr=err, fmt="-o", color=COLORS[m], capsize=3, label=m)
        for x, a in zip(xs, alphas):
            ys = [y if y is not None else meta["random_return"] for y in r["per_alpha"][f"{a:g}"]["final_return_per_seed"]]
            ax.scatter([x] * len(ys), ys, s=8, color=COLORS[m], alpha=0.4)
    ax.axhline(meta["policy_return"], color="k", linewidth=0.8, linestyle=":", label="medium policy")
    ax.axhline(meta["random_return"], color="k", linewidth=0.8, linestyle="-.", label="random policy")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
    ax.set_xlabel("temperature alpha")
    ax.set_ylabel("final return (mean action, 10 episodes)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(f"{summary['env']}: final return per temperature ({summary['seeds']} seeds, 95% CI)", fontsize=9)
    save_figure(fig, os.path.join(run_dir, "returns.png"))

    swept = [m for m in methods if m in SWEPT]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(swept), 1)
    for k, m in enumerate(swept):
        fr = [methods[m]["per_alpha"][f"{a:g}"]["diverged_fraction"] for a in alphas]
        axes[0].bar(np.arange(len(alphas)) + (k - (len(swept) - 1) / 2) * width, fr, width, color=COLORS[m], label=m)
        for i, a in enumerate(alphas):
            peaks = [max(v if v is not None else np.inf, q if q is not None else np.inf)
                     for v, q in zip(methods[m]["per_alpha"][f"{a:g}"]["peak_abs_v_per_seed"],
                                     methods[m]["per_alpha"][f"{a:g}"]["peak_abs_q_per_seed"])]
            peaks = np.minimum(peaks, 1e12)  # non-finite drawn at the top
            axes[1].scatter(np.full(len(peaks), i + (k - (len(swept) - 1) / 2) * width), peaks, s=12, color=COLORS[m],
                            label=m if i == 0 else None)
    axes[0].set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    axes[0].set_ylim(0, 1.05)
    axes[0].set_xlabel("temperature alpha")
    axes[0].set_ylabel("fraction of runs diverged (|V| or |Q| > threshold, or non-finite)")
    axes[1].axhline(summary["divergence_threshold"], color="k", linestyle="--", linewidth=0.8, label="threshold")
    axes[1].set_yscale("log")
    axes[1].set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    axes[1].set_xlabel("temperature alpha")
    axes[1].set_ylabel("peak max(|V|, |Q|) over training (1e12 = non-finite)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("value divergence per method and temperature", fontsize=9)
    save_figure(fig, os.path.join(run_dir, "divergence.png"))


def main(args: argparse.Namespace) -> dict:
    apply_gpu_defaults(args, add_arguments, {"env": GPU_ENV, "steps": 1_000_000, "updates": 1_000_000,
                                             "eval_every": 50_000})
    if args.quick:
        if args.updates == 20_000:
            args.updates, args.eval_every = 40, 20
        if args.steps == 100_000:
            args.steps = 4_000
        if args.seeds == 5:
            args.seeds = 2
    methods = _parse_list(args.methods, str.strip, "--methods")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; expected some of {METHODS}")
    alphas = _parse_list(args.alphas, float, "--alphas")
    if any(a <= 0 for a in alphas):
        raise SystemExit(f"--alphas: temperatures must be positive, got {alphas}")
    if args.updates % args.eval_every:
        raise SystemExit(f"--updates ({args.updates}) must be a multiple of --eval-every ({args.eval_every})")
    for m in methods:  # config errors before the (slow) dataset
        settings(args, m)
    run_dir = setup_run(args, NAME)
    start = time.perf_counter()
    dataset = offline_rl_rewards(load_dataset(args), args.env)  # the DVL code's MuJoCo reward normalisation
    dataset_seconds = time.perf_counter() - start
    raw_env, env_params = envs.make(args.env)
    data = offline.from_dataset(dataset, raw_env, env_params)
    meta = dataset.metadata
    gamma = float(settings(args, methods[0])[1].gamma)
    r_max = float(np.abs(dataset.reward).max())
    threshold = DIVERGENCE_FACTOR * r_max / (1.0 - gamma)
    write_json(os.path.join(run_dir, "config.json"), {
        "experiment": NAME, "env": args.env, "dataset": args.dataset, "methods": methods, "alphas": alphas,
        "seeds": args.seeds, "seed": args.seed, "updates": args.updates,
        "settings": {m: {"config": to_dict(c), "hparams": to_dict(h)} for m in methods for c, h in [settings(args, m)]},
        "divergence_threshold": threshold,
    })
    print(f"{NAME} on {args.env}: {dataset.num_transitions:,} transitions (random {meta['random_return']:.1f}, "
          f"medium {meta['policy_return']:.1f}); alphas {alphas}; {args.seeds} seeds; {args.updates} updates; "
          f"divergence threshold {threshold:.0f} -> {run_dir}")

    summary = {
        "experiment": NAME, "env": args.env, "seeds": args.seeds, "alphas": alphas, "updates": args.updates,
        "alpha_mapping": {
            "xql": "Gumbel loss exp(z) - z - 1 with z = (Qbar - V) / alpha (XQL's beta = alpha); z clipped at 7, "
                   "batch-max rescaling",
            "fdvl_chi2": "lam alpha f*_p((Qbar - V)/alpha) - (1 - lam)(Qbar - V), chi2 f*_p, lam = 0.5",
            "fdvl_tv": "lam alpha f*_p((Qbar - V)/alpha) - (1 - lam)(Qbar - V), TV f*_p = max(y, -1/2), lam = 0.8",
            "iql": "expectile 0.7 (no temperature; one setting)",
        },
        "dataset": {"path": args.dataset, "num_transitions": dataset.num_transitions,
                    "random_return": meta["random_return"], "policy_return": meta["policy_return"],
                    "mean_return": meta.get("mean_return"), "r_max": r_max,
                    "reward_scale": meta.get("reward_scale", 1.0)},
        "divergence_threshold": threshold,
        "divergence_definition": f"max |V| or |Q| over any training batch > {DIVERGENCE_FACTOR:g} r_max / (1 - gamma), "
                                 "or non-finite",
        "dataset_seconds": dataset_seconds, "methods": {},
    }
    for m in methods:
        print(f"-- {m}")
        t = time.perf_counter()
        summary["methods"][m] = r = run_method(m, args, alphas, data, meta, threshold, run_dir)
        r["wall_seconds"] = time.perf_counter() - t
        for key, v in r["per_alpha"].items():
            fr = v["final_return"]
            print(f"   alpha {key}: diverged {v['diverged_fraction']:.2f} (non-finite {v['nonfinite_fraction']:.2f}), "
                  f"return {fr['mean']:.1f} [{fr['ci95_low']:.1f}, {fr['ci95_high']:.1f}], "
                  f"score {v['final_score']['mean']:.1f}")
    summary["claim"] = evaluate_claim(summary["methods"], alphas)
    summary["wall_seconds"] = time.perf_counter() - start
    write_json(os.path.join(run_dir, "result.json"), summary)
    _plot(summary, run_dir, alphas)
    claim = summary["claim"]
    verdict = {True: "holds", False: "DOES NOT HOLD", None: "not evaluated"}[claim["holds"]]
    print(f"claim: {verdict} ({ {k: v for k, v in claim.items() if k != 'holds'} })")
    print(f"wrote {run_dir} ({summary['wall_seconds']:.0f} s)")
    return summary
