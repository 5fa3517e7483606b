"""RL with a KL penalty is Bayesian inference (Korbak, Perez & Buckley, EMNLP Findings 2022): exact
posteriors, collapse without the penalty (papers/preference-lm.md §11).

    python -m experiments kl-posterior            # 5 seeds, two betas (a few minutes on one CPU core)
    python -m experiments kl-posterior --quick    # tiny budget (seconds), for the smoke test

Claim (the paper's argument, at toy scale): a policy gradient on ``E_pi[r] - beta KL(pi || pi_0)`` converges
to the Bayesian posterior ``pi* ∝ pi_0 exp(r / beta)``, while the same policy gradient on ``r`` alone
collapses the distribution onto a few sequences.

Setup:

* Space: every sequence of 4 tokens over a vocabulary of 8 (4096 sequences, ``envs.text.SequenceSpace``),
  after a one-token prompt. The policy is a 2-layer d=32 Llama-style LM; its random initialisation, one per
  seed, is ``pi_0``. ``r`` is a random-MLP reward standardised over the space.
* Arms, all the GRPO trainer (``rljax.lm.grpo``) as REINFORCE: one prompt, 64 samples per update, the
  group mean as baseline, unscaled advantages (``scale_rewards="none"``), one step per batch (so no
  clipping), Adam(W) ``learning_rate``:
  - ``rl``: reward ``r`` (no KL term);
  - ``kl_rl``: reward ``r - beta (log pi - log pi_0)`` (``kl_penalty="reward"``): RL with a KL penalty;
  - ``k3_loss``: reward ``r`` and GRPO's ``beta`` times the per-token k3 KL in the loss
    (``kl_penalty="loss"``), reported without a claim: it is another regulariser, whose fixed point the
    paper's argument does not cover.
* Metrics, exact over the 4096 sequences every ``eval_every`` updates: KL(pi || pi*), the objective
  ``J = E_pi[r] - beta KL(pi || pi_0)`` (its gap to ``beta log Z`` is ``beta KL(pi || pi*)``), E_pi[r], the
  entropy H(pi) and the mass on the reward's maximisers. The reward depends on the bag of tokens, so its
  maximisers are the orderings of the best multiset (up to 4! = 24 sequences): RL without the penalty
  converges to that set, on which any distribution is optimal, so its entropy need not reach 0.

The claim's definition, fixed before the first full run (``result["claim"]["definition"]``), on the final
values averaged over seeds, at every beta: ``kl_rl``'s KL(pi || pi*) < 0.05 nats; ``rl``'s entropy < 5% of
H(pi_0), and ``rl``'s KL(pi || pi*) > 10 x ``kl_rl``'s.
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
from rljax.lm import grpo
from rljax.lm.model import LMConfig
from rljax.losses import kl_control

NAME = "kl-posterior"
DESCRIPTION = "RL with a KL penalty converges to the posterior pi_0 exp(r / beta); RL without it collapses (exact, 4096 sequences)"
ARMS = ("rl", "kl_rl", "k3_loss")
METRICS = ("kl_to_posterior", "objective", "reward", "entropy", "argmax_mass")
CLAIM_KL = 0.05  # nats
CLAIM_COLLAPSE = 0.05  # fraction of H(pi_0)


@dataclasses.dataclass(frozen=True)
class Settings(SpaceSettings):
    betas: tuple = (0.5, 0.25)
    batch_size: int = 64
    num_updates: int = 400
    learning_rate: float = 1e-3
    eval_every: int = 20
    seeds: int = 5


QUICK = dict(vocab_size=4, length=3, hidden_size=16, num_layers=1, num_heads=2, num_updates=4, eval_every=2, seeds=2,
             betas=(0.5,), batch_size=8)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set num_updates=800 --set 'betas=(0.1,)'")


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = settings_from_flags(args, Settings(), QUICK)
    require_multiple(s, "num_updates", "eval_every")
    if s.batch_size < 2:
        raise SystemExit(f"--set batch_size: expected >= 2 (the group-mean baseline), got {s.batch_size}")
    return dataclasses.replace(s, betas=positive_floats(s, "betas"))


def arm_config(s: Settings, model: LMConfig, arm: str) -> grpo.GRPOConfig:
    return grpo.GRPOConfig(model=model, max_completion_length=s.length, num_updates=s.num_updates,
                           num_generations=s.batch_size, prompts_per_update=1, scale_rewards="none",
                           loss_type="dr_grpo", max_grad_norm=0.0, kl_reference=arm != "rl",
                           kl_penalty="reward" if arm == "kl_rl" else "loss")


def exact_metrics(logq, prior_logp, reward, beta):
    """Exact divergence to the posterior, objective, expected reward, entropy and mass on the reward's maximisers
    of the policy (log-probs [S])."""
    maximisers = (reward >= reward.max() - 1e-5).astype(jnp.float32)
    return {"kl_to_posterior": exact_kl(logq, kl_control.posterior_logp(prior_logp, reward, beta)),
            "objective": kl_control.kl_regularised_objective(logq, prior_logp, reward, beta),
            "reward": exact_expectation(logq, reward), "entropy": exact_entropy(logq),
            "argmax_mass": exact_expectation(logq, maximisers)}


def summarize(curves: dict, references: dict) -> dict:
    results = {}
    for beta, arms in curves.items():
        results[beta] = {
            "posterior": {k: mean_ci95(v) for k, v in references[beta].items()},
            "arms": {arm: {"mean_curve": {m: c[m].mean(axis=0).tolist() for m in METRICS},
                           "final": {m: mean_ci95(c[m][:, -1]) for m in METRICS}} for arm, c in arms.items()},
        }
    final = lambda beta, arm, m: results[beta]["arms"][arm]["final"][m]["mean"]  # noqa: E731
    per_beta = {}
    for beta in curves:
        prior_entropy = results[beta]["posterior"]["prior_entropy"]["mean"]
        per_beta[beta] = {
            "kl_rl_reaches_posterior": bool(final(beta, "kl_rl", "kl_to_posterior") < CLAIM_KL),
            "rl_collapses": bool(final(beta, "rl", "entropy") < CLAIM_COLLAPSE * prior_entropy),
            "rl_misses_posterior": bool(final(beta, "rl", "kl_to_posterior") > 10 * final(beta, "kl_rl", "kl_to_posterior")),
        }
    claim = {
        "definition": (
            f"on the final values averaged over seeds, at every beta: KL(pi || pi*) of kl_rl < {CLAIM_KL} nats; "
            f"H(pi) of rl < {CLAIM_COLLAPSE} x H(pi_0); KL(pi || pi*) of rl > 10 x that of kl_rl"),
        "per_beta": per_beta,
        "holds": all(all(v.values()) for v in per_beta.values()),
    }
    return {"betas": results, "claim": claim}


def plot(s: Settings, result: dict, path: str) -> None:
    betas = list(result["betas"])
    panels = ("kl_to_posterior", "reward", "entropy")
    titles = {"kl_to_posterior": "KL(pi || pi*)", "reward": "E_pi[r]", "entropy": "H(pi)"}
    fig, axes = plt.subplots(len(betas), len(panels), figsize=(13, 3.4 * len(betas)), squeeze=False)
    steps = np.arange(s.num_updates // s.eval_every + 1) * s.eval_every * s.batch_size
    for row, beta in zip(axes, betas):
        r = result["betas"][beta]
        for ax, metric in zip(row, panels):
            for arm, curves in r["arms"].items():
                ax.plot(steps, curves["mean_curve"][metric], label=arm)
            if metric != "kl_to_posterior":
                ax.axhline(r["posterior"][metric]["mean"], color="gray", linestyle=":", linewidth=1, label="pi*")
            else:
                ax.axhline(CLAIM_KL, color="gray", linestyle=":", linewidth=1, label=f"{CLAIM_KL} nats")
                ax.set_yscale("log")
            ax.set_title(f"beta = {beta}: {titles[metric]}", fontsize=9)
            ax.set_xlabel("samples")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"REINFORCE with and without a KL penalty on {s.vocab_size}^{s.length} sequences: mean over "
                 f"{s.seeds} seeds", fontsize=10)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    s = settings_from_args(args)
    start = time.perf_counter()
    run_dir, exact = start_run(args, NAME, s)
    space, model, logp_of = exact.space, exact.model, exact.logp
    reward_of, reward = standardised_mlp_reward(args.seed, space)
    init_key, train_key = jax.random.split(jax.random.PRNGKey(args.seed))
    priors = exact.random_policies(init_key, s.seeds)
    train_keys = jax.random.split(train_key, s.seeds)
    print(f"kl-posterior: {space.size} sequences, {s.seeds} seeds, betas {s.betas} -> {run_dir}")

    references = {}
    for beta in s.betas:
        def reference(prior, beta=beta):
            prior_logp = logp_of(prior)
            posterior = kl_control.posterior_logp(prior_logp, reward, beta)
            return {"reward": exact_expectation(posterior, reward), "entropy": exact_entropy(posterior),
                    "prior_entropy": exact_entropy(prior_logp), "beta_log_z": beta * kl_control.log_partition(prior_logp, reward, beta)}

        ref = references[str(beta)] = {k: np.asarray(v) for k, v in jax.jit(jax.vmap(reference))(priors).items()}
        print(f"  beta {beta} posterior: E[r] {ref['reward'].mean():.3f}, H {ref['entropy'].mean():.3f}, "
              f"beta log Z {ref['beta_log_z'].mean():.3f}; H(pi_0) {ref['prior_entropy'].mean():.3f}")

    curves = {str(beta): {} for beta in s.betas}
    for arm in ARMS:
        # rl's training does not depend on beta: one run, evaluated against every beta's posterior
        for train_beta in (0.0,) if arm == "rl" else s.betas:
            eval_betas = s.betas if arm == "rl" else (train_beta,)

            def run(prior, key, arm=arm, train_beta=train_beta, eval_betas=eval_betas):
                trainer = grpo.make_train(
                    arm_config(s, model, arm), np.zeros((1, 1), np.int32), np.ones((1, 1), np.int32),
                    lambda prompt, completion, mask: reward_of(completion), init_params=prior)
                evaluate = lambda params: {str(b): exact_metrics(logp_of(params), logp_of(prior), reward, b)  # noqa: E731
                                           for b in eval_betas}

                def chunk(state, _):
                    state, _ = trainer.run_updates(state, s.eval_every)
                    return state, evaluate(state.params)

                state = trainer.init(key, grpo.GRPOHParams(learning_rate=s.learning_rate, beta=train_beta))
                _, curve = jax.lax.scan(chunk, state, None, length=s.num_updates // s.eval_every)
                return jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), evaluate(prior), curve)

            t0 = time.perf_counter()
            out = jax.tree.map(np.asarray, jax.jit(jax.vmap(run))(priors, train_keys))
            for key_beta, metrics in out.items():
                curves[key_beta][arm] = metrics
                print(f"  beta {key_beta} {arm:8s} final: " + ", ".join(f"{m} {metrics[m][:, -1].mean():.3f}" for m in METRICS)
                      + f"; {time.perf_counter() - t0:.0f} s")

    result = summarize(curves, references)
    result |= {"experiment": NAME, "seeds": s.seeds, "wall_seconds": time.perf_counter() - start}
    write_json(os.path.join(run_dir, "result.json"), result)
    plot(s, result, os.path.join(run_dir, "curves.png"))
    print(f"claim per beta: {result['claim']['per_beta']}. Claim holds: {result['claim']['holds']}. "
          f"{result['wall_seconds']:.0f} s")
    return result
