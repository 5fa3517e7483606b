"""Preference fine-tuning should use on-policy data and negative gradients (Tajwar et al., ICML 2024): the
didactic token bandit, offline vs on-policy x maximum likelihood vs contrastive (papers/preference-lm.md §3).

    python -m experiments on-policy-preference            # 5 seeds, two reward peaks (minutes on one CPU core)
    python -m experiments on-policy-preference --quick    # tiny budget (seconds), for the smoke test

Claim (the paper's, on its bandit): on-policy sampling and negative gradients each help, and together most,
when the reward peaks where the reference policy puts little mass; when the peak sits where the reference
already is, the methods differ little.

Setup (the official code's bandit, Asap7772/understanding-rlhf, ``bandit_experiment/``, where not said):

* Responses are ``length`` tokens over a vocabulary of 100 after a 2-token prompt (``num_prompts`` random
  prompts; the reward ignores the prompt). The policy is a 3-layer d=48 Llama-style LM.
* pi_ref: the LM trained to emit, at every position, the official code's reference histogram: a Cauchy
  (location -0.7, scale 0.4) squashed by tanh onto [-1, 1] and cut into 100 bins, computed here exactly from
  the Cauchy CDF (the code bins 10,000 samples). Its interior mode is token 16, tokens 60-80 hold 4.6% of
  its mass, and the tails pile up in the end bins (token 0: 7.8%, token 99: 4.2%).
* Reward: the mean over the response's tokens of ``exp(-((a - peak) / 10)^2)`` (the code's ``reward_6`` /
  ``reward_7``, which also counts the prompt token), with ``peak`` 70 (*misaligned*: a low-likelihood
  region of pi_ref) or 20 (*aligned*).
* Methods: ``rljax.lm.ranked_samples``, with the same samples and optimiser steps for every arm:
  - ``offline_*``: one round of ``num_updates x prompts_per_update x samples_per_prompt`` samples from
    pi_ref (``num_prompts`` prompts), then ``num_updates x inner_steps`` full-batch steps on it;
  - ``online_*``: ``num_updates`` rounds of ``prompts_per_update x samples_per_prompt`` fresh samples from
    the current policy, ``inner_steps`` steps on each;
  - ``*_bon``: best-of-N SFT (maximum likelihood); ``*_dpo``: DPO over every ranked pair of a prompt's
    samples against pi_ref (a negative gradient). Adam ``learning_rate``, DPO ``beta``.
* Metric: the expected reward of each final policy, estimated from ``eval_samples`` samples.

The claim's definition, fixed before the first full run (``result["claim"]["definition"]``), on the final
expected rewards averaged over seeds: at peak 70, online_dpo is the highest of the four arms, online beats
offline with each loss and DPO beats best-of-N in each regime; the spread (highest minus lowest arm) at
peak 20 is smaller than at peak 70.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

from envs.text import gaussian_peak_reward
from experiments.common import add_settings_arguments, positive_floats, settings_from_flags, setup_run, write_settings_config
from rljax.core.logging import write_json
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95
from rljax.lm import ranked_samples
from rljax.lm.model import LanguageModel, LMConfig, init_params
from rljax.lm.sampling import SamplingConfig, generate

NAME = "on-policy-preference"
DESCRIPTION = "Tajwar et al.'s token bandit: offline vs on-policy, best-of-N SFT vs DPO, reward peak in or out of pi_ref's mass"
ARMS = ("offline_bon", "offline_dpo", "online_bon", "online_dpo")
VOCAB = 100
REWARD_WIDTH = 10.0


@dataclasses.dataclass(frozen=True)
class Settings:
    length: int = 6
    hidden_size: int = 48
    num_layers: int = 3
    num_heads: int = 3
    peaks: tuple = (70.0, 20.0)
    num_prompts: int = 480
    num_updates: int = 60
    prompts_per_update: int = 8
    samples_per_prompt: int = 8
    inner_steps: int = 2
    learning_rate: float = 1e-3
    beta: float = 0.1
    pretrain_steps: int = 300
    pretrain_learning_rate: float = 3e-3
    eval_samples: int = 1024
    seeds: int = 5


QUICK = dict(length=3, hidden_size=16, num_layers=1, num_heads=2, peaks=(70.0,), num_prompts=8, num_updates=2,
             prompts_per_update=4, samples_per_prompt=4, inner_steps=1, pretrain_steps=5, eval_samples=32, seeds=2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set num_updates=120 --set 'peaks=(70.0,)'")


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = settings_from_flags(args, Settings(), QUICK)
    if s.num_updates * s.prompts_per_update != s.num_prompts:
        raise SystemExit(f"--set num_prompts: the offline round uses every prompt once, so num_prompts must equal "
                         f"num_updates x prompts_per_update = {s.num_updates * s.prompts_per_update}, got {s.num_prompts}")
    return dataclasses.replace(s, peaks=positive_floats(s, "peaks"))


def reference_histogram(vocab: int = VOCAB, loc: float = -0.7, scale: float = 0.4) -> np.ndarray:
    """The official bandit's pi_data: P(tanh(X) in bin v), X ~ Cauchy(loc, scale), 100 equal bins on [-1, 1]."""
    edges = np.concatenate([[-np.inf], np.arctanh(np.linspace(-1.0, 1.0, vocab + 1)[1:-1]), [np.inf]])
    cdf = 0.5 + np.arctan((edges - loc) / scale) / np.pi
    return np.diff(cdf)


def pretrain_reference(s: Settings, model: LMConfig, target, key):
    """pi_ref: from a random init, minimise sum_t CE(pi_data, pi(. | prefix)) on sequences drawn from pi_data
    (every position i.i.d.), so each next-token distribution is pi_data."""
    init_key, key = jax.random.split(key)
    params = init_params(model, init_key)
    tx = optax.adam(s.pretrain_learning_rate)
    log_target = jnp.log(target)

    def loss_fn(params, ids):
        logits = LanguageModel(model).apply({"params": params}, ids, jnp.ones_like(ids)).logits[:, 1:-1]
        return -(target * jax.nn.log_softmax(logits)).sum(-1).mean()  # positions that predict response tokens

    def step(carry, key):
        params, opt_state = carry
        prompt_key, token_key = jax.random.split(key)
        ids = jnp.concatenate([jax.random.randint(prompt_key, (64, 2), 0, VOCAB),
                               jax.random.categorical(token_key, log_target, shape=(64, s.length))], axis=1)
        loss, grads = jax.value_and_grad(loss_fn)(params, ids)
        updates, opt_state = tx.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, s.pretrain_steps))
    entropy = -(target * log_target).sum()
    return params, losses[-1] - entropy  # the final cross-entropy minus H(pi_data): the mean KL per position


def expected_reward(s: Settings, model: LMConfig, params, prompts, peak, key):
    """Monte Carlo E_pi[reward] over ``eval_samples`` samples (prompts cycled)."""
    rows = jnp.resize(prompts, (s.eval_samples, prompts.shape[1]))
    tokens = generate(params, model, rows, jnp.ones_like(rows), key, SamplingConfig(max_new_tokens=s.length)).tokens
    return gaussian_peak_reward(tokens, peak, REWARD_WIDTH).mean()


def arm_config(s: Settings, model: LMConfig, arm: str) -> ranked_samples.RankedSamplesConfig:
    offline = arm.startswith("offline")
    return ranked_samples.RankedSamplesConfig(
        model=model, length=s.length, loss="best_of_n" if arm.endswith("bon") else "dpo",
        num_updates=1 if offline else s.num_updates, samples_per_prompt=s.samples_per_prompt,
        prompts_per_update=s.num_prompts if offline else s.prompts_per_update,
        inner_steps=s.num_updates * s.inner_steps if offline else s.inner_steps)


def summarize(finals: dict, reference: dict) -> dict:
    results = {}
    for peak, arms in finals.items():
        values = {arm: mean_ci95(v) for arm, v in arms.items()}
        means = {arm: v["mean"] for arm, v in values.items()}
        paired = {f"{a}_minus_{b}": mean_ci95(arms[a] - arms[b]) | {"p_value": float(stats.ttest_rel(arms[a], arms[b]).pvalue)}
                  for a, b in (("online_dpo", "offline_dpo"), ("online_bon", "offline_bon"),
                               ("offline_dpo", "offline_bon"), ("online_dpo", "online_bon"))}
        results[peak] = {"arms": values, "reference": mean_ci95(reference[peak]), "paired": paired,
                         "spread": max(means.values()) - min(means.values())}
    misaligned, aligned = "70.0", "20.0"
    claim = {"definition": (
        "on the final expected rewards averaged over seeds: at peak 70, online_dpo is the highest of the four arms, "
        "online beats offline with each loss and DPO beats best-of-N in each regime; the spread (highest minus "
        "lowest arm) at peak 20 is smaller than at peak 70")}
    if misaligned in results:
        m = {arm: v["mean"] for arm, v in results[misaligned]["arms"].items()}
        claim["misaligned"] = {
            "online_dpo_highest": bool(m["online_dpo"] == max(m.values())),
            "on_policy_helps": bool(m["online_dpo"] > m["offline_dpo"] and m["online_bon"] > m["offline_bon"]),
            "negative_gradient_helps": bool(m["offline_dpo"] > m["offline_bon"] and m["online_dpo"] > m["online_bon"]),
        }
    if misaligned in results and aligned in results:
        claim["aligned_spread_smaller"] = bool(results[aligned]["spread"] < results[misaligned]["spread"])
    claim["holds"] = bool(misaligned in results and aligned in results and all(claim["misaligned"].values())
                          and claim["aligned_spread_smaller"])
    return {"peaks": results, "claim": claim}


def plot(s: Settings, result: dict, path: str) -> None:
    peaks = list(result["peaks"])
    fig, axes = plt.subplots(1, len(peaks), figsize=(5.5 * len(peaks), 3.8), squeeze=False)
    for ax, peak in zip(axes[0], peaks):
        r = result["peaks"][peak]
        means = [r["arms"][a]["mean"] for a in ARMS]
        errors = [[m - r["arms"][a]["ci95_low"] for a, m in zip(ARMS, means)],
                  [r["arms"][a]["ci95_high"] - m for a, m in zip(ARMS, means)]]
        ax.bar(range(len(ARMS)), means, yerr=errors, color=["tab:gray", "tab:blue", "tab:olive", "tab:orange"], capsize=4)
        ax.axhline(r["reference"]["mean"], color="black", linestyle=":", linewidth=1, label="pi_ref")
        ax.set_xticks(range(len(ARMS)), ARMS, fontsize=8)
        ax.set_ylabel("expected reward")
        ax.set_title(f"peak {peak} ({'misaligned' if float(peak) > 50 else 'aligned'} with pi_ref)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.suptitle(f"{s.num_updates * s.prompts_per_update * s.samples_per_prompt} samples and "
                 f"{s.num_updates * s.inner_steps} steps per arm; mean and 95% CI over {s.seeds} seeds", fontsize=10)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    s = settings_from_args(args)
    run_dir = setup_run(args, NAME)
    start = time.perf_counter()
    model = LMConfig(VOCAB, s.hidden_size, s.num_layers, s.num_heads, max_position_embeddings=s.length + 2)
    write_settings_config(run_dir, args, NAME, s, model=model)
    target = jnp.asarray(reference_histogram(), jnp.float32)
    prompt_key, ref_key, train_key, eval_key = jax.random.split(jax.random.PRNGKey(args.seed), 4)
    prompts = jax.random.randint(prompt_key, (s.num_prompts, 2), 0, VOCAB)
    t0 = time.perf_counter()
    references, ref_kl = jax.jit(jax.vmap(lambda k: pretrain_reference(s, model, target, k)))(jax.random.split(ref_key, s.seeds))
    print(f"on-policy-preference: pi_ref trained to the reference histogram, mean KL per position "
          f"{float(ref_kl.mean()):.4f} nats ({time.perf_counter() - t0:.0f} s) -> {run_dir}")
    train_keys, eval_keys = jax.random.split(train_key, s.seeds), jax.random.split(eval_key, s.seeds)

    finals, reference_rewards = {}, {}
    for peak in s.peaks:
        key_peak = str(peak)
        reward_fn = lambda prompt_ids, completions, peak=peak: gaussian_peak_reward(completions, peak, REWARD_WIDTH)  # noqa: E731
        evaluate = lambda params, key, peak=peak: expected_reward(s, model, params, prompts, peak, key)  # noqa: E731
        reference_rewards[key_peak] = np.asarray(jax.jit(jax.vmap(evaluate))(references, eval_keys))
        finals[key_peak] = {}
        for arm in ARMS:
            config = arm_config(s, model, arm)

            def run(ref, key, eval_key, config=config):
                trainer = ranked_samples.make_train(config, prompts, reward_fn, init_params=ref)
                state, _ = trainer(key, ranked_samples.RankedSamplesHParams(learning_rate=s.learning_rate, beta=s.beta))
                return evaluate(state.params, eval_key)

            t0 = time.perf_counter()
            finals[key_peak][arm] = np.asarray(jax.jit(jax.vmap(run))(references, train_keys, eval_keys))
            print(f"  peak {peak} {arm:11s}: expected reward {finals[key_peak][arm].mean():.3f} "
                  f"({', '.join(f'{v:.3f}' for v in finals[key_peak][arm])}); {time.perf_counter() - t0:.0f} s")
        print(f"  peak {peak} pi_ref     : expected reward {reference_rewards[key_peak].mean():.3f}")

    result = summarize(finals, reference_rewards)
    result |= {"experiment": NAME, "seeds": s.seeds, "wall_seconds": time.perf_counter() - start,
               "reference_kl_per_position": mean_ci95(np.asarray(ref_kl))}
    write_json(os.path.join(run_dir, "result.json"), result)
    plot(s, result, os.path.join(run_dir, "rewards.png"))
    print(f"claim: {({k: v for k, v in result['claim'].items() if k != 'definition'})}. "
          f"{result['wall_seconds']:.0f} s")
    return result
