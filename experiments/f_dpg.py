"""f-DPG (Go et al., ICML 2023): one target, four f-divergences, exact divergences and trade-offs
(papers/preference-lm.md §14).

    python -m experiments f-dpg            # 5 seeds, two targets (about a minute on one CPU core)
    python -m experiments f-dpg --quick    # tiny budget (seconds), for the smoke test

Claim (the paper's, at toy scale): no divergence is best at everything; Jensen-Shannon gets closer to the
target than forward KL (DPG) in forward KL itself, and the divergences trade alignment for diversity in the
order reverse KL (most aligned, least diverse), JS, forward KL (least aligned, most diverse).

Setup:

* Space: every sequence of 4 tokens over a vocabulary of 8 (4096 sequences, ``envs.text.SequenceSpace``),
  after a one-token prompt. The policy is a 2-layer d=32 Llama-style LM; its random initialisation, one per
  seed, is ``pi_ref``.
* Target: the RLHF-style ``p(x) ∝ pi_ref(x) exp(r(x) / beta)``, with ``r`` a random-MLP gold reward
  standardised over the space, at ``beta`` = 0.25 and 0.1 (the second more peaked). Reverse-KL f-DPG on it
  is RL with a KL penalty (the paper's correspondence).
* f-DPG (``rljax.lm.f_dpg``): forward KL, reverse KL, JS and TV pseudo-rewards; 64 samples per update,
  Adam(W) 1e-3, ``num_updates`` updates, the official code's running-mean ``Z`` and moving-average baseline.
* Metrics, exact over the 4096 sequences every ``eval_every`` updates: KL(p || pi) (forward), KL(pi || p)
  (reverse), JS, the expected reward ``E_pi[r]`` (alignment) and the entropy ``H(pi)`` (diversity).

The claim's definition, fixed before the first full run (``result["claim"]["definition"]``), on the final
values averaged over seeds, at every beta: JS-DPG's KL(p || pi) < forward-KL-DPG's; and E_pi[r] ranks reverse
KL > JS > forward KL while H(pi) ranks forward KL > JS > reverse KL. TV is reported without a claim.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs.text import exact_entropy, exact_expectation, exact_kl
from experiments.common import add_settings_arguments, positive_floats, require_multiple, settings_from_flags
from experiments.sequence_space import SpaceSettings, start_run, standardised_mlp_reward
from rljax.core.logging import write_json
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95
from rljax.lm import f_dpg
from rljax.losses import kl_control

NAME = "f-dpg"
DESCRIPTION = "f-DPG with forward KL, reverse KL, JS and TV on an enumerable target: exact divergences, reward, entropy"
DIVERGENCES = ("forward_kl", "reverse_kl", "js", "tv")
METRICS = ("forward_kl", "reverse_kl", "js", "reward", "entropy")


@dataclasses.dataclass(frozen=True)
class Settings(SpaceSettings):
    betas: tuple = (0.25, 0.1)
    batch_size: int = 64
    num_updates: int = 200
    learning_rate: float = 1e-3
    eval_every: int = 20
    seeds: int = 5


QUICK = dict(vocab_size=4, length=3, hidden_size=16, num_layers=1, num_heads=2, num_updates=4, eval_every=2, seeds=2,
             betas=(0.25,))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set num_updates=400 --set 'betas=(0.05,)'")


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = settings_from_flags(args, Settings(), QUICK)
    require_multiple(s, "num_updates", "eval_every")
    return dataclasses.replace(s, betas=positive_floats(s, "betas"))


def exact_metrics(logq, logp, reward):
    """The policy's exact divergences to the target, expected reward and entropy (log-probs [S])."""
    log_m = jnp.logaddexp(logq, logp) - jnp.log(2.0)
    return {"forward_kl": exact_kl(logp, logq), "reverse_kl": exact_kl(logq, logp),
            "js": 0.5 * exact_kl(logq, log_m) + 0.5 * exact_kl(logp, log_m),
            "reward": exact_expectation(logq, reward), "entropy": exact_entropy(logq)}


def summarize(curves: dict, targets: dict) -> dict:
    results = {}
    for beta, arms in curves.items():
        results[beta] = {
            "target": {k: mean_ci95(v) for k, v in targets[beta].items()},
            "arms": {div: {"mean_curve": {m: c[m].mean(axis=0).tolist() for m in METRICS},
                           "final": {m: mean_ci95(c[m][:, -1]) for m in METRICS}} for div, c in arms.items()},
        }
    final = lambda beta, div, m: results[beta]["arms"][div]["final"][m]["mean"]  # noqa: E731
    per_beta = {}
    for beta in curves:
        per_beta[beta] = {
            "js_below_forward_kl": bool(final(beta, "js", "forward_kl") < final(beta, "forward_kl", "forward_kl")),
            "reward_order": bool(final(beta, "reverse_kl", "reward") > final(beta, "js", "reward")
                                 > final(beta, "forward_kl", "reward")),
            "entropy_order": bool(final(beta, "forward_kl", "entropy") > final(beta, "js", "entropy")
                                  > final(beta, "reverse_kl", "entropy")),
        }
    claim = {
        "definition": (
            "on the final values averaged over seeds, at every beta: KL(p || pi) of JS-DPG < that of forward-KL-DPG; "
            "E_pi[r]: reverse KL > JS > forward KL; H(pi): forward KL > JS > reverse KL"),
        "per_beta": per_beta,
        "holds": all(all(v.values()) for v in per_beta.values()),
    }
    return {"betas": results, "claim": claim}


def plot(s: Settings, result: dict, path: str) -> None:
    betas = list(result["betas"])
    panels = ("forward_kl", "reward", "entropy")
    fig, axes = plt.subplots(len(betas), len(panels), figsize=(13, 3.4 * len(betas)), squeeze=False)
    steps = np.arange(s.num_updates // s.eval_every + 1) * s.eval_every * s.batch_size
    for row, beta in zip(axes, betas):
        r = result["betas"][beta]
        for ax, metric in zip(row, panels):
            for div, arm in r["arms"].items():
                ax.plot(steps, arm["mean_curve"][metric], label=div)
            if metric != "forward_kl":
                ax.axhline(r["target"][metric]["mean"], color="gray", linestyle=":", linewidth=1, label="target")
            ax.set_yscale("log" if metric == "forward_kl" else "linear")
            ax.set_title(f"beta = {beta}: " + {"forward_kl": "KL(p || pi)", "reward": "E_pi[r] (alignment)",
                                               "entropy": "H(pi) (diversity)"}[metric], fontsize=9)
            ax.set_xlabel("samples")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"f-DPG on {s.vocab_size}^{s.length} sequences: mean over {s.seeds} seeds", fontsize=10)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    s = settings_from_args(args)
    start = time.perf_counter()
    run_dir, exact = start_run(args, NAME, s)
    space, model, logp_of = exact.space, exact.model, exact.logp
    reward_of, reward = standardised_mlp_reward(args.seed, space)
    init_key, train_key = jax.random.split(jax.random.PRNGKey(args.seed))
    refs = exact.random_policies(init_key, s.seeds)
    train_keys = jax.random.split(train_key, s.seeds)
    print(f"f-DPG: {space.size} sequences, {s.seeds} seeds, betas {s.betas} -> {run_dir}")

    curves, targets = {}, {}
    for beta in s.betas:
        key_beta = str(beta)

        def target_logp(ref, beta=beta):
            return kl_control.posterior_logp(logp_of(ref), reward, beta)

        targets[key_beta] = {k: np.asarray(v) for k, v in jax.jit(jax.vmap(lambda ref: {
            "reward": exact_expectation(target_logp(ref), reward), "entropy": exact_entropy(target_logp(ref))}))(refs).items()}
        curves[key_beta] = {}
        for divergence in DIVERGENCES:
            config = f_dpg.FDPGConfig(model=model, length=s.length, divergence=divergence, num_updates=s.num_updates,
                                      batch_size=s.batch_size)

            def run(ref, key, config=config, beta=beta, target_logp=target_logp):
                trainer = f_dpg.make_train(config, np.array([0]), lambda c: reward_of(c) / beta, init_params=ref)
                evaluate = lambda params: exact_metrics(logp_of(params), target_logp(ref), reward)  # noqa: E731

                def chunk(state, _):
                    state, _ = trainer.run_updates(state, s.eval_every)
                    return state, evaluate(state.params)

                state = trainer.init(key, f_dpg.FDPGHParams(learning_rate=s.learning_rate))
                _, curve = jax.lax.scan(chunk, state, None, length=s.num_updates // s.eval_every)
                first = evaluate(ref)
                return {k: jnp.concatenate([first[k][None], v]) for k, v in curve.items()}

            t0 = time.perf_counter()
            out = {k: np.asarray(v) for k, v in jax.jit(jax.vmap(run))(refs, train_keys).items()}
            curves[key_beta][divergence] = out
            print(f"  beta {beta} {divergence:10s} final: " + ", ".join(f"{m} {out[m][:, -1].mean():.3f}" for m in METRICS)
                  + f"; {time.perf_counter() - t0:.0f} s")
        print(f"  beta {beta} target: E_p[r] {targets[key_beta]['reward'].mean():.3f}, "
              f"H(p) {targets[key_beta]['entropy'].mean():.3f}")

    result = summarize(curves, targets)
    result |= {"experiment": NAME, "seeds": s.seeds, "wall_seconds": time.perf_counter() - start}
    write_json(os.path.join(run_dir, "result.json"), result)
    plot(s, result, os.path.join(run_dir, "curves.png"))
    print(f"claim per beta: {result['claim']['per_beta']}. Claim holds: {result['claim']['holds']}. "
          f"{result['wall_seconds']:.0f} s")
    return result
