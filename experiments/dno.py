"""Direct Nash Optimization (Rosset et al., 2024): iterated contrastive learning against an intransitive
preference oracle, with exact head-to-head win rates (papers/preference-lm.md §9).

    python -m experiments dno            # 5 seeds (a few minutes on one CPU core)
    python -m experiments dno --quick    # tiny budget (seconds), for the smoke test

Claim (the paper's, at toy scale): DNO improves monotonically, each iteration's policy beating the previous one
head to head under the preference oracle, and ends well ahead of a single offline DPO run on the same oracle
budget.

Setup:

* Space: every sequence of 3 tokens over a vocabulary of 8 (512 sequences) after a one-token prompt; the policy
  is a 2-layer d=32 Llama-style LM at its random initialisation, one per seed (pi_0).
* Oracle: ``P(y > y') = sigmoid(quality_scale (q(y) - q(y')) + cycle_strength C[s(y), s(y')])`` with ``q`` a
  random-MLP quality standardised over the space and ``s(y)`` = the first token mod 3, a "style" whose
  rock-paper-scissors matrix ``C`` (0 beats 1, 1 beats 2, 2 beats 0) makes the preferences intransitive, so no
  reward explains them.
* DNO-Prct (``rljax.lm.ranked_samples`` with ``pairs="best_worst"``, ``reference="sampler"``): for
  ``rounds`` iterations, draw ``samples_per_group`` (K) samples in each of ``groups_per_round`` groups from
  pi_t, score each by its win rate against the others of its group, keep each group's best over its worst
  when their win rates differ by more than ``margin``, and take ``inner_steps`` DPO steps (``beta``) with
  pi_t as the reference. The paper's teacher (GPT-4) outputs are not used.
* Offline DPO: the same oracle budget in one round from pi_0 (``rounds x groups_per_round`` groups), the same
  pairs and ``rounds x inner_steps`` DPO steps, with pi_0 as the reference.
* Metrics, exact over the 512 x 512 pairs: head-to-head win rates ``W(a, b) = sum pi_a(y) pi_b(y') P(y > y')``,
  also for the exact soft policy iteration ``pi_{t+1} ∝ pi_t exp(r_t / beta)``, ``r_t(y) = W(y, pi_t)``, that
  DNO's DPO step regresses onto (reported without a claim).

The claim's definition, fixed before the first full run (``result["claim"]["definition"]``), on means over
seeds: W(pi_{t+1}, pi_t) > 0.5 at every iteration t, and W(pi_T, offline DPO) >= 0.6.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs.text import exact_expectation
from experiments.common import add_settings_arguments, settings_from_flags
from experiments.sequence_space import SpaceSettings, start_run, standardised_mlp_reward
from rljax.core.logging import write_json
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95
from rljax.lm import ranked_samples
from rljax.losses import kl_control, preference

NAME = "dno"
DESCRIPTION = "Direct Nash Optimization vs offline DPO under an intransitive preference oracle: exact head-to-head win rates"
CYCLE = np.array([[0.0, 1.0, -1.0], [-1.0, 0.0, 1.0], [1.0, -1.0, 0.0]])  # style i over style j
CLAIM_FINAL = 0.6


@dataclasses.dataclass(frozen=True)
class Settings(SpaceSettings):
    length: int = 3
    quality_scale: float = 2.0
    cycle_strength: float = 1.0
    rounds: int = 4
    groups_per_round: int = 64
    samples_per_group: int = 5
    margin: float = 0.0
    inner_steps: int = 50
    learning_rate: float = 1e-3
    beta: float = 0.1
    seeds: int = 5


QUICK = dict(vocab_size=4, length=2, hidden_size=16, num_layers=1, num_heads=2, rounds=2, groups_per_round=4,
             inner_steps=2, seeds=2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set rounds=6 --set cycle_strength=2.0")


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = settings_from_flags(args, Settings(), QUICK)
    if s.rounds < 1 or s.samples_per_group < 2:
        raise SystemExit(f"--set rounds / samples_per_group: expected >= 1 and >= 2, got {s.rounds} and {s.samples_per_group}")
    return s


def oracle_matrix(quality, first_tokens, quality_scale, cycle_strength):
    """``P[i, j] = P(y_i > y_j)`` [S, S]: quality differences plus the styles' rock-paper-scissors term."""
    styles = jnp.asarray(first_tokens) % 3
    logits = quality_scale * (quality[:, None] - quality[None, :]) + cycle_strength * jnp.asarray(CYCLE)[styles[:, None], styles[None, :]]
    return jax.nn.sigmoid(logits)


def win_rate(logp_a, logp_b, oracle):
    """Exact ``W(a, b) = sum_{y, y'} pi_a(y) pi_b(y') P(y > y')``."""
    return jnp.exp(logp_a) @ oracle @ jnp.exp(logp_b)


def arm_config(s: Settings, model, offline: bool) -> ranked_samples.RankedSamplesConfig:
    return ranked_samples.RankedSamplesConfig(
        model=model, length=s.length, loss="dpo", num_updates=1 if offline else s.rounds,
        samples_per_prompt=s.samples_per_group,
        prompts_per_update=s.rounds * s.groups_per_round if offline else s.groups_per_round,
        inner_steps=s.rounds * s.inner_steps if offline else s.inner_steps, reward_threshold=s.margin,
        pairs="best_worst", reference="initial" if offline else "sampler")


def plot(s: Settings, result: dict, path: str) -> None:
    fig, (ax_step, ax_style) = plt.subplots(1, 2, figsize=(11, 3.8))
    t = np.arange(1, s.rounds + 1)
    step = result["successive"]
    ax_step.errorbar(t, [v["mean"] for v in step], yerr=[[v["mean"] - v["ci95_low"] for v in step],
                     [v["ci95_high"] - v["mean"] for v in step]], marker="o", label="W(pi_t, pi_{t-1})")
    ax_step.plot(t, [v["mean"] for v in result["against_initial"]], marker="s", label="W(pi_t, pi_0)")
    ax_step.plot(t, [v["mean"] for v in result["exact_successive"]], marker="^", linestyle=":",
                 label="exact soft policy iteration: W(pi_t, pi_{t-1})")
    ax_step.axhline(result["final_vs_offline"]["mean"], color="tab:red", linestyle="--", label="W(pi_T, offline DPO)")
    ax_step.axhline(0.5, color="gray", linewidth=0.8)
    ax_step.set_xlabel("DNO iteration t")
    ax_step.set_ylabel("exact win rate")
    ax_step.legend(fontsize=7)
    ax_step.grid(alpha=0.3)
    styles = np.asarray(result["style_mass"])  # [rounds + 1, 3]
    for k in range(3):
        ax_style.plot(np.arange(s.rounds + 1), styles[:, k], marker="o", label=f"style {k}")
    ax_style.set_xlabel("DNO iteration t")
    ax_style.set_ylabel("mass (mean over seeds)")
    ax_style.legend(fontsize=7)
    ax_style.grid(alpha=0.3)
    fig.suptitle(f"DNO on {s.vocab_size}^{s.length} sequences, intransitive oracle: mean over {s.seeds} seeds", fontsize=10)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    s = settings_from_args(args)
    start = time.perf_counter()
    run_dir, exact = start_run(args, NAME, s)
    space, model, logp_of = exact.space, exact.model, exact.logp
    _, quality = standardised_mlp_reward(args.seed, space)
    oracle = oracle_matrix(quality, space.sequences[:, 0], s.quality_scale, s.cycle_strength)
    init_key, train_key, offline_key = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    priors = exact.random_policies(init_key, s.seeds)
    print(f"dno: {space.size} sequences, {s.seeds} seeds, {s.rounds} iterations -> {run_dir}")

    def scores(prompt_ids, completions):
        """Each sample's win rate against the other K - 1 of its group (groups of K side by side)."""
        rows = space.index(completions).reshape(-1, s.samples_per_group)
        return preference.group_win_rates(oracle[rows[:, :, None], rows[:, None, :]]).reshape(-1)

    prompts = np.zeros((s.rounds * s.groups_per_round, 1), np.int32)
    hp = ranked_samples.RankedSamplesHParams(learning_rate=s.learning_rate, beta=s.beta)
    styles = jnp.asarray(space.sequences[:, 0] % 3)

    def run(prior, key, offline_key):
        dno = ranked_samples.make_train(arm_config(s, model, offline=False), prompts, scores, init_params=prior)

        def iteration(state, _):
            state, _ = dno.update(state)
            return state, logp_of(state.params)

        _, logps = jax.lax.scan(iteration, dno.init(key, hp), None, length=s.rounds)
        offline = ranked_samples.make_train(arm_config(s, model, offline=True), prompts, scores, init_params=prior)
        offline_logp = logp_of(offline(offline_key, hp)[0].params)
        path = jnp.concatenate([logp_of(prior)[None], logps])  # [rounds + 1, S]

        def soft_policy_iteration(logp, _):  # the exact update DNO's DPO step regresses onto
            logp = kl_control.posterior_logp(logp, oracle @ jnp.exp(logp), s.beta)
            return logp, logp

        _, exact_path = jax.lax.scan(soft_policy_iteration, path[0], None, length=s.rounds)
        exact_path = jnp.concatenate([path[:1], exact_path])
        return {"successive": jax.vmap(lambda a, b: win_rate(a, b, oracle))(path[1:], path[:-1]),
                "against_initial": jax.vmap(lambda a: win_rate(a, path[0], oracle))(path[1:]),
                "final_vs_offline": win_rate(path[-1], offline_logp, oracle),
                "offline_vs_initial": win_rate(offline_logp, path[0], oracle),
                "style_mass": jax.vmap(lambda lp: jax.vmap(lambda k: exact_expectation(lp, (styles == k).astype(jnp.float32)))(jnp.arange(3)))(path),
                "quality": jax.vmap(lambda lp: exact_expectation(lp, quality))(path),
                "exact_successive": jax.vmap(lambda a, b: win_rate(a, b, oracle))(exact_path[1:], exact_path[:-1])}

    out = {k: np.asarray(v) for k, v in jax.jit(jax.vmap(run))(priors, jax.random.split(train_key, s.seeds),
                                                               jax.random.split(offline_key, s.seeds)).items()}
    successive = [mean_ci95(out["successive"][:, t]) for t in range(s.rounds)]
    result = {
        "successive": successive,
        "against_initial": [mean_ci95(out["against_initial"][:, t]) for t in range(s.rounds)],
        "final_vs_offline": mean_ci95(out["final_vs_offline"]),
        "offline_vs_initial": mean_ci95(out["offline_vs_initial"]),
        "style_mass": out["style_mass"].mean(axis=0).tolist(),
        "quality": [mean_ci95(out["quality"][:, t]) for t in range(s.rounds + 1)],
        "exact_successive": [mean_ci95(out["exact_successive"][:, t]) for t in range(s.rounds)],
    }
    per_iteration = [bool(v["mean"] > 0.5) for v in successive]
    result["claim"] = {
        "definition": f"means over seeds: W(pi_t+1, pi_t) > 0.5 at every iteration; W(pi_T, offline DPO) >= {CLAIM_FINAL}",
        "each_iteration_beats_the_last": per_iteration,
        "final_beats_offline": bool(result["final_vs_offline"]["mean"] >= CLAIM_FINAL),
    }
    result["claim"]["holds"] = all(per_iteration) and result["claim"]["final_beats_offline"]
    result |= {"experiment": NAME, "seeds": s.seeds, "wall_seconds": time.perf_counter() - start}
    for t in range(s.rounds):
        print(f"  iteration {t + 1}: W(pi_t, pi_t-1) {successive[t]['mean']:.3f} (exact soft policy iteration "
              f"{result['exact_successive'][t]['mean']:.3f}), W(pi_t, pi_0) "
              f"{result['against_initial'][t]['mean']:.3f}, style mass {np.round(result['style_mass'][t + 1], 3).tolist()}")
    print(f"  W(pi_T, offline DPO) {result['final_vs_offline']['mean']:.3f} (CI {result['final_vs_offline']['ci95_low']:.3f}.."
          f"{result['final_vs_offline']['ci95_high']:.3f}); W(offline DPO, pi_0) {result['offline_vs_initial']['mean']:.3f}")
    write_json(os.path.join(run_dir, "result.json"), result)
    plot(s, result, os.path.join(run_dir, "win_rates.png"))
    print(f"claim: {({k: v for k, v in result['claim'].items() if k != 'definition'})}. {result['wall_seconds']:.0f} s")
    return result
