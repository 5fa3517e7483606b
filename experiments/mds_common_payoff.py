"""Mirror-descent search in Tiny-Hanabi-style common-payoff games (Sokota et al., ICLR 2024, update-equivalence;
papers/control-rl.md §11), with exact action values.

    python -m experiments mds-common-payoff            # 20 random games (seconds on one CPU core)
    python -m experiments mds-common-payoff --quick    # 3 games, 20 updates, for the smoke test

Claim (the digest's common-payoff half): MDS, ``pi'(a) ∝ pi_bp(a) exp(eta q(a))``, never does worse than the
blueprint at the information state where it plans, and repeating small-eta updates at every information state
raises the common payoff.

Setup: ``games`` random games (``envs.tiny_hanabi``: 2 cards, 3 actions each, integer payoffs 0..10), each with a
random blueprint (Dirichlet(1) at every information state); ``q`` exact (``envs.tiny_hanabi.action_values``).

The claim's definition, fixed before the first full run (after a one-game check of the code), in ``result["claims"]``:

* ``search_never_worse_at_its_infostate``: at every information state of every game, ``E_{pi'}[q] >= E_{pi_bp}[q]``
  (within 1e-5) for one update there with the others on the blueprint;
* ``repeated_updates_rise``: under ``num_updates`` repeated updates everywhere (``step_size``), the common payoff
  never falls by more than 1e-5 from one update to the next, in every game.

Writes config.json, result.json, payoff.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs import tiny_hanabi
from experiments.common import add_settings_arguments, settings_from_flags, setup_run, write_result, write_settings_config
from rljax.agents import mmds
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95

NAME = "mds-common-payoff"
DESCRIPTION = "Mirror-descent search (update-equivalence) in random Tiny-Hanabi-style common-payoff games"


@dataclasses.dataclass(frozen=True)
class Settings:
    games: int = 20
    num_cards: int = 2
    num_actions: int = 3
    step_size: float = 0.1
    num_updates: int = 200


QUICK = {"games": 3, "num_updates": 20}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set step_size=1.0 --set num_actions=2")


def one_game(s: Settings, key):
    """``(payoff curve [num_updates + 1], optimum, per-infostate gains of one update [I])`` for one random game."""
    k_game, k1, k2 = jax.random.split(key, 3)
    payoff = tiny_hanabi.random_game(k_game, s.num_cards, s.num_actions)
    alpha = jnp.ones(s.num_actions)
    blueprint = (jax.random.dirichlet(k1, alpha, (s.num_cards,)),
                 jax.random.dirichlet(k2, alpha, (s.num_cards, s.num_actions)))
    q = tiny_hanabi.action_values(payoff, blueprint)
    searched = jax.tree.map(lambda p, v: mmds.mirror_descent_search_update(p, v, step_size=s.step_size), blueprint, q)
    # At each information state alone: the searched policy's expected action value there against the blueprint's.
    gains = jnp.concatenate([((n - b) * v).sum(-1).ravel() for n, b, v in zip(searched, blueprint, q)])
    curve = mmds.repeated_search(blueprint, lambda p: tiny_hanabi.action_values(payoff, p),
                                 lambda p: tiny_hanabi.value(payoff, p), num_updates=s.num_updates,
                                 step_size=s.step_size).metric
    return curve, tiny_hanabi.optimal_value(payoff), gains


def main(args) -> dict:
    s = settings_from_flags(args, Settings(), QUICK)
    if s.games < 1 or s.num_updates < 1 or s.step_size <= 0 or s.num_cards < 1 or s.num_actions < 2:
        raise SystemExit(f"--set games / num_updates / step_size / num_cards / num_actions: expected >= 1, >= 1, > 0, "
                         f">= 1, >= 2, got {s.games}, {s.num_updates}, {s.step_size}, {s.num_cards}, {s.num_actions}")
    if s.num_actions ** (s.num_cards * (s.num_actions + 1)) > 2**20:
        raise SystemExit(f"--set num_cards / num_actions: the optimum is found by enumerating "
                         f"{s.num_actions}^{s.num_cards * (s.num_actions + 1)} policy pairs, more than 2^20")
    run_dir = setup_run(args, NAME)
    write_settings_config(run_dir, args, NAME, s)
    start = time.time()
    keys = jax.random.split(jax.random.PRNGKey(args.seed), s.games)
    curves, optima, gains = (np.asarray(x) for x in jax.jit(jax.vmap(lambda k: one_game(s, k)))(keys))
    falls = np.diff(curves, axis=-1).min()
    ratio = curves[:, -1] / optima
    print(f"common payoff: blueprint {curves[:, 0].mean():.3f}, after 1 update {curves[:, 1].mean():.3f}, after "
          f"{s.num_updates} {curves[:, -1].mean():.3f} (optimum {optima.mean():.3f}); smallest one-state gain "
          f"{gains.min():.2e}, largest fall between updates {-falls:.2e}", flush=True)
    claims = {
        "search_never_worse_at_its_infostate": {"holds": bool(gains.min() >= -1e-5), "smallest_gain": float(gains.min())},
        "repeated_updates_rise": {"holds": bool(falls >= -1e-5), "largest_fall": float(-falls)},
    }
    result = {
        "payoff": {"blueprint": mean_ci95(curves[:, 0]), "after_one_update": mean_ci95(curves[:, 1]),
                   "final": mean_ci95(curves[:, -1]), "optimum": mean_ci95(optima)},
        "final_over_optimum": mean_ci95(ratio), "games_at_optimum": int((optima - curves[:, -1] <= 1e-3).sum()),
        "mean_curve": curves.mean(0).tolist(), "claims": claims, "seconds": time.time() - start,
    }
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot((curves / optima[:, None]).T, color="tab:green", alpha=0.3, linewidth=0.8)
    ax.set(xlabel="repeated MDS updates", ylabel="common payoff / optimum", ylim=(0, 1.02),
           title=f"MDS in {s.games} random common-payoff games (eta {s.step_size:g})")
    save_figure(fig, os.path.join(run_dir, "payoff.png"))
    write_result(run_dir, result)
    return result
