"""The Alignment Ceiling's objective-mismatch diagnostics (Lambert & Calandra, 2023; papers/preference-lm.md §16),
logged on the reward-ensembles harness: exact best-of-n against learned reward models.

    python -m experiments alignment-ceiling            # 5 worlds x 5 reward models (about a minute on one core)
    python -m experiments alignment-ceiling --quick    # tiny budget (seconds), for the smoke test

The paper is a position paper: reward-model training (preference accuracy), optimisation against the proxy
reward and evaluation are assumed to move together, and they do not. Its diagnostics, operationalised by the
digest, are logged here for each reward model used alone as best-of-n's proxy, for ``n = 1 .. 2^max_log2_n``:

1. proxy and gold reward of the selected response against ``KL(best-of-n || base)``, and where gold peaks (the knee);
2. the rank correlation between proxy and gold along the optimisation, before and after the knee;
3. the reward model's pairwise accuracy against the gold reward on pairs drawn *on-policy* (from best-of-n*)
   against held-out pairs drawn from the base policy;
4. inter-model disagreement (the members' standard deviation) on the selected responses against base samples.
   (Length and refusal probes do not apply: every response has the same length.)

Everything is exact sums over the 4096 responses (``experiments.reward_ensembles``: worlds, gold rewards,
noisy pairs and reward-model training are that experiment's). The default world uses less data trained longer
(1,000 pairs, 8 epochs), the setting whose diagnostic run there overoptimised; the reward-ensembles default
(4,000 pairs, 2 epochs) is ``--set world.num_pairs=4000 --set world.num_epochs=2``.

The claim's definition, fixed before the first full run (``result["claims"]``), over every (world, member):

* ``gold_peaks_while_proxy_rises``: every proxy curve is non-decreasing in n (best-of-n guarantees it: a check),
  and gold's drop from its peak over n <= n* to n* is above 0 with a 95% interval above 0;
* ``correlation_flips_after_knee``: over the members with at least 3 values of n on each side of their knee, the
  mean Spearman correlation of proxy and gold is above 0 before the knee and below 0 after it;
* ``on_policy_accuracy_drops``: held-out accuracy minus on-policy accuracy (at n*) is >= ``accuracy_drop``
  (0.10) on average.

Writes config.json, result.json, diagnostics.png and world<i>/ (the reward models' training).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from envs.text.enumerable import SequenceSpace, best_of_n_logp, exact_expectation, exact_kl, random_product_distribution
from experiments import reward_ensembles as re_exp
from experiments.common import add_settings_arguments, settings_from_flags, setup_run, write_result, write_settings_config
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95

NAME = "alignment-ceiling"
DESCRIPTION = "Alignment Ceiling diagnostics: proxy vs gold, on-policy vs held-out RM accuracy, under exact best-of-n"


@dataclasses.dataclass(frozen=True)
class Settings:
    world: re_exp.Settings = re_exp.Settings(num_pairs=1000, num_epochs=8)
    accuracy_drop: float = 0.10


QUICK = {"world": re_exp.Settings(**re_exp.QUICK)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set world.worlds=3 --set accuracy_drop=0.05")


@jax.jit
def pairwise_accuracy(logp, proxy, gold):
    """``P(sign(r(x) - r(y)) = sign(g(x) - g(y)) | g(x) != g(y))`` for ``x, y`` i.i.d. from ``exp(logp)``."""
    p = jnp.exp(logp)
    weight = p[:, None] * p[None, :]
    gold_diff = gold[:, None] - gold[None, :]
    agree = (proxy[:, None] - proxy[None, :]) * gold_diff > 0
    return (weight * agree).sum() / (weight * (gold_diff != 0)).sum()


def member_diagnostics(base_logp, proxy, gold, ns):
    """One reward model as best-of-n's proxy: ``(best-of-n log-probs [N, S], proxy [N], gold [N], KL [N])``."""
    logps = jax.vmap(lambda n: best_of_n_logp(base_logp, proxy, n))(ns)
    expect = jax.vmap(exact_expectation, in_axes=(0, None))
    return logps, expect(logps, proxy), expect(logps, gold), jax.vmap(exact_kl, in_axes=(0, None))(logps, base_logp)


def spearman_around_knee(proxy, gold) -> tuple[float, float]:
    """Spearman(proxy, gold) over n up to gold's peak and from it on; ``nan`` where a side has under 3 points."""
    knee = int(np.argmax(gold))
    before = spearmanr(proxy[: knee + 1], gold[: knee + 1])[0] if knee >= 2 else np.nan
    after = spearmanr(proxy[knee:], gold[knee:])[0] if len(gold) - knee >= 3 else np.nan
    return float(before), float(after)


def main(args) -> dict:
    s = settings_from_flags(args, Settings(), QUICK)
    w = s.world
    if not 1 <= w.claim_n <= 2**w.max_log2_n or w.members < 2:
        raise SystemExit(f"--set world.claim_n / world.members: expected 1..{2 ** w.max_log2_n} and >= 2, got "
                         f"{w.claim_n} and {w.members}")
    run_dir = setup_run(args, NAME)
    write_settings_config(run_dir, args, NAME, s, model=re_exp.reward_model_config(w))
    start = time.time()
    space = SequenceSpace(w.vocab_size, w.length)
    base_key, world_key, train_key = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    base_probs = random_product_distribution(base_key, w.vocab_size, w.length, w.base_logit_std)
    base_logp = jnp.asarray(np.log(base_probs), jnp.float32)
    ns = 2 ** np.arange(w.max_log2_n + 1)
    at = int(np.searchsorted(ns, w.claim_n))
    train_world = re_exp.make_world_trainer(w, space, base_probs, world_key, train_key, run_dir, args,
                                            {"experiment": NAME, "seed": args.seed})
    diagnose = jax.jit(jax.vmap(member_diagnostics, in_axes=(None, 0, None, None)))
    proxy_curves, gold_curves, kl_curves = (np.zeros((w.worlds, w.members, len(ns))) for _ in range(3))
    accuracy = {"held_out": np.zeros((w.worlds, w.members)), "on_policy": np.zeros((w.worlds, w.members))}
    disagreement = {"base": np.zeros(w.worlds), "selected": np.zeros(w.worlds)}
    for world in range(w.worlds):
        gold, _, member_rewards, _ = train_world(world)
        gold = jnp.asarray(gold)
        logps, proxy_c, gold_c, kl_c = diagnose(base_logp, member_rewards, gold, ns)
        proxy_curves[world], gold_curves[world], kl_curves[world] = np.asarray(proxy_c), np.asarray(gold_c), np.asarray(kl_c)
        for k in range(w.members):
            accuracy["held_out"][world, k] = float(pairwise_accuracy(base_logp, member_rewards[k], gold))
            accuracy["on_policy"][world, k] = float(pairwise_accuracy(logps[k, at], member_rewards[k], gold))
        # Disagreement between members: on base samples, and on what best-of-n* under their mean selects.
        spread = member_rewards.std(0)
        mean_logp = best_of_n_logp(base_logp, member_rewards.mean(0), int(ns[at]))
        disagreement["base"][world] = float(exact_expectation(base_logp, spread))
        disagreement["selected"][world] = float(exact_expectation(mean_logp, spread))
        print(f"  world {world}: gold at n = 1 / peak / n*: {gold_curves[world][:, 0].mean():+.3f} / "
              f"{gold_curves[world][:, : at + 1].max(1).mean():+.3f} / {gold_curves[world][:, at].mean():+.3f}; "
              f"accuracy held-out {accuracy['held_out'][world].mean():.3f}, on-policy {accuracy['on_policy'][world].mean():.3f}",
              flush=True)

    drop = gold_curves[:, :, : at + 1].max(-1) - gold_curves[:, :, at]
    monotone = bool((np.diff(proxy_curves, axis=-1) >= -1e-4).all())
    correlations = np.asarray([spearman_around_knee(p, g) for p, g in zip(proxy_curves.reshape(-1, len(ns)),
                                                                          gold_curves.reshape(-1, len(ns)))])
    both = ~np.isnan(correlations).any(1)
    gap = accuracy["held_out"] - accuracy["on_policy"]
    claims = {
        "gold_peaks_while_proxy_rises": {"holds": bool(monotone and mean_ci95(drop.ravel())["ci95_low"] > 0),
                                         "proxy_non_decreasing": monotone, "gold_drop": mean_ci95(drop.ravel())},
        "correlation_flips_after_knee": {
            "holds": bool(both.any() and correlations[both, 0].mean() > 0 and correlations[both, 1].mean() < 0),
            "members_with_both_sides": int(both.sum()), "of": int(len(both)),
            "before": float(correlations[both, 0].mean()) if both.any() else None,
            "after": float(correlations[both, 1].mean()) if both.any() else None},
        "on_policy_accuracy_drops": {"holds": bool(gap.mean() >= s.accuracy_drop), "gap": mean_ci95(gap.ravel())},
    }
    result = {
        "ns": ns.tolist(), "claim_n": w.claim_n,
        "mean_curves": {"proxy": proxy_curves.mean((0, 1)).tolist(), "gold": gold_curves.mean((0, 1)).tolist(),
                        "kl": kl_curves.mean((0, 1)).tolist()},
        "knee_n_per_member": ns[gold_curves.argmax(-1)].tolist(),
        "spearman_before_after_knee_per_member": correlations.tolist(),
        "accuracy": {name: mean_ci95(a.ravel()) for name, a in accuracy.items()},
        "disagreement": {name: mean_ci95(d) for name, d in disagreement.items()},
        "claims": claims, "seconds": time.time() - start,
    }
    plot(run_dir, ns, at, proxy_curves, gold_curves, kl_curves, accuracy)
    write_result(run_dir, result)
    return result


def plot(run_dir, ns, at, proxy_curves, gold_curves, kl_curves, accuracy) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    kl = kl_curves.mean((0, 1))
    axes[0].plot(kl, proxy_curves.mean((0, 1)), "o-", label="proxy (the reward model optimised)")
    axes[0].plot(kl, gold_curves.mean((0, 1)), "o-", label="gold")
    axes[0].axvline(kl[at], color="gray", ls=":", label=f"n* = {ns[at]}")
    axes[0].set(xlabel="KL(best-of-n || base), nats", ylabel="expected reward of the selected response",
                title="proxy vs gold under best-of-n (mean over worlds and members)")
    axes[0].legend(fontsize=8)
    axes[1].boxplot([accuracy["held_out"].ravel(), accuracy["on_policy"].ravel()])
    axes[1].set_xticks([1, 2], ["held-out (base pairs)", f"on-policy (best-of-{ns[at]} pairs)"])
    axes[1].set(ylabel="reward-model accuracy against gold", title="the distribution-shift gap")
    save_figure(fig, os.path.join(run_dir, "diagnostics.png"))
