"""Unlearning from logit difference, ULD (Ji et al., NeurIPS 2024), against GA+GD and NPO+GD (papers/preference-lm.md §1).

    python -m experiments unlearning-uld            # 3 seeds (a few minutes on one CPU core)
    python -m experiments unlearning-uld --quick    # tiny budget (seconds), for the smoke test

Claim (the paper's, at toy scale): ULD forgets the forget set while keeping the model's knowledge of
everything else, where gradient-ascent unlearning with a retain loss (GA+GD) damages it.

Setup:

* Facts: ``make_fact_corpus`` with every fact in one direction, "name -> 4-token description", written with
  3 paraphrase templates; a 4-layer d=128 Llama-style target is trained on all of them (SFT, from scratch,
  one vmapped run per seed) until it recalls them.
* Splits (fixed per corpus): the forget set is 10% of the facts; the retain *training* set is 10% of the
  others (the unlearning methods see only these); the remaining facts are **untouched** (never seen during
  unlearning: the measure of what unlearning damages).
* ULD: the assistant is the target's first 2 layers and its head (``lora.first_layers``) plus LoRA (rank
  16, alpha 32, on every projection; only the adapters train). Its loss is the official code's reversed
  objective ``NLL(forget) + 5 * KL(U || p_assistant)`` on retain data (the uniform term over every position,
  as ``UniformLossFunc``; without the official data augmentation, paraphrased forget data and perturbed
  retain answers, which this corpus does not have). At inference ``l_target - 0.8 * l_assistant``, the assistant's logits zeroed where
  the target's log-prob is below the relative-top threshold (1e-2) (``unlearning.uld_logits``).
* Baselines on the full target: GA+GD ``-NLL(forget) + NLL(retain)``; NPO+GD ``NPO(forget; beta 0.1) +
  NLL(retain)`` (token-mean NLLs, as Hugging Face's loss). Every method: Adam, the same learning rate and
  the same full-batch steps.
* Exact match (EM): the completion's argmax at every position given the gold prefix is the gold token
  (equal to greedy decoding; ``completion_exact_match``), on the training templates, evaluated every
  ``eval_every`` steps.

The claim's definition, fixed before the first full run (``result["claim"]["definition"]``): a method
*forgets* at its first evaluation with forget-set EM <= ``forget_em_max`` (0.1), averaged over seeds; at that
evaluation (comparable forget quality, as the paper compares), ULD's untouched EM is >= 0.98 x the target's,
and GA+GD's is <= the target's minus 0.10 (or GA+GD never forgets). NPO+GD is reported without a claim.
The wall-clock time per unlearning step of each method is reported as measured.

Outputs: ``config.json``, ``result.json``, ``curves.png`` (forget and untouched EM against steps).

Measured (experiments/RESULTS.md, "Unlearning from logit difference"): the claim fails. ULD never forgets
(forget EM 1.000 throughout): the target's logit margins on the forget answers (median 10.7) exceed 0.8 times
the assistant's (7.6 after training, its cross-entropy saturated), so the difference keeps the answers on
top. GA+GD forgets at step 10 keeping 0.108 of the untouched facts. With weight 2.0 instead of 0.8
(``--set uld_alpha=2.0``) ULD forgets and recovers the untouched facts to 0.849 by step 200.
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

from envs.text import facts as facts_lib
from experiments.common import add_settings_arguments, require_multiple, settings_from_flags, setup_run
from rljax.core.config import to_dict
from rljax.core.logging import write_json
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95
from rljax.lm import lora
from rljax.lm.data import tokenize_sft
from rljax.lm.model import LanguageModel, LMConfig
from rljax.lm.train import LMHParams, LMTrainConfig, completion_exact_match, make_train
from rljax.losses import preference
from rljax.losses import unlearning

NAME = "unlearning-uld"
DESCRIPTION = "ULD (unlearning from logit difference) vs GA+GD and NPO+GD on fictitious facts: forget vs untouched recall"
METHODS = ("uld", "ga_gd", "npo_gd")


@dataclasses.dataclass(frozen=True)
class Settings:
    # corpus
    num_facts: int = 100
    templates: int = 3
    forget_fraction: float = 0.1
    retain_fraction: float = 0.1  # of the facts outside the forget set
    # target model and its training
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    target_epochs: int = 150
    target_batch_size: int = 32
    target_learning_rate: float = 1e-3
    # unlearning
    assistant_layers: int = 2
    lora_rank: int = 16
    lora_alpha: float = 32.0
    uniform_weight: float = 5.0
    uld_alpha: float = 0.8
    relative_top: float = 1e-2
    npo_beta: float = 0.1
    learning_rate: float = 1e-3
    steps: int = 200
    eval_every: int = 10
    seeds: int = 3
    # claim
    forget_em_max: float = 0.1
    uld_keep_min: float = 0.98  # x the target's untouched EM
    ga_drop_min: float = 0.10  # absolute EM points


QUICK = dict(num_facts=20, hidden_size=32, num_layers=2, num_heads=2, target_epochs=3, assistant_layers=1,
             lora_rank=4, steps=4, eval_every=2, seeds=2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set learning_rate=1e-4 --set steps=400")


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = settings_from_flags(args, Settings(), QUICK)
    require_multiple(s, "steps", "eval_every")
    if not 0 < s.assistant_layers <= s.num_layers:
        raise SystemExit(f"--set assistant_layers: expected 1..num_layers = {s.num_layers}, got {s.assistant_layers}")
    return s


def split_facts(num_facts: int, s: Settings, seed: int) -> dict[str, np.ndarray]:
    """Fact indices of the forget, retain-training and untouched sets (disjoint, covering every fact)."""
    order = np.random.default_rng(seed).permutation(num_facts)
    n_forget = max(1, round(s.forget_fraction * num_facts))
    n_retain = max(1, round(s.retain_fraction * (num_facts - n_forget)))
    return {"forget": order[:n_forget], "retain": order[n_forget:n_forget + n_retain],
            "untouched": order[n_forget + n_retain:]}


def token_nll(logits, batch):
    """Mean NLL over the completion tokens of the batch (Hugging Face's causal-LM loss)."""
    logps = preference.token_logps(logits, batch["input_ids"])
    mask = batch["completion_mask"][:, 1:].astype(jnp.float32)
    return -(logps * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def sequence_nll(logits, batch):
    """[B] summed NLL of each completion (NPO's per-example loss)."""
    logps = preference.token_logps(logits, batch["input_ids"])
    return -preference.sequence_logps(logps, batch["completion_mask"])


def make_methods(s: Settings, model: LMConfig, data: dict):
    """Per method: ``init(target_params, key) -> trainable``, ``loss(trainable, target_params) -> scalar`` and
    ``logits(trainable, target_params, batch) -> [B, T, V]`` (what the unlearned system predicts)."""
    lm = LanguageModel(model)
    forward = lambda params, batch: lm.apply({"params": params}, batch["input_ids"], batch["attention_mask"]).logits  # noqa: E731
    forget, retain = data["forget"], data["retain"]

    def assistant(adapters, target):
        """The assistant's ``batch -> logits``: the adapters merged into the target's first layers once."""
        small, small_model = lora.first_layers(target, model, s.assistant_layers)
        merged = lora.merge(small, adapters, s.lora_alpha)
        return lambda batch: LanguageModel(small_model).apply({"params": merged}, batch["input_ids"],
                                                              batch["attention_mask"]).logits

    def uld_loss(adapters, target):
        # reversed objectives: remember the forget set, push the retain set towards uniform
        logits_of = assistant(adapters, target)
        remember = token_nll(logits_of(forget), forget)
        return remember + s.uniform_weight * unlearning.uniform_kl(logits_of(retain))

    def uld_predict(adapters, target, batch):
        return unlearning.uld_logits(forward(target, batch), assistant(adapters, target)(batch), s.uld_alpha,
                                     s.relative_top)

    def ga_gd_loss(params, target):
        return -token_nll(forward(params, forget), forget) + token_nll(forward(params, retain), retain)

    def npo_gd_loss(params, target):
        ref = jax.lax.stop_gradient(sequence_nll(forward(target, forget), forget))
        npo = unlearning.npo_loss(sequence_nll(forward(params, forget), forget), ref, s.npo_beta)
        return npo + token_nll(forward(params, retain), retain)

    def init_adapters(target, key):
        small, _ = lora.first_layers(target, model, s.assistant_layers)
        return lora.init(small, s.lora_rank, key)

    own = lambda params, target, batch: forward(params, batch)  # noqa: E731
    return {
        "uld": (init_adapters, uld_loss, uld_predict),
        "ga_gd": (lambda target, key: target, ga_gd_loss, own),
        "npo_gd": (lambda target, key: target, npo_gd_loss, own),
    }


def unlearn(s: Settings, method, target, key, eval_sets: dict):
    """One seed: ``steps`` Adam steps of ``method`` from ``target``; EM of every set before and every
    ``eval_every`` steps: ``{set: [steps // eval_every + 1]}``."""
    init, loss_fn, predict = method
    trainable = init(target, key)
    tx = optax.adam(s.learning_rate)
    opt_state = tx.init(trainable)

    def evaluate(trainable):
        return {name: completion_exact_match(predict(trainable, target, b), b["input_ids"], b["completion_mask"]).mean()
                for name, b in eval_sets.items()}

    def step(carry, _):
        trainable, opt_state = carry
        grads = jax.grad(loss_fn)(trainable, target)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return (optax.apply_updates(trainable, updates), opt_state), None

    def chunk(carry, _):
        carry, _ = jax.lax.scan(step, carry, None, length=s.eval_every)
        return carry, evaluate(carry[0])

    _, curves = jax.lax.scan(chunk, (trainable, opt_state), None, length=s.steps // s.eval_every)
    first = evaluate(trainable)
    return {k: jnp.concatenate([first[k][None], curves[k]]) for k in first}


def summarize(s: Settings, curves: dict, target_em: dict, seconds_per_step: dict) -> dict:
    """Per method: mean curves, the first evaluation that forgets, the untouched EM there; and the claim."""
    target_untouched = float(np.mean(target_em["untouched"]))
    methods = {}
    for name, c in curves.items():
        forget_mean = c["forget"].mean(axis=0)  # [evals]
        hits = np.flatnonzero(forget_mean <= s.forget_em_max)
        at = int(hits[0]) if hits.size else None
        methods[name] = {
            "mean_curve": {k: v.mean(axis=0).tolist() for k, v in c.items()},
            "forgets_at_step": None if at is None else at * s.eval_every,
            "at_forgetting": None if at is None else {k: mean_ci95(v[:, at]) for k, v in c.items()},
            "final": {k: mean_ci95(v[:, -1]) for k, v in c.items()},
            "seconds_per_step": seconds_per_step[name],
        }
    uld, ga = methods["uld"], methods["ga_gd"]
    uld_keeps = uld["at_forgetting"] is not None and (
        uld["at_forgetting"]["untouched"]["mean"] >= s.uld_keep_min * target_untouched)
    ga_damages = ga["at_forgetting"] is None or (
        ga["at_forgetting"]["untouched"]["mean"] <= target_untouched - s.ga_drop_min)
    claim = {
        "definition": (
            f"a method forgets at its first evaluation with mean forget-set EM <= {s.forget_em_max}; there ULD's "
            f"untouched EM >= {s.uld_keep_min} x the target's, and GA+GD's <= the target's - {s.ga_drop_min} "
            "(or GA+GD never forgets)"),
        "target_untouched_em": target_untouched,
        "uld_forgets": uld["at_forgetting"] is not None,
        "uld_keeps_untouched": bool(uld_keeps),
        "ga_gd_damages_untouched": bool(ga_damages),
    }
    claim["holds"] = claim["uld_forgets"] and claim["uld_keeps_untouched"] and claim["ga_gd_damages_untouched"]
    return {"methods": methods, "target_em": {k: mean_ci95(v) for k, v in target_em.items()}, "claim": claim}


def plot(s: Settings, result: dict, path: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    steps = np.arange(s.steps // s.eval_every + 1) * s.eval_every
    labels = {"uld": "ULD", "ga_gd": "GA+GD", "npo_gd": "NPO+GD"}
    for ax, split in zip(axes, ("forget", "untouched")):
        for name, m in result["methods"].items():
            ax.plot(steps, m["mean_curve"][split], marker="o", markersize=3, label=labels[name])
        ax.axhline(result["target_em"][split]["mean"], color="gray", linestyle=":", linewidth=1)
        ax.set_xlabel("unlearning step")
        ax.set_ylabel(f"{split} facts: exact match")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].axhline(s.forget_em_max, color="red", linestyle="--", linewidth=0.8)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Unlearning {round(s.forget_fraction * 100)}% of {s.num_facts} facts: mean over {s.seeds} seeds",
                 fontsize=10)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    s = settings_from_args(args)
    run_dir = setup_run(args, NAME)
    start = time.perf_counter()
    corpus = facts_lib.make_fact_corpus(args.seed, s.num_facts, (3, 4), 4, num_train_templates=s.templates,
                                        num_test_templates=1, group_sizes=(s.num_facts, 0, 0))
    model = LMConfig(corpus.vocab_size, s.hidden_size, s.num_layers, s.num_heads,
                     max_position_embeddings=corpus.max_length, style="llama")
    examples = corpus.train_p2d
    splits = split_facts(s.num_facts, s, args.seed)

    def batch_of(facts_in):
        ex = examples.where(np.isin(examples.fact, facts_in))
        data = tokenize_sft(ex.prompts, ex.completions, None, corpus.max_length, pad_id=corpus.pad_id,
                            bos_id=corpus.bos_id, eos_id=corpus.eos_id)
        return {k: jnp.asarray(v) for k, v in data.arrays().items()}

    data = {name: batch_of(facts) for name, facts in splits.items()}
    run_config = {"experiment": NAME, "settings": to_dict(s), "seed": args.seed, "model": to_dict(model),
                  "splits": {k: v.tolist() for k, v in splits.items()}, "quick": bool(args.quick)}
    if not args.resume:
        write_json(os.path.join(run_dir, "config.json"), run_config)
    print(f"ULD: {s.num_facts} facts x {s.templates} templates; forget {len(splits['forget'])}, retain "
          f"{len(splits['retain'])}, untouched {len(splits['untouched'])} facts; {s.seeds} seeds -> {run_dir}")

    # 1. The target: every fact, SFT from scratch, seeds vmapped.
    train_data = tokenize_sft(examples.prompts, examples.completions, None, corpus.max_length, pad_id=corpus.pad_id,
                              bos_id=corpus.bos_id, eos_id=corpus.eos_id)
    sft = make_train(LMTrainConfig(model, objective="sft", batch_size=s.target_batch_size, num_epochs=s.target_epochs),
                     train_data.arrays())
    key = jax.random.PRNGKey(args.seed)
    target_key, unlearn_key = jax.random.split(key)
    seed_keys = jnp.stack([jax.random.fold_in(target_key, i) for i in range(s.seeds)])
    t0 = time.perf_counter()
    targets = jax.jit(jax.vmap(sft, in_axes=(0, None)))(seed_keys, LMHParams(learning_rate=s.target_learning_rate))[0].params
    em_fn = jax.jit(jax.vmap(lambda p: {
        name: completion_exact_match(LanguageModel(model).apply({"params": p}, b["input_ids"], b["attention_mask"]).logits,
                                     b["input_ids"], b["completion_mask"]).mean() for name, b in data.items()}))
    target_em = {k: np.asarray(v) for k, v in em_fn(targets).items()}
    print(f"  target: {sft.num_updates} SFT updates in {time.perf_counter() - t0:.0f} s; EM " +
          ", ".join(f"{k} {v.mean():.3f}" for k, v in target_em.items()))

    # 2. Unlearning: each method from each seed's target, seeds vmapped.
    methods = make_methods(s, model, data)
    curves, seconds_per_step = {}, {}
    for name in METHODS:
        run = jax.jit(jax.vmap(lambda t, k: unlearn(s, methods[name], t, k, data)))
        keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(unlearn_key, METHODS.index(name)), i) for i in range(s.seeds)])
        compiled = run.lower(targets, keys).compile()
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(targets, keys))
        seconds_per_step[name] = (time.perf_counter() - t0) / s.steps
        curves[name] = {k: np.asarray(v) for k, v in out.items()}
        print(f"  {name}: final EM " + ", ".join(f"{k} {v[:, -1].mean():.3f}" for k, v in curves[name].items())
              + f"; {1e3 * seconds_per_step[name]:.1f} ms per step ({s.seeds} seeds, evaluations included)")

    result = summarize(s, curves, target_em, seconds_per_step)
    result |= {"experiment": NAME, "seeds": s.seeds, "wall_seconds": time.perf_counter() - start}
    write_json(os.path.join(run_dir, "result.json"), result)
    plot(s, result, os.path.join(run_dir, "curves.png"))
    c = result["claim"]
    at = {n: m["forgets_at_step"] for n, m in result["methods"].items()}
    print(f"forgets at step {at}; untouched EM there: " + ", ".join(
        f"{n} {m['at_forgetting']['untouched']['mean']:.3f}" for n, m in result["methods"].items() if m["at_forgetting"])
        + f" (target {c['target_untouched_em']:.3f}). Claim holds: {c['holds']}. {result['wall_seconds']:.0f} s")
    return result
