"""PARL's bilevel hypergradient against the myopic alternating fit (Chakraborty et al., ICLR 2024;
papers/control-rl.md §9), on random tabular MDPs.

    python -m experiments parl-tabular            # 20 MDPs x 2 methods (under a minute on one CPU core)
    python -m experiments parl-tabular --quick    # tiny budget (seconds), for the smoke test

Claim (the paper's, at the digest's tabular scale): accounting for the data distribution's dependence on the
reward (A-PARL's hypergradient) aligns the policy with fewer preference queries than the myopic fit that
treats the on-policy data as fixed.

Setup (``rljax.agents.parl``): per seed a random MDP (20 states, 4 actions, Dirichlet(0.3) transitions),
Gaussian features (8) and true weights; the lower level is the exact soft-optimal policy (temperature 0.1,
gamma 0.9) of ``r_nu``; every iteration draws 16 pairs of 5-step segments from it, labels them by Bradley-Terry
on the true reward, and takes one Adam step (``learning_rate``) on ``nu`` along the PARL hypergradient or the
myopic gradient; 300 iterations (4,800 queries). Score: the oracle-scaled true return of the current policy.

The claim's definition, fixed before the first full run (``result["claims"]``):

* ``parl_reaches_95``: A-PARL's mean final scaled return is >= 0.95;
* ``parl_needs_at_most_60pct_of_queries``: the median over seeds of A-PARL's queries until the scaled return
  first reaches 0.95 (infinite if never) is at most 0.6 times the myopic fit's.

Writes config.json, result.json, curves.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

from experiments.common import add_settings_arguments, settings_from_flags, setup_run, write_result, write_settings_config
from rljax.agents import parl
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95

NAME = "parl-tabular"
DESCRIPTION = "PARL / A-PARL hypergradient vs the myopic alternating fit, preference queries to 95% of the oracle"
COLORS = {"parl": "tab:red", "myopic": "tab:blue"}


@dataclasses.dataclass(frozen=True)
class Settings:
    seeds: int = 20
    learning_rate: float = 0.05
    level: float = 0.95
    query_ratio: float = 0.6
    config: parl.PARLConfig = parl.PARLConfig()


QUICK = {"seeds": 2, "config": parl.PARLConfig(num_iterations=20, value_iters=60)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set seeds=40 --set config.score_baseline=True")


def main(args) -> dict:
    s = settings_from_flags(args, Settings(), QUICK)
    if s.seeds < 1:
        raise SystemExit(f"--set seeds: expected at least 1, got {s.seeds}")
    run_dir = setup_run(args, NAME)
    write_settings_config(run_dir, args, NAME, s)
    start = time.time()
    keys = jax.random.split(jax.random.PRNGKey(args.seed), s.seeds)  # the same MDPs for both methods
    curves, queries, upper, cosine = {}, {}, {}, {}
    for method in parl.HYPERGRADIENTS:
        t0 = time.time()
        train = parl.make_train(dataclasses.replace(s.config, hypergradient=method))
        result = jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, parl.PARLHParams(s.learning_rate))
        curves[method] = np.asarray(result.scaled_return)
        queries[method] = np.asarray(parl.queries_to_reach(result, s.level))
        # Diagnostics added after the first run: the upper objective each method reached, and how well it
        # recovered the reward's direction.
        upper[method] = np.asarray(result.final_upper_objective)
        w, w_true = np.asarray(result.weights), np.asarray(result.true_weights)
        cosine[method] = (w * w_true).sum(-1) / np.linalg.norm(w, axis=-1) / np.linalg.norm(w_true, axis=-1)
        print(f"{method}: final scaled return {curves[method][:, -1].mean():.3f}, reaches {s.level} in "
              f"{np.isfinite(queries[method]).sum()} / {s.seeds} MDPs, median queries {np.median(queries[method])}; "
              f"final G {upper[method].mean():.3f}, cosine to the true weights {cosine[method].mean():.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)

    median = {m: float(np.median(q)) for m, q in queries.items()}
    ratio = median["parl"] / median["myopic"] if np.isfinite(median["myopic"]) else float("nan")
    claims = {
        "parl_reaches_95": {"holds": bool(curves["parl"][:, -1].mean() >= s.level),
                            "final_scaled_return": mean_ci95(curves["parl"][:, -1])},
        "parl_needs_at_most_60pct_of_queries": {"holds": bool(np.isfinite(median["parl"]) and ratio <= s.query_ratio),
                                                "median_queries": median, "ratio": ratio},
    }
    result = {
        "final_scaled_return": {m: mean_ci95(c[:, -1]) for m, c in curves.items()},
        "mean_curve": {m: c.mean(0).tolist() for m, c in curves.items()},
        "queries_to_level_per_seed": {m: [float(x) for x in q] for m, q in queries.items()},
        "reached_level": {m: int(np.isfinite(q).sum()) for m, q in queries.items()},
        "final_upper_objective": {m: mean_ci95(u) for m, u in upper.items()},
        "cosine_to_true_weights": {m: mean_ci95(c) for m, c in cosine.items()},
        "queries_per_iteration": s.config.pairs_per_iteration, "claims": claims, "seconds": time.time() - start,
    }
    plot(run_dir, s, curves)
    write_result(run_dir, result)
    return result


def plot(run_dir: str, s: Settings, curves: dict) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    queries = s.config.pairs_per_iteration * np.arange(s.config.num_iterations + 1)
    for method, c in curves.items():
        ax.plot(queries, c.mean(0), color=COLORS[method], label=f"{method} (mean of {s.seeds} MDPs)")
        ax.fill_between(queries, np.percentile(c, 25, 0), np.percentile(c, 75, 0), color=COLORS[method], alpha=0.2)
    ax.axhline(s.level, color="gray", ls=":")
    ax.set(xlabel="preference queries", ylabel="oracle-scaled true return", ylim=(-0.2, 1.05),
           title="PARL hypergradient vs myopic fit (bands: 25-75%)")
    ax.legend()
    save_figure(fig, os.path.join(run_dir, "curves.png"))
