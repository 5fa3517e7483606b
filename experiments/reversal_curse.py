"""The Reversal Curse (Berglund et al. 2023; papers/preference-lm.md §4), as a small from-scratch run.

    python -m experiments reversal-curse                 # 3 seeds, about 3-5 min on one CPU core
    python -m experiments reversal-curse --quick         # smoke test (seconds)

A 2-layer, d=128 Llama-style decoder is trained from scratch with SFT (loss on
the completion only) on fictitious facts ``envs.text.facts.make_fact_corpus``:
60 facts whose names and descriptions are 3-4 random tokens, in three groups of
20. ``P2D_ONLY`` facts are written only name -> description, ``D2P_ONLY`` only
description -> name, ``BOTH`` both ways, each with 10 paraphrase templates per
direction; evaluation uses 5 held-out templates per direction never seen in
training. The seeds share one corpus (``--seed``) and differ in the model's
initialisation and the data order; they are trained side by side in one
vmapped program by ``rljax.core.loop.run``.

Exact match: the completion (the entity and its eos) is right when the argmax
at every completion position, given the gold prefix, is the gold token. For a
fixed gold completion this equals greedy decoding (if every argmax is right,
greedy decoding reproduces the gold tokens; if one is wrong, greedy decoding
goes wrong at the first such position). It is computed in the training graph
for the learning curves; at the end it is cross-checked against real greedy
decoding with ``rljax.lm.sampling.generate`` (KV cache), example by example.

Log-prob test (the paper's): for every reverse question of a ``P2D_ONLY`` fact
(description -> name, held-out template) the summed log-prob of the correct
name's tokens versus the mean over the other ``P2D_ONLY`` names (same group, so
every candidate has only ever been an input, never a trained completion; every
name is the correct one once and a random one for the others, so lengths are
balanced). The unit is the fact: each fact's two numbers are averaged over
templates and seeds, and a paired t-test over the 20 facts gives p. The same
test on a trained direction (``D2P_ONLY`` facts asked description -> name) is
the positive control that the test can detect a preference. The reverse of the
``D2P_ONLY`` facts (name -> description, correct vs other descriptions) is
reported as well, but is not a claim.

Claims, fixed before the first full run (means over seeds, held-out templates):

* ``forward``: same-direction exact match >= 0.9 for ``P2D_ONLY`` (asked P2D) and
  for ``D2P_ONLY`` (asked D2P);
* ``reverse``: reverse-direction exact match <= 3 / num_facts (3x the chance of
  naming one of the 60 entities uniformly at random) for both;
* ``both``: the ``BOTH`` group >= 0.9 in each direction;
* ``logprob``: the paired t-test above has p > 0.05 (no detectable preference
  for the correct name). A p > 0.05 is absence of evidence; the mean difference
  with its 95% interval and the positive control are reported next to it.

Writes config.json, metrics.jsonl, result.json, exact_match.png (curves),
final.png (bars) and checkpoints/ to the run directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as scipy_stats

from envs.text import facts as facts_lib
from experiments.common import add_run_arguments, setup_run
from rljax.core import loop as loop_lib
from rljax.core.config import to_dict
from rljax.core.logging import write_json
from rljax.core.stats import mean_ci95
from rljax.lm import sampling as sampling_lib
from rljax.lm.data import tokenize_sft
from rljax.lm.model import LanguageModel, LMConfig
from rljax.lm.train import LMHParams, LMTrainConfig, completion_exact_match, make_train, sequence_logps
from rljax.core.plotting import plt, save_figure

NAME = "reversal-curse"
DESCRIPTION = "Reversal Curse (Berglund et al. 2023): trained on 'A is B', a small LM cannot answer 'B is ?'"

# Criteria, fixed before running (see the module docstring).
FORWARD_MIN = 0.9
BOTH_MIN = 0.9
REVERSE_MAX_CHANCE_MULTIPLE = 3.0  # reverse exact match <= 3 / num_facts
LOGPROB_P_MIN = 0.05


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that defines a run (written to config.json)."""

    num_facts: int = 60
    entity_len: tuple[int, int] = (3, 4)  # names and descriptions
    num_train_templates: int = 10
    num_test_templates: int = 5
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    batch_size: int = 32
    num_epochs: int = 120  # 800 training lines / 32 = 25 steps per epoch: 3000 steps
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    chunk_updates: int = 50  # an exact-match evaluation after every chunk
    eval_every_chunks: int = 1
    checkpoint_every_chunks: int = 20


QUICK = Settings(
    num_facts=12, num_train_templates=4, num_test_templates=2, hidden_size=32, num_layers=1, num_heads=2,
    batch_size=16, num_epochs=5, warmup_steps=5, chunk_updates=4, eval_every_chunks=1,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="model seeds (init and data order), trained side by side")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed and base PRNG seed")
    parser.add_argument("--quick", action="store_true", help="tiny corpus and model, a few steps: a smoke test")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    add_run_arguments(parser, NAME)


# ---------------------------------------------------------------- data


def _sft(examples: facts_lib.FactExamples, corpus: facts_lib.FactCorpus, completions=None, add_eos: bool = True):
    return tokenize_sft(
        examples.prompts, examples.completions if completions is None else completions, None, corpus.max_length,
        add_eos=add_eos, pad_id=corpus.pad_id, bos_id=corpus.bos_id, eos_id=corpus.eos_id,
    )  # fmt: skip


def _eval_sets(corpus: facts_lib.FactCorpus) -> dict[str, facts_lib.FactExamples]:
    """``{"group/direction": held-out test examples}`` for every group and direction, plus the training lines."""
    sets = {}
    for g, group in enumerate(facts_lib.GROUPS):
        for direction, examples in (("p2d", corpus.test_p2d), ("d2p", corpus.test_d2p)):
            sets[f"{group}/{direction}"] = examples.where(corpus.group[examples.fact] == g)
    sets["train/p2d"] = corpus.train_p2d
    sets["train/d2p"] = corpus.train_d2p
    return sets


def trained(group: str, direction: str) -> bool:
    return group == "both" or group == f"{direction}_only"


# ---------------------------------------------------------------- scoring


def completion_correct(params, model: LMConfig, batch) -> jax.Array:
    """[N] bool: the argmax at every completion position (gold prefix) is the gold token (exact match)."""
    logits = LanguageModel(model).apply({"params": params}, batch["input_ids"], batch["attention_mask"]).logits
    return completion_exact_match(logits, batch["input_ids"], batch["completion_mask"])


@functools.partial(jax.jit, static_argnames="model")
def _score(params_per_seed, model: LMConfig, input_ids, attention_mask, completion_mask) -> jax.Array:
    """[seeds, N] summed completion log-probs under each seed's params."""
    return jax.vmap(lambda p: sequence_logps(p, model, input_ids, attention_mask, completion_mask)[0])(params_per_seed)


@functools.partial(jax.jit, static_argnames="model")
def _correct_per_seed(params_per_seed, model: LMConfig, batch) -> jax.Array:
    """[seeds, N] exact match under each seed's params."""
    return jax.vmap(lambda p: completion_correct(p, model, batch))(params_per_seed)


def _candidate_logps(params_per_seed, model: LMConfig, corpus, questions, candidates) -> np.ndarray:
    """[seeds, questions, candidates] summed log-prob of each candidate entity (no eos) after each prompt."""
    Q, C = len(questions), len(candidates)
    prompts = [p for p in questions.prompts for _ in range(C)]
    data = tokenize_sft(
        prompts, list(candidates) * Q, None, corpus.max_length, add_eos=False,
        pad_id=corpus.pad_id, bos_id=corpus.bos_id, eos_id=corpus.eos_id,
    )  # fmt: skip
    logps = _score(params_per_seed, model, data.input_ids, data.attention_mask, data.completion_mask)
    return np.asarray(logps, np.float64).reshape(-1, Q, C)


def logprob_test(params_per_seed, model: LMConfig, corpus, questions, entities: tuple, group: int) -> dict:
    """Correct entity vs the mean of the other entities of ``group``: paired t-test over facts."""
    members = np.flatnonzero(corpus.group == group)
    candidates = [entities[f] for f in members]
    logps = _candidate_logps(params_per_seed, model, corpus, questions, candidates)  # [S, Q, C]
    column = np.searchsorted(members, questions.fact)  # each question's correct candidate
    Q, C = len(questions), len(members)
    correct = logps[:, np.arange(Q), column]  # [S, Q]
    others_mask = np.ones((Q, C), bool)
    others_mask[np.arange(Q), column] = False
    others = (logps * others_mask).sum(axis=2) / (C - 1)  # [S, Q]
    rank = 1 + (logps > correct[..., None]).sum(axis=2)  # [S, Q], 1 = best
    # Unit of analysis: the fact (templates and seeds averaged).
    per_fact_correct = np.array([correct[:, questions.fact == f].mean() for f in members])
    per_fact_others = np.array([others[:, questions.fact == f].mean() for f in members])
    t = scipy_stats.ttest_rel(per_fact_correct, per_fact_others)
    per_seed_p = [
        float(scipy_stats.ttest_rel(
            [correct[s, questions.fact == f].mean() for f in members], [others[s, questions.fact == f].mean() for f in members]
        ).pvalue)
        for s in range(logps.shape[0])
    ]  # fmt: skip
    return {
        "num_facts": int(C), "num_candidates": int(C), "questions_per_seed": int(Q),
        "mean_logp_correct": float(per_fact_correct.mean()), "mean_logp_others": float(per_fact_others.mean()),
        "mean_difference": float((per_fact_correct - per_fact_others).mean()),
        "difference_ci95_over_facts": mean_ci95(per_fact_correct - per_fact_others),
        "difference_per_seed": (correct - others).mean(axis=1).tolist(),
        "t_statistic": float(t.statistic), "p_value": float(t.pvalue), "p_value_per_seed": per_seed_p,
        "mean_rank_of_correct": float(rank.mean()), "chance_mean_rank": (C + 1) / 2,
        "top1_among_candidates": float((rank == 1).mean()), "chance_top1": 1.0 / C,
    }


def greedy_exact_match(params, model: LMConfig, corpus, examples) -> np.ndarray:
    """[N] bool: greedy decoding (KV cache) of ``len(completion) + 1`` tokens gives the completion then eos."""
    heads = [np.concatenate([[corpus.bos_id], p]) for p in examples.prompts]
    P = max(len(h) for h in heads)
    ids = np.full((len(heads), P), corpus.pad_id, np.int32)
    mask = np.zeros((len(heads), P), np.int32)
    for i, h in enumerate(heads):  # left padding
        ids[i, P - len(h):], mask[i, P - len(h):] = h, 1
    width = max(len(c) for c in examples.completions) + 1
    sampling = sampling_lib.SamplingConfig(max_new_tokens=width, greedy=True, eos_id=corpus.eos_id, pad_id=corpus.pad_id)
    out = sampling_lib.generate(params, model, jnp.asarray(ids), jnp.asarray(mask), jax.random.PRNGKey(0), sampling)
    tokens = np.asarray(out.tokens)
    ok = np.zeros(len(heads), bool)
    for i, c in enumerate(examples.completions):
        gold = list(c) + [corpus.eos_id]
        ok[i] = tokens[i, : len(gold)].tolist() == gold
    return ok


# ---------------------------------------------------------------- plots


def _plot_curves(records, keys: list[str], chance: float, path: str, title: str) -> None:
    evals = [r for r in records if f"eval/{keys[0]}/per_seed" in r]
    x = np.array([r["update"] for r in evals])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"p2d_only": "tab:blue", "d2p_only": "tab:orange", "both": "tab:green"}
    for key in keys:
        group, direction = key.split("/")
        y = np.array([r[f"eval/{key}/per_seed"] for r in evals], float)
        style = ("-" if trained(group, direction) else "--") + ("o" if direction == "p2d" else "x")
        label = f"{group} asked {direction.upper()} ({'trained' if trained(group, direction) else 'REVERSE'})"
        axes[0].plot(x, y.mean(axis=1), style, color=colors[group], label=label, linewidth=1.5, markersize=3)
        axes[0].fill_between(x, y.min(axis=1), y.max(axis=1), color=colors[group], alpha=0.12)
    axes[0].axhline(chance, color="k", linewidth=0.8, linestyle=":", label="chance (1/#names)")
    axes[0].set_xlabel("update")
    axes[0].set_ylabel("exact match, held-out templates")
    axes[0].set_ylim(-0.03, 1.03)
    axes[0].legend(fontsize=7, loc="center right")
    axes[0].grid(alpha=0.3)
    steps = np.array([r["update"] for r in records])
    axes[1].semilogy(steps, [r["loss"] for r in records], color="tab:gray")
    axes[1].set_xlabel("update")
    axes[1].set_ylabel("SFT loss (completion tokens, mean over seeds)")
    axes[1].grid(alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, path)


def _plot_final(summary: dict, path: str, title: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    em = summary["exact_match"]
    groups = list(facts_lib.GROUPS)
    width = 0.38
    for k, direction in enumerate(("p2d", "d2p")):
        means = [em[f"{g}/{direction}"]["mean"] for g in groups]
        lo = [em[f"{g}/{direction}"]["mean"] - em[f"{g}/{direction}"]["ci95_low"] for g in groups]
        hi = [em[f"{g}/{direction}"]["ci95_high"] - em[f"{g}/{direction}"]["mean"] for g in groups]
        xs = np.arange(len(groups)) + (k - 0.5) * width
        bars = ax.bar(xs, means, width, yerr=[lo, hi], capsize=3, label=f"asked {direction.upper()}",
                      color=("tab:blue", "tab:orange")[k])  # fmt: skip
        for x, m, h, g in zip(xs, means, hi, groups):
            ax.text(x, m + h + 0.02, f"{m:.2f}", ha="center", fontsize=8)
            if not trained(g, direction):
                bars[groups.index(g)].set_hatch("//")
    ax.axhline(summary["chance_exact_match"], color="k", linestyle=":", linewidth=0.8, label="chance (1/#names)")
    ax.axhline(FORWARD_MIN, color="tab:red", linestyle="--", linewidth=0.8, label=f"claim: trained >= {FORWARD_MIN}")
    ax.set_xticks(np.arange(len(groups)), [f"trained {g.replace('_only', ' only').upper()}" for g in groups])
    ax.set_ylabel("exact match, held-out templates (95% CI over seeds)")
    ax.set_ylim(0, 1.3)
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    ax.set_title("exact match (hatched: reverse direction)")
    ax = axes[1]
    tests = summary["logprob_test"]
    labels = {"reverse_names": "P2D_ONLY reversed\n(names, the claim)", "reverse_descriptions": "D2P_ONLY reversed\n(descriptions)",
              "control_trained_names": "D2P_ONLY trained dir.\n(control)"}  # fmt: skip
    for i, (key, label) in enumerate(labels.items()):
        t = tests[key]
        ax.bar(i - 0.2, t["mean_logp_correct"], 0.4, color="tab:green", label="correct" if i == 0 else None)
        ax.bar(i + 0.2, t["mean_logp_others"], 0.4, color="tab:gray", label="other (mean)" if i == 0 else None)
        for dx, value in ((-0.2, t["mean_logp_correct"]), (0.2, t["mean_logp_others"])):
            ax.text(i + dx, value - 1, f"{value:.1f}", ha="center", va="top", fontsize=7)
        ax.text(i, min(t["mean_logp_correct"], t["mean_logp_others"]) - 5, f"p={t['p_value']:.2g}", ha="center", fontsize=8)
    ax.set_xticks(range(len(labels)), list(labels.values()), fontsize=7)
    lowest = min(min(tests[k]["mean_logp_correct"], tests[k]["mean_logp_others"]) for k in labels)
    ax.set_ylim(1.2 * lowest - 8, 0)
    ax.set_ylabel("summed log-prob of the entity")
    ax.set_title("log-prob test: correct vs other entities")
    ax.legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, path)


# ---------------------------------------------------------------- main


def main(args: argparse.Namespace) -> dict:
    settings = QUICK if args.quick else Settings()
    if args.epochs:
        settings = dataclasses.replace(settings, num_epochs=args.epochs)
    run_dir = setup_run(args, NAME)
    corpus = facts_lib.make_fact_corpus(
        args.seed, settings.num_facts, settings.entity_len, settings.entity_len,
        num_train_templates=settings.num_train_templates, num_test_templates=settings.num_test_templates,
    )  # fmt: skip
    model = LMConfig(
        corpus.vocab_size, settings.hidden_size, settings.num_layers, settings.num_heads,
        max_position_embeddings=corpus.max_length, style="llama",
    )  # fmt: skip
    train_config = LMTrainConfig(
        model, objective="sft", batch_size=settings.batch_size, num_epochs=settings.num_epochs,
        warmup_steps=settings.warmup_steps, weight_decay=settings.weight_decay,
    )  # fmt: skip
    hparams = LMHParams(learning_rate=settings.learning_rate)
    train_data = _sft(corpus.train, corpus)
    eval_sets = {name: _sft(ex, corpus).arrays() for name, ex in _eval_sets(corpus).items()}

    def eval_fn(params):
        return {name: completion_correct(params, model, batch).mean() for name, batch in eval_sets.items()}

    trainer = make_train(train_config, train_data.arrays(), eval_fn=eval_fn)
    num_names = corpus.num_facts
    criteria = {
        "forward_min": FORWARD_MIN, "both_min": BOTH_MIN,
        "reverse_max": REVERSE_MAX_CHANCE_MULTIPLE / num_names,
        "reverse_max_rule": f"{REVERSE_MAX_CHANCE_MULTIPLE:g} / num_facts ({num_names})",
        "logprob_p_min": LOGPROB_P_MIN,
        "aggregation": "means over seeds, held-out templates; log-prob t-test paired over facts",
    }  # fmt: skip
    run_config = {
        "experiment": NAME, "settings": to_dict(settings), "quick": bool(args.quick), "seeds": args.seeds,
        "seed": args.seed, "model": to_dict(model), "train": to_dict(train_config), "hparams": to_dict(hparams),
        "criteria": criteria,
        "corpus": {
            "vocab_size": corpus.vocab_size, "max_length": corpus.max_length, "num_facts": corpus.num_facts,
            "group_sizes": np.bincount(corpus.group, minlength=3).tolist(), "train_lines": len(corpus.train),
            "test_lines": len(corpus.test_p2d) + len(corpus.test_d2p), "token_ranges": corpus.token_ranges,
        },
    }  # fmt: skip
    if not args.resume:
        write_json(os.path.join(run_dir, "config.json"), run_config)
    print(
        f"Reversal curse: {corpus.num_facts} facts, {len(corpus.train)} training lines, {trainer.num_updates} updates "
        f"x {args.seeds} seeds, {settings.num_layers}-layer d={settings.hidden_size} model -> {run_dir}"
    )
    start = time.perf_counter()
    result = loop_lib.run(
        trainer, jax.random.PRNGKey(args.seed), hparams, num_seeds=args.seeds, run_dir=run_dir,
        config_dict=run_config, resume=bool(args.resume),
        loop=loop_lib.LoopConfig(
            chunk_updates=settings.chunk_updates, eval_every_chunks=settings.eval_every_chunks,
            checkpoint_every_chunks=settings.checkpoint_every_chunks, progress=not args.no_progress,
            tensorboard=args.tensorboard,
        ),
    )  # fmt: skip
    train_seconds = time.perf_counter() - start

    params = result.state.params  # leading axis: seeds
    final = {k: np.asarray(v, np.float64) for k, v in result.final_eval.items()}  # [seeds] each
    exact_match = {k: mean_ci95(v) | {"per_seed": v.tolist()} for k, v in final.items()}

    # Log-prob tests on the held-out templates.
    test_d2p, test_p2d = corpus.test_d2p, corpus.test_p2d
    logprob = {
        "reverse_names": logprob_test(
            params, model, corpus, test_d2p.where(corpus.group[test_d2p.fact] == facts_lib.P2D_ONLY),
            corpus.names, facts_lib.P2D_ONLY),
        "reverse_descriptions": logprob_test(
            params, model, corpus, test_p2d.where(corpus.group[test_p2d.fact] == facts_lib.D2P_ONLY),
            corpus.descriptions, facts_lib.D2P_ONLY),
        "control_trained_names": logprob_test(
            params, model, corpus, test_d2p.where(corpus.group[test_d2p.fact] == facts_lib.D2P_ONLY),
            corpus.names, facts_lib.D2P_ONLY),
    }  # fmt: skip

    # Cross-check: greedy decoding (KV cache) agrees with the teacher-forced exact match, example by example.
    tests = test_p2d + test_d2p
    tests_data = _sft(tests, corpus).arrays()
    teacher = np.asarray(_correct_per_seed(params, model, tests_data))
    greedy = np.stack([
        greedy_exact_match(jax.tree.map(lambda x, s=s: x[s], params), model, corpus, tests) for s in range(args.seeds)
    ])  # fmt: skip
    wall = time.perf_counter() - start

    def em(key):
        return exact_match[key]["mean"]

    reverse_max = criteria["reverse_max"]
    claims = {
        "forward_p2d_only": em("p2d_only/p2d") >= FORWARD_MIN,
        "forward_d2p_only": em("d2p_only/d2p") >= FORWARD_MIN,
        "reverse_p2d_only_at_chance": em("p2d_only/d2p") <= reverse_max,
        "reverse_d2p_only_at_chance": em("d2p_only/p2d") <= reverse_max,
        "both_p2d": em("both/p2d") >= BOTH_MIN,
        "both_d2p": em("both/d2p") >= BOTH_MIN,
        "logprob_no_preference": logprob["reverse_names"]["p_value"] > LOGPROB_P_MIN,
    }
    claims["all"] = all(claims.values())
    summary = {
        "experiment": NAME, "quick": bool(args.quick), "seeds": args.seeds, "seed": args.seed,
        "updates": result.updates_done, "finished": result.updates_done == trainer.num_updates,
        "num_facts": corpus.num_facts, "num_names": num_names, "chance_exact_match": 1.0 / num_names,
        "criteria": criteria, "claims": claims,
        "exact_match": exact_match,
        "logprob_test": logprob,
        "final_train_loss_mean_over_seeds": float(result.records[-1]["loss"]) if result.records else None,
        "greedy_decoding_check": {
            "method": "teacher-forced argmax per completion token (used for all exact-match numbers) vs "
                      "rljax.lm.sampling.generate greedy decoding with KV cache",
            "examples": int(teacher.size), "agreement": float((teacher == greedy).mean()),
            "greedy_exact_match_per_seed": greedy.mean(axis=1).tolist(),
        },
        "wall_seconds": wall, "train_loop_seconds": train_seconds, "compile_seconds": result.compile_seconds,
        "run_seconds": result.run_seconds, "devices": jax.device_count(),
    }  # fmt: skip
    write_json(os.path.join(run_dir, "result.json"), summary)
    title = f"Reversal curse: {corpus.num_facts} facts, {settings.num_layers}-layer d={settings.hidden_size}, {args.seeds} seeds"
    if result.records:
        keys = [f"{g}/{d}" for g in facts_lib.GROUPS for d in ("p2d", "d2p")]
        _plot_curves(result.records, keys, 1.0 / num_names, os.path.join(run_dir, "exact_match.png"), title)
    _plot_final(summary, os.path.join(run_dir, "final.png"), title)

    print("exact match on held-out templates (mean over seeds):")
    for g in facts_lib.GROUPS:
        cells = [f"asked {d.upper()} {em(f'{g}/{d}'):.3f}{'' if trained(g, d) else ' (reverse)'}" for d in ("p2d", "d2p")]
        print(f"  {g:<9} " + "   ".join(cells))
    r = logprob["reverse_names"]
    print(
        f"log-prob test, reversed names: correct {r['mean_logp_correct']:.2f} vs others {r['mean_logp_others']:.2f}, "
        f"difference {r['mean_difference']:+.3f}, p = {r['p_value']:.3f} (control p = {logprob['control_trained_names']['p_value']:.2g})"
    )
    print(f"greedy decoding agrees with teacher-forced exact match on {summary['greedy_decoding_check']['agreement']:.1%}")
    print(f"claims: {claims}")
    print(f"wall {wall:.1f} s (compile {result.compile_seconds:.1f} s); wrote {run_dir}")
    return summary
