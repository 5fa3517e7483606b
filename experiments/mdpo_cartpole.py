"""On-policy MDPO vs PPO on CartPole, with the paper's multi-step ablation (Tomar et al., ICLR 2022;
papers/control-rl.md §7).

    python -m experiments mdpo-cartpole            # 8 seeds x 4 arms (about two minutes on one CPU core)
    python -m experiments mdpo-cartpole --quick    # tiny budget (seconds), for the smoke test

Arms, every one on the same batches (4 envs x 128 steps, PureJaxRL's CartPole), the same budget
(``total_timesteps``) and the same seeds:

* ``mdpo``: on-policy MDPO (``rljax.agents.mdpo``): m = ``mdpo_epochs`` (10) full-batch Adam steps per
  iteration on E[r A] - KL(pi || pi_k) / t_k, t_k = t_0 (1 - k / K) annealed; the paper's settings
  (Adam 3e-4 annealed, gradient clip 0.5, no entropy bonus).
* ``mdpo_m1``: the same with m = 1 (one step per iteration: the single-step ablation).
* ``mdpo_fixed_t``: m = 10 with t_k = t_0 throughout (diagnostic: the annealing ablation).
* ``ppo``: PureJaxRL's CartPole PPO (4 epochs x 4 minibatches, clip 0.2, lr 2.5e-4, entropy 0.01).

Each run ends with ``eval_episodes`` greedy episodes; the training curve is the return of the last finished
episode at each update (mean over envs).

Claims, fixed before the first full run (``result["claims"]``), on the final greedy return:

* ``mdpo_solves``: MDPO's mean over seeds >= 475 at 1e5 steps;
* ``mdpo_matches_ppo``: MDPO's mean >= PPO's, or the 95% Welch interval of the difference reaches 0;
* ``multi_step_beats_single``: MDPO (m = 10) - MDPO (m = 1) has a 95% Welch interval above 0.

Writes config.json, result.json, curves.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

from experiments.common import (add_settings_arguments, seed_returns, settings_from_flags, setup_run, write_result,
                                write_settings_config)
from rljax.agents import mdpo, ppo
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import difference_ci95, mean_ci95

NAME = "mdpo-cartpole"
DESCRIPTION = "On-policy MDPO vs PPO on CartPole, with the single-step and fixed-step-size ablations"
ARMS = ("mdpo", "mdpo_m1", "mdpo_fixed_t", "ppo")
COLORS = {"mdpo": "tab:red", "mdpo_m1": "tab:orange", "mdpo_fixed_t": "tab:purple", "ppo": "tab:gray"}
SOLVED = 475.0


@dataclasses.dataclass(frozen=True)
class Settings:
    env: str = "gymnax/CartPole-v1"
    num_envs: int = 4
    num_steps: int = 128
    total_timesteps: int = 196 * 512  # 100,352 env steps: 196 iterations of 512
    mdpo_epochs: int = 10  # m, the paper's number of full-batch steps per iteration
    step_size: float = 1.0  # t_0
    seeds: int = 8
    eval_episodes: int = 16


QUICK = {"num_steps": 16, "total_timesteps": 4 * 16 * 3, "seeds": 2, "eval_episodes": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set total_timesteps=204800 --set seeds=16")


def arm_trainers(s: Settings) -> dict:
    """``{arm: (trainer, hparams)}``."""
    base = ppo.PPOConfig(env=s.env, num_envs=s.num_envs, num_steps=s.num_steps, total_timesteps=s.total_timesteps,
                         eval_episodes=s.eval_episodes)
    steps = lambda m: dataclasses.replace(base, update_epochs=m, num_minibatches=1)  # noqa: E731
    hp = mdpo.MDPOHParams(step_size=s.step_size)
    return {
        "mdpo": (mdpo.make_train(mdpo.MDPOConfig(ppo=steps(s.mdpo_epochs))), hp),
        "mdpo_m1": (mdpo.make_train(mdpo.MDPOConfig(ppo=steps(1))), hp),
        "mdpo_fixed_t": (mdpo.make_train(mdpo.MDPOConfig(ppo=steps(s.mdpo_epochs), anneal_step_size=False)), hp),
        "ppo": (ppo.make_train(dataclasses.replace(base, update_epochs=4, num_minibatches=4)), ppo.PPOHParams()),
    }


def steps_to_solve(curve: np.ndarray, steps_per_update: int) -> list[float | None]:
    """Per seed, the env steps until the training return first reaches ``SOLVED`` (None: never)."""
    return [int((np.argmax(c >= SOLVED) + 1) * steps_per_update) if (c >= SOLVED).any() else None for c in curve]


def main(args) -> dict:
    run_dir = setup_run(args, NAME)
    s = settings_from_flags(args, Settings(), QUICK)
    write_settings_config(run_dir, args, NAME, s)
    start = time.time()
    keys = jax.random.split(jax.random.PRNGKey(args.seed), s.seeds)  # the same seeds for every arm
    final, curves, seconds = {}, {}, {}
    for arm, (trainer, hp) in arm_trainers(s).items():
        t0 = time.time()
        final[arm], curves[arm] = seed_returns(trainer, hp, keys)
        seconds[arm] = time.time() - t0
        print(f"{arm}: final greedy return {final[arm].mean():.1f} over {s.seeds} seeds ({seconds[arm]:.0f} s)",
              flush=True)

    batch = s.num_envs * s.num_steps
    summary = {arm: {"final_return": mean_ci95(final[arm]), "training_curve_mean": mean_ci95(curves[arm].mean(1)),
                     "steps_to_solve": steps_to_solve(curves[arm], batch), "seconds": seconds[arm]}
               for arm in ARMS}
    vs_ppo = difference_ci95(final["mdpo"], final["ppo"])
    vs_single = difference_ci95(final["mdpo"], final["mdpo_m1"])
    claims = {
        "mdpo_solves": {"holds": bool(final["mdpo"].mean() >= SOLVED), "mean": float(final["mdpo"].mean()),
                        "target": SOLVED},
        "mdpo_matches_ppo": {"holds": vs_ppo["diff"] >= 0 or vs_ppo["ci95_high"] >= 0, "beats": vs_ppo["diff"] >= 0,
                             **vs_ppo},
        "multi_step_beats_single": {"holds": vs_single["ci95_low"] > 0, **vs_single},
    }
    result = {
        "returns": summary, "returns_per_seed": {arm: final[arm].tolist() for arm in ARMS},
        "vs_fixed_step_size": difference_ci95(final["mdpo"], final["mdpo_fixed_t"]),
        "claims": claims, "seconds": time.time() - start,
    }
    plot(run_dir, curves, final, batch)
    write_result(run_dir, result)
    return result


def plot(run_dir: str, curves: dict, final: dict, batch: int) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    for arm in ARMS:
        c = curves[arm]
        steps = np.arange(1, c.shape[1] + 1) * batch
        mean, sem = c.mean(0), c.std(0, ddof=1) / np.sqrt(len(c)) if len(c) > 1 else 0.0 * c.mean(0)
        axes[0].plot(steps, mean, color=COLORS[arm], label=arm)
        axes[0].fill_between(steps, mean - 1.96 * sem, mean + 1.96 * sem, color=COLORS[arm], alpha=0.15)
    axes[0].axhline(SOLVED, color="k", ls=":", lw=1)
    axes[0].set(xlabel="env steps", ylabel="training episode return (mean, 95% band)", title="CartPole learning curves")
    axes[0].legend()
    for i, arm in enumerate(ARMS):
        axes[1].bar(i, final[arm].mean(), color=COLORS[arm], alpha=0.6)
        axes[1].scatter(np.full(len(final[arm]), i), final[arm], color=COLORS[arm], s=12, zorder=3)
    axes[1].axhline(SOLVED, color="k", ls=":", lw=1)
    axes[1].set_xticks(range(len(ARMS)), ARMS, rotation=20)
    axes[1].set(ylabel="final greedy return", title="per seed (bars: means)")
    save_figure(fig, os.path.join(run_dir, "curves.png"))
