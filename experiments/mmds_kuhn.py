"""Magnetic mirror-descent search on Kuhn poker (Sokota et al., ICLR 2024; papers/control-rl.md §11).

    python -m experiments mmds-kuhn            # 20 blueprints (seconds on one CPU core)
    python -m experiments mmds-kuhn --quick    # 3 blueprints, 10 updates, for the smoke test

Claim (the paper's two-player zero-sum result, at the digest's scale): planning with MMDS, i.e. playing at every
decision point the MMD update of the blueprint with exactly computed action values and repeating it, cuts the
blueprint's exploitability by at least half.

Setup: ``blueprints`` random behavioural policies for Kuhn poker (``envs.kuhn``; each information state's action
distribution ~ Dirichlet(1), a stand-in for a partially trained blueprint); action values ``q(a)`` exact from the
belief the current policy implies (``envs.kuhn.conditional_q``); uniform magnet; ``step_size`` eta,
``regularization`` alpha; ``num_updates`` repeated updates (``rljax.agents.mmds.repeated_search``).
Exploitability is OpenSpiel's ``(BR_0 + BR_1) / 2`` by enumerating pure strategies (uniform play: 0.4583).

The claim's definition, fixed before the first full run (``result["claims"]``):

* ``mmds_halves_exploitability``: after ``num_updates`` updates the exploitability is at most half the
  blueprint's, for every blueprint;
* ``mmds_halves_exploitability_on_average``: the mean over blueprints of (after / before) is at most 0.5.

Writes config.json, result.json, exploitability.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs import kuhn
from experiments.common import add_settings_arguments, settings_from_flags, setup_run, write_result, write_settings_config
from rljax.agents import mmds
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95

NAME = "mmds-kuhn"
DESCRIPTION = "Magnetic mirror-descent search (update-equivalence) on Kuhn poker: exploitability of random blueprints"


@dataclasses.dataclass(frozen=True)
class Settings:
    blueprints: int = 20
    step_size: float = 0.1
    regularization: float = 0.05
    num_updates: int = 200


QUICK = {"blueprints": 3, "num_updates": 10}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set step_size=0.5 --set regularization=0.0")


def main(args) -> dict:
    s = settings_from_flags(args, Settings(), QUICK)
    if s.blueprints < 1 or s.num_updates < 1 or s.step_size <= 0 or s.regularization < 0:
        raise SystemExit(f"--set blueprints / num_updates / step_size / regularization: expected >= 1, >= 1, > 0 "
                         f"and >= 0, got {s.blueprints}, {s.num_updates}, {s.step_size}, {s.regularization}")
    run_dir = setup_run(args, NAME)
    write_settings_config(run_dir, args, NAME, s)
    start = time.time()
    blueprints = jax.random.dirichlet(jax.random.PRNGKey(args.seed), jnp.ones(2), (s.blueprints, kuhn.NUM_INFOSTATES))

    def search(blueprint):
        return mmds.repeated_search(blueprint, kuhn.conditional_q, kuhn.exploitability, num_updates=s.num_updates,
                                    step_size=s.step_size, regularization=s.regularization)

    curves = np.asarray(jax.jit(jax.vmap(search))(blueprints).metric)  # [blueprints, num_updates + 1]
    ratio = curves[:, -1] / curves[:, 0]
    print(f"exploitability: blueprint {curves[:, 0].mean():.4f}, after 1 update {curves[:, 1].mean():.4f}, after "
          f"{s.num_updates} {curves[:, -1].mean():.4f}; after / before {ratio.mean():.3f} (worst {ratio.max():.3f})",
          flush=True)
    claims = {
        "mmds_halves_exploitability": {"holds": bool(ratio.max() <= 0.5), "worst_ratio": float(ratio.max())},
        "mmds_halves_exploitability_on_average": {"holds": bool(ratio.mean() <= 0.5), "mean_ratio": mean_ci95(ratio)},
    }
    result = {
        "exploitability": {"blueprint": mean_ci95(curves[:, 0]), "after_one_update": mean_ci95(curves[:, 1]),
                           "final": mean_ci95(curves[:, -1])},
        "one_update_lowers_it": int((curves[:, 1] < curves[:, 0]).sum()),
        "ratio_per_blueprint": ratio.tolist(), "mean_curve": curves.mean(0).tolist(),
        "claims": claims, "seconds": time.time() - start,
    }
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curves.T, color="tab:blue", alpha=0.25, linewidth=0.8)
    ax.plot(curves.mean(0), color="k", label=f"mean of {s.blueprints} blueprints")
    ax.set(xlabel="repeated MMDS updates", ylabel="exploitability", yscale="log",
           title=f"MMDS on Kuhn poker (eta {s.step_size:g}, alpha {s.regularization:g})")
    ax.legend()
    save_figure(fig, os.path.join(run_dir, "exploitability.png"))
    write_result(run_dir, result)
    return result
