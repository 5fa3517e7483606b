"""Directional Preference Alignment (Wang et al., ACL 2024): rejection-sampling fine-tuning conditioned on a
preference direction in the prompt, on a toy task with correctness and verbosity (papers/preference-lm.md §12).

    python -m experiments dpa            # 5 seeds (a few minutes on one CPU core)
    python -m experiments dpa --quick    # tiny budget (seconds), for the smoke test

Claim (the paper's, at toy scale): one policy trained on direction-conditioned prompts gives arithmetic control
of verbosity (the response length rises with the direction's angle) and, at the pure-helpfulness direction,
keeps the helpfulness of rejection sampling on helpfulness alone.

Setup:

* Prompt: a direction token (one of ``num_directions`` angles theta evenly spaced over [-45, 45] degrees, the
  paper's range: helpfulness weight cos(theta) >= 0.71) and a task token ``a``; a response is up to ``length``
  tokens ending at EOS. helpfulness = 1 when the first token is ``a`` (the task: repeat it), else 0;
  verbosity = the number of tokens before EOS / ``length``. The reward of a response under direction theta is
  ``v^T r = cos(theta) helpfulness + sin(theta) verbosity`` (the paper's unit vector over the two attributes;
  the attributes are exact here, where the paper learns them with a regression reward model).
* Policy: a 2-layer d=32 Llama-style LM at its random initialisation, one per seed.
* DPA: ``rounds`` of rejection-sampling fine-tuning (``rljax.lm.ranked_samples``, ``loss="best_of_n"``): for
  every prompt (direction x task) draw ``n`` responses, keep the one with the highest ``v^T r``, and take
  ``inner_steps`` SFT steps on the kept responses.
* Scalar RSF: the same, on the same prompts, with helpfulness alone as the reward.
* Metrics per direction, from ``eval_samples`` samples: the mean response length and the helpfulness rate.

The claim's definition, fixed before the first full run (``result["claim"]["definition"]``), on means over seeds:
the Spearman correlation between theta and DPA's mean length >= 0.9, and DPA's helpfulness at theta = 0 at least
scalar RSF's (at theta = 0) minus 0.03.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from experiments.common import add_settings_arguments, settings_from_flags, setup_run, write_settings_config
from rljax.core.logging import write_json
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95
from rljax.lm import ranked_samples
from rljax.lm.model import LMConfig, init_params
from rljax.lm.sampling import SamplingConfig, generate

NAME = "dpa"
DESCRIPTION = "Directional Preference Alignment: direction-conditioned rejection sampling controls verbosity, keeps helpfulness"
PAD, EOS, FIRST_TASK = 0, 1, 2
ARMS = ("dpa", "scalar_rsf")


@dataclasses.dataclass(frozen=True)
class Settings:
    num_tasks: int = 10
    num_directions: int = 7
    length: int = 8
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 4
    rounds: int = 3
    n: int = 8
    inner_steps: int = 50
    learning_rate: float = 1e-3
    eval_samples: int = 256  # per direction
    seeds: int = 5


QUICK = dict(num_tasks=3, num_directions=3, length=3, hidden_size=16, num_layers=1, num_heads=2, rounds=2, n=2,
             inner_steps=2, eval_samples=8, seeds=2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set rounds=5 --set n=16")


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = settings_from_flags(args, Settings(), QUICK)
    if s.num_directions < 3 or s.num_directions % 2 == 0:
        raise SystemExit(f"--set num_directions: expected an odd number >= 3 (theta = 0 among them), got {s.num_directions}")
    return s


def angles(s: Settings) -> np.ndarray:
    return np.deg2rad(np.linspace(-45.0, 45.0, s.num_directions))


def prompts_of(s: Settings) -> np.ndarray:
    """Every (direction token, task token) prompt, [num_directions x num_tasks, 2]."""
    first_direction = FIRST_TASK + s.num_tasks
    d, a = np.meshgrid(np.arange(s.num_directions), np.arange(s.num_tasks), indexing="ij")
    return np.stack([first_direction + d.ravel(), FIRST_TASK + a.ravel()], axis=1).astype(np.int32)


def attributes(s: Settings, prompt_ids, completions):
    """helpfulness (first token = the task token) and verbosity (tokens before EOS / length), each [B]."""
    helpful = (completions[:, 0] == prompt_ids[:, 1]).astype(jnp.float32)
    verbosity = (completions >= FIRST_TASK).sum(axis=1) / s.length  # after EOS every token is PAD
    return helpful, verbosity


def directional_reward(s: Settings):
    theta = jnp.asarray(angles(s), jnp.float32)

    def reward(prompt_ids, completions):
        helpful, verbosity = attributes(s, prompt_ids, completions)
        direction = theta[prompt_ids[:, 0] - FIRST_TASK - s.num_tasks]
        return jnp.cos(direction) * helpful + jnp.sin(direction) * verbosity

    return reward


def evaluate(s: Settings, model: LMConfig, params, key):
    """Mean length (tokens before EOS) and helpfulness rate per direction, [num_directions] each."""
    prompts = jnp.asarray(prompts_of(s))
    rows = jnp.repeat(prompts, -(-s.eval_samples // s.num_tasks), axis=0)  # every direction's tasks, repeated
    sampling = SamplingConfig(max_new_tokens=s.length, eos_id=EOS, pad_id=PAD)
    tokens = generate(params, model, rows, jnp.ones_like(rows), key, sampling).tokens
    helpful, verbosity = attributes(s, rows, tokens)
    direction = rows[:, 0] - FIRST_TASK - s.num_tasks
    per = lambda x: jax.ops.segment_sum(x, direction, s.num_directions) / jax.ops.segment_sum(jnp.ones_like(x), direction, s.num_directions)  # noqa: E731
    return {"length": per(verbosity * s.length), "helpful": per(helpful)}


def rank_correlation(x, y) -> float:
    """Spearman's rho, 0 when either side is constant (no ordering to follow)."""
    return 0.0 if np.ptp(x) == 0 or np.ptp(y) == 0 else float(stats.spearmanr(x, y).statistic)


def plot(s: Settings, result: dict, path: str) -> None:
    degrees = np.linspace(-45.0, 45.0, s.num_directions)
    fig, (ax_len, ax_help) = plt.subplots(1, 2, figsize=(11, 3.8))
    for arm, style in (("dpa", "o-"), ("scalar_rsf", "s--")):
        ax_len.plot(degrees, result["arms"][arm]["length"], style, label=arm)
        ax_help.plot(degrees, result["arms"][arm]["helpful"], style, label=arm)
    ax_len.plot(degrees, result["initial"]["length"], ":", color="gray", label="initial policy")
    ax_help.plot(degrees, result["initial"]["helpful"], ":", color="gray", label="initial policy")
    ax_len.set_ylabel("mean response length (tokens)")
    ax_help.set_ylabel("helpfulness rate")
    for ax in (ax_len, ax_help):
        ax.set_xlabel("direction theta (degrees; verbosity weight sin theta)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"DPA vs scalar RSF, {s.rounds} rounds, n = {s.n}: mean over {s.seeds} seeds", fontsize=10)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    s = settings_from_args(args)
    run_dir = setup_run(args, NAME)
    start = time.perf_counter()
    model = LMConfig(FIRST_TASK + s.num_tasks + s.num_directions, s.hidden_size, s.num_layers, s.num_heads,
                     max_position_embeddings=s.length + 2)
    write_settings_config(run_dir, args, NAME, s, model=model)
    prompts = prompts_of(s)
    rewards = {"dpa": directional_reward(s), "scalar_rsf": lambda p, c: attributes(s, p, c)[0]}
    init_key, train_key, eval_key = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    init_keys, train_keys = jax.random.split(init_key, s.seeds), jax.random.split(train_key, s.seeds)
    eval_keys = jax.random.split(eval_key, s.seeds)
    print(f"dpa: {len(prompts)} prompts ({s.num_directions} directions x {s.num_tasks} tasks), {s.seeds} seeds -> {run_dir}")

    config = ranked_samples.RankedSamplesConfig(model=model, length=s.length, loss="best_of_n", num_updates=s.rounds,
                                                samples_per_prompt=s.n, prompts_per_update=len(prompts),
                                                inner_steps=s.inner_steps, eos_id=EOS, pad_id=PAD)

    def run(init_key, train_key, eval_key):
        initial = init_params(model, init_key)  # both arms start here, with the same sampling keys
        out = {"initial": evaluate(s, model, initial, eval_key)}
        for arm, reward_fn in rewards.items():
            trainer = ranked_samples.make_train(config, prompts, reward_fn, init_params=initial)
            state, _ = trainer(train_key, ranked_samples.RankedSamplesHParams(learning_rate=s.learning_rate))
            out[arm] = evaluate(s, model, state.params, eval_key)
        return out

    out = jax.tree.map(np.asarray, jax.jit(jax.vmap(run))(init_keys, train_keys, eval_keys))
    degrees = np.linspace(-45.0, 45.0, s.num_directions)
    spearman = np.array([rank_correlation(degrees, lengths) for lengths in out["dpa"]["length"]])
    middle = s.num_directions // 2  # theta = 0
    result = {
        "directions_degrees": degrees.tolist(),
        "arms": {arm: {m: out[arm][m].mean(axis=0).tolist() for m in ("length", "helpful")} for arm in ARMS},
        "initial": {m: out["initial"][m].mean(axis=0).tolist() for m in ("length", "helpful")},
        "spearman_theta_length": mean_ci95(spearman),
        "helpful_at_zero": {arm: mean_ci95(out[arm]["helpful"][:, middle]) for arm in ARMS},
        "scalar_rsf_helpful_mean": mean_ci95(out["scalar_rsf"]["helpful"].mean(axis=1)),
    }
    gap = result["helpful_at_zero"]["dpa"]["mean"] - result["helpful_at_zero"]["scalar_rsf"]["mean"]
    result["claim"] = {
        "definition": ("means over seeds: Spearman(theta, DPA's mean length) >= 0.9; DPA's helpfulness at theta = 0 >= "
                       "scalar RSF's at theta = 0 minus 0.03"),
        "verbosity_follows_theta": bool(result["spearman_theta_length"]["mean"] >= 0.9),
        "helpfulness_kept": bool(gap >= -0.03),
    }
    result["claim"]["holds"] = result["claim"]["verbosity_follows_theta"] and result["claim"]["helpfulness_kept"]
    result |= {"experiment": NAME, "seeds": s.seeds, "wall_seconds": time.perf_counter() - start}
    print("  theta (degrees): " + ", ".join(f"{d:+.0f}" for d in degrees))
    for arm in ARMS:
        print(f"  {arm:10s} length: " + ", ".join(f"{v:.2f}" for v in result["arms"][arm]["length"])
              + "; helpful: " + ", ".join(f"{v:.2f}" for v in result["arms"][arm]["helpful"]))
    print(f"  Spearman(theta, DPA length) {result['spearman_theta_length']['mean']:.3f}; helpful at theta = 0: DPA "
          f"{result['helpful_at_zero']['dpa']['mean']:.3f}, scalar RSF {result['helpful_at_zero']['scalar_rsf']['mean']:.3f}")
    write_json(os.path.join(run_dir, "result.json"), result)
    plot(s, result, os.path.join(run_dir, "directions.png"))
    print(f"claim: {({k: v for k, v in result['claim'].items() if k != 'definition'})}. {result['wall_seconds']:.0f} s")
    return result
