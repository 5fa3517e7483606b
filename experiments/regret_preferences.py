"""Regret vs partial-return preference models for reward learning (Knox et al., TMLR 2024;
papers/control-rl.md §12), on random delivery-style gridworlds.

    python -m experiments regret-preferences            # 30 MDPs (about 3 minutes on one CPU core)
    python -m experiments regret-preferences --quick    # tiny budget (seconds), for the smoke test

Claim (the paper's synthetic-data result): when preferences come from the regret model, learning the reward
with the regret model gives well-aligned optimal policies in more MDPs than learning it with the
partial-return model, at every dataset size; when they come from the partial-return model, that advantage
closes (the sanity check: each model fits its own labels).

Setup:

* ``num_mdps`` random 5 x 5 layouts (``envs.delivery``: 1 goal and 2 sheep cells, terminal; 3 coins, 4 mud,
  3 brick), reward ``w . phi`` with the official code's true weights ``[-1, 50, -50, 1, -1, -2]``,
  discount ``gamma`` (0.99: see ``rljax.agents.reward_from_preferences`` on why not 1).
* Per MDP, ``max(sizes)`` pairs of random length-``segment_length`` segments (uniform non-terminal starts,
  uniform actions). Labels are sampled from each preference model under the true reward: P(sigma_1 > sigma_2)
  = logistic(regret(sigma_2) - regret(sigma_1)) or logistic(PR(sigma_1) - PR(sigma_2)).
* For each N in ``sizes`` (the first N pairs), fit w with each model (``FitConfig``: Adam 0.05, 1000 full-batch
  steps from w ~ N(0, 0.01^2)); the regret model differentiates through 50 Bellman backups of Q*_w.
* Score: the mean scaled return of the greedy policy of Q*_w under the true reward, averaged over non-terminal
  starts (1 = optimal, 0 = uniform random). An MDP counts as solved at >= ``success`` (0.9).

The claim's definition, fixed before the first full run (``result["claims"]``):

* ``regret_beats_pr_every_n``: with regret labels, the regret model solves more MDPs than partial return at
  every N;
* ``gap_closes_under_pr_labels``: at every N, (regret's count - PR's count) with partial-return labels is
  smaller than with regret labels.

Writes config.json, result.json, solved.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs import delivery
from experiments.common import add_settings_arguments, settings_from_flags, setup_run, write_result, write_settings_config
from rljax.agents import reward_from_preferences as rfp
from rljax.core import tabular
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95
from rljax.losses.reward_learning import PREFERENCE_MODELS

NAME = "regret-preferences"
DESCRIPTION = "Regret vs partial-return preference models: reward learning on random delivery gridworlds"
COLORS = {"regret": "tab:red", "partial_return": "tab:blue"}
TIME, COIN = delivery.FEATURES.index("time"), delivery.FEATURES.index("coin")


@dataclasses.dataclass(frozen=True)
class Settings:
    num_mdps: int = 30
    size: int = 5
    segment_length: int = 3
    sizes: tuple[int, ...] = (100, 300, 1000, 3000)
    num_steps: int = 1000
    learning_rate: float = 0.05
    gamma: float = 0.99
    horizon: int = 50
    init_scale: float = 0.01
    success: float = 0.9


QUICK = {"num_mdps": 3, "sizes": (20, 60), "num_steps": 50}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set num_mdps=60 --set 'sizes=(30,100)'")


def fit_config(s: Settings, model: str) -> rfp.FitConfig:
    return rfp.FitConfig(model=model, num_steps=s.num_steps, learning_rate=s.learning_rate, gamma=s.gamma,
                         horizon=s.horizon)


def make_task(s: Settings):
    """``task(key) -> (mdp, states [P, 2, T], actions [P, 2, T], labels {source: [P]}, w0 [K])`` for one MDP."""
    true_w = jnp.asarray(delivery.TRUE_WEIGHTS)
    num_pairs = max(s.sizes)

    def task(key):
        mdp_key, segment_key, label_key, init_key = jax.random.split(key, 4)
        mdp = delivery.random_delivery_mdp(mdp_key, s.size)
        states, actions = delivery.random_segments(segment_key, mdp, 2 * num_pairs, s.segment_length)
        states = states.reshape(num_pairs, 2, s.segment_length)
        actions = actions.reshape(num_pairs, 2, s.segment_length)
        labels = {}
        for source, k in zip(PREFERENCE_MODELS, jax.random.split(label_key, len(PREFERENCE_MODELS))):
            logits = rfp.segment_logits(fit_config(s, source), true_w, mdp.next_state, mdp.features, mdp.terminal,
                                        states, actions)
            labels[source] = jax.random.bernoulli(k, jax.nn.sigmoid(logits)).astype(jnp.float32)
        w0 = s.init_scale * jax.random.normal(init_key, true_w.shape)
        return mdp, states, actions, labels, w0

    return task


def make_evaluate(s: Settings, model: str):
    """``evaluate(mdp, states, actions, labels, w0) -> (mean scaled return [len(sizes)], fitted w [len(sizes), K])``
    of ``model``'s fits, one per dataset size (the first N pairs)."""
    fit = rfp.make_fit(fit_config(s, model))
    true_w = jnp.asarray(delivery.TRUE_WEIGHTS)
    subsets = (jnp.arange(max(s.sizes))[None] < jnp.asarray(s.sizes)[:, None]).astype(jnp.float32)

    def evaluate(mdp, states, actions, labels, w0):
        def one_size(weights):
            w = fit(w0, mdp.next_state, mdp.features, mdp.terminal, states, actions, labels, weights)
            q = tabular.optimal_q(mdp.next_state, delivery.rewards(mdp, w), mdp.terminal, gamma=s.gamma,
                                  num_iters=s.horizon)
            return rfp.mean_scaled_return(mdp.next_state, delivery.rewards(mdp, true_w), mdp.terminal,
                                          rfp.greedy_policy(q), gamma=s.gamma, horizon=s.horizon), w

        return jax.vmap(one_size)(subsets)

    return evaluate


def main(args) -> dict:
    s = settings_from_flags(args, Settings(), QUICK)
    if not s.sizes or min(s.sizes) <= 0:
        raise SystemExit(f"--set sizes: expected one or more positive numbers of pairs, got {s.sizes}")
    run_dir = setup_run(args, NAME)
    write_settings_config(run_dir, args, NAME, s)
    start = time.time()
    keys = jax.random.split(jax.random.PRNGKey(args.seed), s.num_mdps)
    mdps, states, actions, labels, w0 = jax.jit(jax.vmap(make_task(s)))(keys)

    scaled, weights = {}, {}  # [source][model]: [num_mdps, len(sizes)] and [num_mdps, len(sizes), K]
    for model in PREFERENCE_MODELS:
        evaluate = jax.jit(jax.vmap(make_evaluate(s, model)))
        for source in PREFERENCE_MODELS:
            t0 = time.time()
            ret, w = evaluate(mdps, states, actions, labels[source], w0)
            scaled.setdefault(source, {})[model] = np.asarray(ret)
            weights.setdefault(source, {})[model] = np.asarray(w)
            solved = (scaled[source][model] >= s.success).sum(0)
            print(f"labels {source}, model {model}: solved {solved.tolist()} of {s.num_mdps} at N = {list(s.sizes)} "
                  f"({time.time() - t0:.0f} s)", flush=True)

    counts = {src: {m: (scaled[src][m] >= s.success).sum(0).tolist() for m in PREFERENCE_MODELS} for src in scaled}
    gap = {src: [r - p for r, p in zip(counts[src]["regret"], counts[src]["partial_return"])] for src in counts}
    claims = {
        "regret_beats_pr_every_n": {"holds": all(g > 0 for g in gap["regret"]), "gap_per_n": gap["regret"]},
        "gap_closes_under_pr_labels": {"holds": all(p < r for p, r in zip(gap["partial_return"], gap["regret"])),
                                       "gap_per_n_pr_labels": gap["partial_return"],
                                       "gap_per_n_regret_labels": gap["regret"]},
    }
    result = {
        "sizes": list(s.sizes), "solved": counts,
        "mean_scaled_return": {src: {m: [mean_ci95(scaled[src][m][:, i]) for i in range(len(s.sizes))]
                                     for m in PREFERENCE_MODELS} for src in scaled},
        "scaled_return_per_mdp": {src: {m: scaled[src][m].tolist() for m in PREFERENCE_MODELS} for src in scaled},
        "learned_weights_mean_at_largest_n": {src: {m: weights[src][m][:, -1].mean(0).tolist()
                                                    for m in PREFERENCE_MODELS} for src in weights},
        # Diagnostic: fits whose coin bonus outweighs the time cost, so that cycling on coins pays (the true
        # weights cancel exactly there, time -1 + coin +1).
        "coin_cycle_pays": {src: {m: (weights[src][m][..., COIN] + weights[src][m][..., TIME] > 0).sum(0).tolist()
                                  for m in PREFERENCE_MODELS} for src in weights},
        "true_weights": list(delivery.TRUE_WEIGHTS), "claims": claims, "seconds": time.time() - start,
    }
    plot(run_dir, s, counts, scaled)
    write_result(run_dir, result)
    return result


def plot(run_dir: str, s: Settings, counts: dict, scaled: dict) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, source in zip(axes, PREFERENCE_MODELS):
        for model in PREFERENCE_MODELS:
            ax.plot(s.sizes, counts[source][model], "-o", color=COLORS[model], label=f"learned with {model}")
        ax.set(xscale="log", xlabel="preferences N", ylabel=f"MDPs with scaled return >= {s.success} (of {s.num_mdps})",
               title=f"labels from the {source} model", ylim=(-0.5, s.num_mdps + 0.5))
        ax.legend()
    save_figure(fig, os.path.join(run_dir, "solved.png"))
