"""Transforming and combining rewards (Wang et al., ICML 2024): the LSC-summed utility against the raw sum of
two conflicting rewards, at matched KL, exactly and by training (papers/preference-lm.md §8).

    python -m experiments lsc-rewards            # 5 seeds (a few minutes on one CPU core)
    python -m experiments lsc-rewards --quick    # tiny budget (seconds), for the smoke test

Claim (the paper's, at toy scale): aligning to the sum of log-sigmoid-centred rewards,
``u = sum_k log sigma(r_k - r_ref,k)`` (``log P(good in every property)``), gives more outputs that are good
in *both* properties than aligning to the raw sum ``r_1 + r_2``, at the same KL from the base policy.

Setup:

* Space: every sequence of 4 tokens over a vocabulary of 8 (4096 sequences) after a one-token prompt. The
  base policy ``pi_0`` is a 2-layer d=32 Llama-style LM at its random initialisation, one per seed.
* Two rewards per seed, standardised over the space (Bradley-Terry rewards have an arbitrary shift and
  scale): ``help`` a random-MLP reward, and ``harmless = -conflict * help + sqrt(1 - conflict^2) * other``
  (``other`` an independent random-MLP reward, re-standardised), so that the two conflict (correlation
  ``-conflict``).
* ``r_ref,k``: the ``reference_quantile`` (0.85, the paper's choice) of ``r_k`` over
  ``reference_samples`` sequences sampled from ``pi_0``. "Good in both" means ``r_k > r_ref,k`` for both.
* Exact: the KL-regularised optimum ``pi* ∝ pi_0 exp(u / beta)`` (``rljax.losses.kl_control``) of each
  utility over a grid of betas, and at each KL target the beta whose optimum has exactly that
  KL(pi* || pi_0) (bisection in log beta).
* Trained: at that beta, RL with the KL penalty in the reward (the GRPO trainer as REINFORCE,
  ``kl_penalty="reward"``, as in ``kl-posterior``): 64 samples per update, ``num_updates`` updates, Adam
  ``learning_rate``.
* Metrics, exact over the space: P(good in both), P(good in each), KL(pi || pi_0).

The claim's definition, fixed before the first full run (``result["claim"]["definition"]``), means over
seeds at every KL target: (exact) P(both good) of the LSC optimum > that of the raw-sum optimum; (trained)
P(both good) of the LSC-trained policy > that of the raw-sum-trained one, with the LSC-trained policy's
KL(pi || pi_0) at most 1.1 x the raw-sum-trained one's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs.text import exact_expectation, exact_kl, random_mlp_reward
from experiments.common import add_settings_arguments, positive_floats, require_multiple, settings_from_flags
from experiments.sequence_space import SpaceSettings, start_run
from rljax.core.logging import write_json
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95
from rljax.lm import grpo
from rljax.losses import kl_control
from rljax.losses import reward_transforms as RT

NAME = "lsc-rewards"
DESCRIPTION = "LSC-summed vs raw-summed conflicting rewards at matched KL: P(good in both), exact and trained"
METRICS = ("both_good", "help_good", "harmless_good", "kl")
KL_SLACK = 1.1


@dataclasses.dataclass(frozen=True)
class Settings(SpaceSettings):
    conflict: float = 0.5
    reference_quantile: float = 0.85
    reference_samples: int = 256
    kl_targets: tuple = (1.0, 2.0)
    num_betas: int = 48  # the exact curves' grid, log-spaced over [0.01, 100]
    batch_size: int = 64
    num_updates: int = 400
    learning_rate: float = 1e-3
    eval_every: int = 40
    seeds: int = 5


QUICK = dict(vocab_size=4, length=3, hidden_size=16, num_layers=1, num_heads=2, num_updates=4, eval_every=2, seeds=2,
             batch_size=8, reference_samples=32, kl_targets=(0.5,), num_betas=8)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set conflict=0.8 --set 'kl_targets=(0.5, 3.0)'")


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = settings_from_flags(args, Settings(), QUICK)
    require_multiple(s, "num_updates", "eval_every")
    targets = positive_floats(s, "kl_targets")
    if not 0.0 <= s.conflict < 1.0:
        raise SystemExit(f"--set conflict: expected a number in [0, 1), got {s.conflict}")
    if not 0.0 < s.reference_quantile < 1.0:
        raise SystemExit(f"--set reference_quantile: expected a number in (0, 1), got {s.reference_quantile}")
    return dataclasses.replace(s, kl_targets=targets)


def make_rewards(seed: int, vocab_size: int, sequences, conflict: float) -> np.ndarray:
    """``[S, 2]``: help and harmlessness, each standardised over the space, correlated ``-conflict``."""
    standardise = lambda v: (v - v.mean()) / v.std()  # noqa: E731
    help_ = standardise(np.asarray(random_mlp_reward(2 * seed, vocab_size)(sequences), np.float64))
    other = standardise(np.asarray(random_mlp_reward(2 * seed + 1, vocab_size)(sequences), np.float64))
    other = standardise(other - (other @ help_) / (help_ @ help_) * help_)  # exactly uncorrelated with help
    return np.stack([help_, standardise(-conflict * help_ + np.sqrt(1 - conflict**2) * other)], axis=-1).astype(np.float32)


def policy_metrics(logp, prior_logp, good):
    """Exact P(good in both), P(good) per property and KL(pi || pi_0) of a policy (log-probs [S]; good [S, 2])."""
    return {"both_good": exact_expectation(logp, good.all(axis=-1).astype(jnp.float32)),
            "help_good": exact_expectation(logp, good[:, 0].astype(jnp.float32)),
            "harmless_good": exact_expectation(logp, good[:, 1].astype(jnp.float32)),
            "kl": exact_kl(logp, prior_logp)}


def beta_for_kl(prior_logp, utility, kl_target, iterations: int = 50):
    """The beta whose optimum ``pi_0 exp(u / beta)`` has KL(pi* || pi_0) = ``kl_target`` (KL falls with beta;
    bisection in log beta over [1e-3, 1e3]; at the lower end when the target exceeds the largest KL)."""
    kl_at = lambda log_beta: exact_kl(kl_control.posterior_logp(prior_logp, utility, jnp.exp(log_beta)), prior_logp)  # noqa: E731

    def step(bounds, _):
        low, high = bounds
        mid = 0.5 * (low + high)
        too_far = kl_at(mid) > kl_target  # beta too small
        return (jnp.where(too_far, mid, low), jnp.where(too_far, high, mid)), None

    (low, high), _ = jax.lax.scan(step, (jnp.log(1e-3), jnp.log(1e3)), None, length=iterations)
    return jnp.exp(0.5 * (low + high))


def summarize(s: Settings, exact: dict, trained: dict, curves: dict) -> dict:
    per_target, results = {}, {"exact": {}, "trained": {}, "curves": curves}
    for target in exact:
        results["exact"][target] = {agg: {m: mean_ci95(v) for m, v in arms.items()} for agg, arms in exact[target].items()}
        results["trained"][target] = {agg: {"final": {m: mean_ci95(v[:, -1]) for m, v in arms.items()},
                                            "mean_curve": {m: v.mean(axis=0).tolist() for m, v in arms.items()}}
                                      for agg, arms in trained[target].items()}
        ex = lambda agg, m: results["exact"][target][agg][m]["mean"]  # noqa: E731
        tr = lambda agg, m: results["trained"][target][agg]["final"][m]["mean"]  # noqa: E731
        per_target[target] = {
            "exact_lsc_more_both_good": bool(ex("lsc_sum", "both_good") > ex("raw_sum", "both_good")),
            "trained_lsc_more_both_good": bool(tr("lsc_sum", "both_good") > tr("raw_sum", "both_good")),
            "trained_kl_matched": bool(tr("lsc_sum", "kl") <= KL_SLACK * tr("raw_sum", "kl")),
        }
        exact_gap = exact[target]["lsc_sum"]["both_good"] - exact[target]["raw_sum"]["both_good"]
        trained_gap = trained[target]["lsc_sum"]["both_good"][:, -1] - trained[target]["raw_sum"]["both_good"][:, -1]
        results["exact"][target]["lsc_minus_raw"] = mean_ci95(exact_gap) | {"seeds_ahead": int(np.sum(exact_gap > 0))}
        results["trained"][target]["lsc_minus_raw"] = mean_ci95(trained_gap) | {"seeds_ahead": int(np.sum(trained_gap > 0))}
    claim = {
        "definition": (
            "means over seeds at every KL target: P(both good) of the LSC optimum > that of the raw-sum optimum "
            "(exact); P(both good) of the LSC-trained policy > that of the raw-sum-trained one, with the "
            f"LSC-trained KL(pi || pi_0) <= {KL_SLACK} x the raw-sum-trained one's"),
        "per_kl_target": per_target,
        "holds": all(v["exact_lsc_more_both_good"] and v["trained_lsc_more_both_good"] and v["trained_kl_matched"]
                     for v in per_target.values()),
    }
    return results | {"claim": claim}


def plot(s: Settings, result: dict, path: str) -> None:
    fig, (ax_curve, ax_parts) = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = {"raw_sum": "tab:blue", "lsc_sum": "tab:orange"}
    for agg, c in result["curves"].items():
        ax_curve.plot(c["kl"], c["both_good"], color=colors[agg], label=f"{agg} optimum (exact)")
        for target, arms in result["trained"].items():
            final = arms[agg]["final"]
            ax_curve.errorbar(final["kl"]["mean"], final["both_good"]["mean"],
                              yerr=[[final["both_good"]["mean"] - final["both_good"]["ci95_low"]],
                                    [final["both_good"]["ci95_high"] - final["both_good"]["mean"]]],
                              color=colors[agg], marker="o", linestyle="none")
        ax_parts.plot(c["kl"], c["help_good"], color=colors[agg], linestyle="--", label=f"{agg}: P(help good)")
        ax_parts.plot(c["kl"], c["harmless_good"], color=colors[agg], linestyle=":", label=f"{agg}: P(harmless good)")
    for target in result["exact"]:
        ax_curve.axvline(float(target), color="gray", linewidth=0.8, linestyle=":")
    ax_curve.set_xlabel("KL(pi || pi_0) (nats)")
    ax_curve.set_ylabel("P(good in both)")
    ax_curve.set_title("lines: exact optima; dots: trained (mean, 95% CI)", fontsize=9)
    ax_parts.set_xlabel("KL(pi || pi_0) (nats)")
    ax_parts.set_ylabel("P(good)")
    for ax in (ax_curve, ax_parts):
        ax.set_xlim(0, max(4.0, 2 * max(float(t) for t in result["exact"])))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"LSC-summed vs raw-summed rewards (conflict {s.conflict}): mean over {s.seeds} seeds", fontsize=10)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    s = settings_from_args(args)
    start = time.perf_counter()
    run_dir, exact = start_run(args, NAME, s)
    space, model, logp_of = exact.space, exact.model, exact.logp
    rewards = jnp.asarray(np.stack([make_rewards(args.seed * 1000 + i, s.vocab_size, space.sequences, s.conflict)
                                    for i in range(s.seeds)]))  # [seeds, S, 2]
    init_key, ref_key, train_key = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    priors = exact.random_policies(init_key, s.seeds)
    ref_keys, train_keys = jax.random.split(ref_key, s.seeds), jax.random.split(train_key, s.seeds)
    betas = jnp.logspace(-2, 2, s.num_betas)
    print(f"lsc-rewards: {space.size} sequences, {s.seeds} seeds, KL targets {s.kl_targets} -> {run_dir}")

    def world(prior, reward, key):
        """The base policy's log-probs, the references, the good sets and each aggregation's utility."""
        prior_logp = logp_of(prior)
        samples = jax.random.categorical(key, prior_logp, shape=(s.reference_samples,))
        reference = RT.reference_reward(reward[samples], s.reference_quantile)  # [2]
        good = reward > reference
        utilities = {agg: RT.combine_rewards(reward, reference, agg) for agg in RT.AGGREGATIONS}
        return prior_logp, good, utilities

    def exact_world(prior, reward, key):
        prior_logp, good, utilities = world(prior, reward, key)
        optimum = lambda u, beta: policy_metrics(kl_control.posterior_logp(prior_logp, u, beta), prior_logp, good)  # noqa: E731
        curves = {agg: jax.vmap(lambda b, u=u: optimum(u, b))(betas) for agg, u in utilities.items()}

        def at_kl(u, target):
            beta = beta_for_kl(prior_logp, u, target)
            return optimum(u, beta) | {"beta": beta}

        matched = {str(t): {agg: at_kl(u, t) for agg, u in utilities.items()} for t in s.kl_targets}
        return curves, matched, policy_metrics(prior_logp, prior_logp, good)

    curves, matched, base = jax.jit(jax.vmap(exact_world))(priors, rewards, ref_keys)
    exact = jax.tree.map(np.asarray, matched)
    # the exact curves, averaged over seeds at each beta (KL and P(good) both move with beta)
    curve_means = {agg: {m: np.asarray(v).mean(axis=0).tolist() for m, v in c.items()} for agg, c in curves.items()}
    print(f"  base policy: P(both good) {float(base['both_good'].mean()):.3f}, P(help good) "
          f"{float(base['help_good'].mean()):.3f}, P(harmless good) {float(base['harmless_good'].mean()):.3f}")
    for target, arms in exact.items():
        print(f"  exact at KL {target}: " + "; ".join(
            f"{agg} P(both) {a['both_good'].mean():.3f} (beta {a['beta'].mean():.3f})" for agg, a in arms.items()))

    trained = {}
    for target in s.kl_targets:
        trained[str(target)] = {}
        for agg in RT.AGGREGATIONS:
            config = grpo.GRPOConfig(model=model, max_completion_length=s.length, num_updates=s.num_updates,
                                     num_generations=s.batch_size, prompts_per_update=1, scale_rewards="none",
                                     loss_type="dr_grpo", max_grad_norm=0.0, kl_reference=True, kl_penalty="reward")

            def run(prior, reward, ref_key, key, beta, agg=agg, config=config):
                prior_logp, good, utilities = world(prior, reward, ref_key)
                utility = utilities[agg]
                trainer = grpo.make_train(config, np.zeros((1, 1), np.int32), np.ones((1, 1), np.int32),
                                          lambda prompt, completion, mask: utility[space.index(completion)],
                                          init_params=prior)

                def chunk(state, _):
                    state, _ = trainer.run_updates(state, s.eval_every)
                    return state, policy_metrics(logp_of(state.params), prior_logp, good)

                state = trainer.init(key, grpo.GRPOHParams(learning_rate=s.learning_rate, beta=beta))
                _, curve = jax.lax.scan(chunk, state, None, length=s.num_updates // s.eval_every)
                first = policy_metrics(prior_logp, prior_logp, good)
                return {k: jnp.concatenate([first[k][None], v]) for k, v in curve.items()}

            t0 = time.perf_counter()
            beta = jnp.asarray(exact[str(target)][agg]["beta"])
            out = {k: np.asarray(v) for k, v in jax.jit(jax.vmap(run))(priors, rewards, ref_keys, train_keys, beta).items()}
            trained[str(target)][agg] = out
            print(f"  trained at KL {target} {agg:8s}: " + ", ".join(f"{m} {out[m][:, -1].mean():.3f}" for m in METRICS)
                  + f"; {time.perf_counter() - t0:.0f} s")

    result = summarize(s, {t: {agg: {m: a[m] for m in METRICS + ("beta",)} for agg, a in arms.items()}
                           for t, arms in exact.items()}, trained, curve_means)
    result |= {"experiment": NAME, "seeds": s.seeds, "wall_seconds": time.perf_counter() - start,
               "base_policy": {m: mean_ci95(np.asarray(v)) for m, v in base.items()}}
    for target in result["exact"]:
        gaps = {kind: result[kind][target]["lsc_minus_raw"] for kind in ("exact", "trained")}
        print(f"  KL {target}: P(both) LSC - raw " + "; ".join(
            f"{kind} {g['mean']:+.4f} (CI {g['ci95_low']:+.4f}..{g['ci95_high']:+.4f}; LSC ahead on {g['seeds_ahead']} of "
            f"{s.seeds} seeds)" for kind, g in gaps.items()))
    write_json(os.path.join(run_dir, "result.json"), result)
    plot(s, result, os.path.join(run_dir, "curves.png"))
    print(f"claim per KL target: {result['claim']['per_kl_target']}. Claim holds: {result['claim']['holds']}. "
          f"{result['wall_seconds']:.0f} s")
    return result
