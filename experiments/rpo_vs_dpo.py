"""RPO vs DPO under narrow preference coverage, with a known gold reward (papers/preference-lm.md §10).

    python -m experiments rpo-vs-dpo                      # full run (3 seeds, a few minutes on one CPU core)
    python -m experiments rpo-vs-dpo --quick              # tiny budget (seconds), for the smoke test

Claim (Liu et al., 2024, "Provably Mitigating Overoptimization in RLHF: Your SFT
Loss is Implicitly an Adversarial Regularizer"): with narrow preference coverage,
DPO's chosen log-prob and gold reward fall late in training, while RPO
(DPO + eta * beta * NLL of the chosen response) keeps them high.

Setup, everything exact (no sampling in the evaluation):

* Responses are all ``V**L`` token sequences (``SequenceSpace``; 8**4 = 4096 by
  default) after a one-token prompt. The prompt token is id 0 and the model's
  vocabulary is exactly the ``V`` response tokens (no eos, fixed length), so the
  model's log-probs of the ``V**L`` responses sum to 1 and one batched forward
  gives the policy's exact distribution: exact expected gold reward
  ``E_{y~pi}[r*(y)]``, exact ``KL(pi || pi_ref)`` and the exact log-prob of every
  chosen response of the dataset.
* Gold reward, a fresh one per seed: ``sqrt(f) * linear + sqrt(1 - f) * table``
  with ``linear`` a ``random_linear_reward`` (per-position token weights) and
  ``table`` i.i.d. N(0, 1) per response, both std 1 over uniform responses.
  ``f = --gold-linear-fraction`` is the share of the gold variance that the
  token features explain, i.e. how far the preferences on the covered
  responses identify the reward of the uncovered ones. The default ``f = 0``
  (no information off the data's support) is the paper's premise of reward
  uncertainty outside the coverage; ``f = 1`` is a purely linear gold reward.
* Reference policy: a tiny Llama-style ``LanguageModel`` SFT-ed on samples of a
  broad base distribution (independent random per-position token
  distributions, entropy about 6.9 nats of the 8.3 of uniform), one SFT run per
  seed, all seeds in one vmapped call.
* Narrow coverage: the preference pairs are drawn from ``subset_size`` responses
  picked uniformly at random (``subset_distribution``), labelled by the gold
  reward (optional label noise).
* Arms: DPO (``loss_types ("sigmoid", "sft")``, weights ``(1, 0)``) and RPO
  (weights ``rpo_loss_types(eta, beta)`` = ``(1, eta * beta)`` on the SUMMED
  chosen NLL, as in the paper's official code) for several ``eta``. The primary
  RPO arm, the one the claim is tested on, is fixed in advance: ``eta = 0.5``,
  where the SFT term's gradient weight ``eta * beta`` equals the DPO term's
  initial weight ``beta * sigmoid(0) = beta / 2``. The other ``eta`` (the
  paper's 0.005 and 0.05) are reported as a dose-response.
* Seeds: seed ``i`` draws its own gold reward, covered subset, pairs, labels,
  SFT init and minibatch order; the base distribution and the SFT samples are
  shared. All arms of one seed train in one compiled, vmapped call
  (``rljax.core.loop.run``), evaluated exactly after every epoch.

Outputs in the run directory: ``config.json``; ``metrics.jsonl`` (one record
per seed, arm and epoch, epoch 0 = the reference policy); ``result.json``
(per arm: mean curves, peak and final values with 95% intervals over seeds,
and the claim's booleans, defined in ``result["claim"]["definition"]``: values
are 5-epoch moving averages, "final" = the last 5 epochs); ``chosen_logp.png``,
``gold_reward.png``, ``kl.png``; ``seed<i>/`` (the host loop's per-update ``metrics.jsonl`` and checkpoints,
whose ``per_seed`` lists are indexed by arm).

What we measured (default settings; means over seeds with 95% t-intervals):

* Chosen log-prob, in every setting tried: DPO's falls from about -10.6 to
  -54 nats (3 seeds; drop 43 [28, 58]) while RPO (eta 0.5) raises it to -4.8
  and holds it (drop 0.2); RPO - DPO at the end +49 [36, 62] nats.
* Gold reward: RPO (eta 0.5) rises to about 0.74 and stays (drop 0.02); DPO
  peaks (0.84) and ends lower (0.39), but erratically: its policy collapses
  onto a few responses, the best covered one in some seeds and uncovered ones
  in others, so with 3 seeds neither DPO's fall (0.45 [-1.2, 2.1]) nor RPO's
  lead (+0.35 [-2.2, 2.9]) is significant. With ``--seeds 8``: DPO's fall
  0.67 [0.10, 1.24], RPO's lead +0.60 [-0.24, 1.44] (5 of 8 seeds). Which way a
  seed goes is chaotic: seeds 0-2 of the 8-seed run (same keys, a different
  vmap width in the SFT, so different float rounding) end elsewhere.
* With a linear gold reward (``--gold-linear-fraction 1``) the preferences on
  the covered responses identify the reward elsewhere and DPO's final gold
  (1.67 over 3 seeds) is above RPO's (0.69): the gold half of the claim needs
  reward uncertainty off the data's support, as the paper's theory assumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs.text.enumerable import (
    SequenceSpace, exact_entropy, exact_expectation, exact_kl, prompted_rows, random_linear_reward,
    random_product_distribution,
)
from envs.text.preferences import sample_preference_pairs, subset_distribution
from experiments.common import add_run_arguments, setup_run
from rljax.core import loop as loop_lib
from rljax.core.config import broadcast_hparams, to_dict
from rljax.core.logging import write_json
from rljax.core.stats import mean_ci95
from rljax.lm import train as lm_train
from rljax.lm.data import tokenize_preferences, tokenize_sft
from rljax.lm.model import LMConfig
from rljax.losses.preference import rpo_loss_types
from rljax.core.plotting import plt, save_figure

DESCRIPTION = "RPO (DPO + SFT) vs DPO with narrow preference coverage: exact gold reward and chosen log-prob curves"
NAME = "rpo-vs-dpo"
PROMPT_TOKEN = 0
METRICS = ("gold", "chosen_logp", "rejected_logp", "kl", "subset_mass", "entropy", "total_mass")


@dataclasses.dataclass(frozen=True)
class Settings:
    # response space and gold reward
    vocab_size: int = 8
    length: int = 4
    # model (Llama style)
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    # base distribution and SFT of the reference policy
    base_logit_std: float = 1.0  # per-position token logits ~ N(0, std^2): a broad, non-uniform base
    sft_samples: int = 8192
    sft_epochs: int = 4
    sft_batch_size: int = 64
    sft_learning_rate: float = 1e-3
    # gold reward = sqrt(f) * linear + sqrt(1 - f) * unstructured, both std 1 over uniform responses
    gold_linear_fraction: float = 0.0  # f: share of the gold variance explained by per-position token features
    # narrow-coverage preference data
    subset_size: int = 16
    num_pairs: int = 512
    label_noise: float = 0.0
    # DPO / RPO
    beta: float = 0.1
    etas: tuple[float, ...] = (0.0, 0.005, 0.05, 0.5)  # 0.0 is DPO
    primary_eta: float = 0.5  # the RPO arm the claim is tested on (fixed in advance; see the docstring)
    learning_rate: float = 1e-3
    batch_size: int = 32
    num_epochs: int = 40
    seeds: int = 3
    # claim margins: a "fall" is peak - final above these
    logp_margin: float = 1.0  # nats of the mean chosen log-prob
    gold_margin: float = 0.1  # gold reward units (std 1 over uniformly random responses)
    final_window: int = 5  # epochs averaged for "final" and for the peak's moving average


QUICK = dict(
    vocab_size=4, length=3, hidden_size=16, num_layers=1, num_heads=2, sft_samples=256, sft_epochs=2,
    sft_batch_size=32, subset_size=6, num_pairs=64, batch_size=16, num_epochs=3, seeds=1, etas=(0.0, 0.5),
    final_window=2,
)


def arm_name(eta: float) -> str:
    return "dpo" if eta == 0 else f"rpo_eta{eta:g}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Settings()
    parser.add_argument("--seeds", type=int, help=f"independent seeds (default {d.seeds})")
    parser.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    parser.add_argument("--epochs", type=int, help=f"DPO/RPO epochs over the pairs (default {d.num_epochs})")
    parser.add_argument("--etas", type=float, nargs="+", help=f"RPO etas, 0 = DPO (default {list(d.etas)})")
    parser.add_argument("--primary-eta", type=float, help=f"the RPO arm of the claim (default {d.primary_eta})")
    parser.add_argument("--beta", type=float, help=f"DPO beta (default {d.beta})")
    parser.add_argument("--lr", type=float, help=f"DPO/RPO learning rate (default {d.learning_rate})")
    parser.add_argument("--subset-size", type=int, help=f"responses covered by the pairs (default {d.subset_size})")
    parser.add_argument("--num-pairs", type=int, help=f"preference pairs (default {d.num_pairs})")
    parser.add_argument(
        "--gold-linear-fraction", type=float,
        help=f"share of the gold reward's variance that is linear in the tokens (default {d.gold_linear_fraction})",
    )
    parser.add_argument("--label-noise", type=float, help=f"label flip probability (default {d.label_noise})")
    parser.add_argument("--quick", action="store_true", help="tiny budget (seconds): for smoke tests")
    add_run_arguments(parser, NAME)


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = Settings(**QUICK) if args.quick else Settings()
    flags = {
        "seeds": args.seeds, "num_epochs": args.epochs, "etas": tuple(args.etas) if args.etas else None,
        "primary_eta": args.primary_eta, "beta": args.beta, "learning_rate": args.lr,
        "gold_linear_fraction": args.gold_linear_fraction, "subset_size": args.subset_size,
        "num_pairs": args.num_pairs, "label_noise": args.label_noise,
    }
    s = dataclasses.replace(s, **{k: v for k, v in flags.items() if v is not None})
    etas = tuple(float(e) for e in s.etas)
    if 0.0 not in etas:
        raise SystemExit("--etas: include 0 (the DPO arm)")
    if s.primary_eta not in etas or s.primary_eta == 0:
        raise SystemExit(f"--primary-eta {s.primary_eta}: expected one of the nonzero --etas {list(etas)}")
    if s.seeds < 1:
        raise SystemExit(f"--seeds: expected a positive number, got {s.seeds}")
    if not 0.0 <= s.gold_linear_fraction <= 1.0:
        raise SystemExit(f"--gold-linear-fraction: expected a fraction in [0, 1], got {s.gold_linear_fraction}")
    if s.num_pairs < s.batch_size:
        raise SystemExit(f"--num-pairs: expected at least one batch of {s.batch_size} pairs, got {s.num_pairs}")
    return dataclasses.replace(s, etas=etas)


# ---------------------------------------------------------------- the world


def model_config(s: Settings) -> LMConfig:
    return LMConfig(
        vocab_size=s.vocab_size, hidden_size=s.hidden_size, num_layers=s.num_layers, num_heads=s.num_heads,
        max_position_embeddings=s.length + 1, style="llama",
    )


def all_logps(params, cfg: LMConfig, rows):
    """Exact log pi(y | prompt) of every response, one batched forward: [V**L]."""
    logps, _ = lm_train.sequence_logps(params, cfg, *rows)
    return logps


def train_references(s: Settings, cfg: LMConfig, space: SequenceSpace, base_probs, key):
    """SFT on samples of the base distribution, ``s.seeds`` seeds in one vmapped call -> params [seeds, ...]."""
    sample_key, train_key = jax.random.split(key)
    probs = jnp.asarray(base_probs, jnp.float32)
    rows = np.asarray(jax.random.choice(sample_key, space.size, (s.sft_samples,), p=probs))
    data = tokenize_sft(
        [[PROMPT_TOKEN]] * s.sft_samples, space.sequences[rows], None, s.length + 1,
        add_bos=False, add_eos=False, pad_id=PROMPT_TOKEN,
    )  # fmt: skip
    config = lm_train.LMTrainConfig(model=cfg, objective="sft", batch_size=s.sft_batch_size, num_epochs=s.sft_epochs)
    trainer = lm_train.make_train(config, data)
    hparams = broadcast_hparams(lm_train.LMHParams(learning_rate=s.sft_learning_rate), s.seeds)
    keys = jnp.stack([jax.random.fold_in(train_key, i) for i in range(s.seeds)])  # seed i's: independent of --seeds
    state, metrics = jax.jit(jax.vmap(trainer))(keys, hparams)
    return state.params, np.asarray(metrics["loss"][:, -max(1, trainer.num_updates // 10):].mean(axis=1))


def make_world(s: Settings, space: SequenceSpace, key):
    """One seed's gold reward, covered subset and labelled pairs."""
    gold_key, table_key, subset_key, pair_key = jax.random.split(key, 4)
    linear = np.asarray(random_linear_reward(gold_key, s.vocab_size, s.length)(space.sequences), np.float64)
    table = np.asarray(jax.random.normal(table_key, (space.size,)), np.float64)  # i.i.d. N(0, 1) per response
    f = s.gold_linear_fraction
    gold = (np.sqrt(f) * linear + np.sqrt(1.0 - f) * table).astype(np.float32)
    subset = np.sort(np.asarray(jax.random.choice(subset_key, space.size, (s.subset_size,), replace=False)))
    pairs = sample_preference_pairs(
        pair_key, space, subset_distribution(space.size, subset), gold, s.num_pairs, label_noise=s.label_noise
    )
    return gold, subset, pairs


def exact_metrics(logp, gold, ref_logp, chosen, rejected, subset) -> dict:
    """Everything the claim needs from the exact log-probs ``logp`` [V**L] of one policy."""
    return {
        "gold": exact_expectation(logp, gold),  # E_{y~pi}[r*(y)], exact
        "chosen_logp": logp[chosen].mean(),  # mean log pi(y+) over the training pairs
        "rejected_logp": logp[rejected].mean(),
        "kl": exact_kl(logp, ref_logp),  # KL(pi || pi_ref), exact
        "subset_mass": jnp.exp(logp[subset]).sum(),  # probability of the covered responses
        "entropy": exact_entropy(logp),
        "total_mass": jnp.exp(logp).sum(),  # 1 up to float error (sanity check)
    }


def make_eval_fn(cfg, rows, gold, ref_logp, pairs, subset):
    """``eval_fn(params)`` for ``make_train``: one forward over all responses, then :func:`exact_metrics`."""
    consts = [jnp.asarray(x) for x in (gold, ref_logp, pairs.chosen_index, pairs.rejected_index, subset)]
    return lambda params: exact_metrics(all_logps(params, cfg, rows), *consts)


# ---------------------------------------------------------------- summaries


def smooth(curves: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` evaluations: [seeds, E+1] -> [seeds, E+2-window]."""
    window = max(1, min(window, curves.shape[1]))
    cumsum = np.cumsum(np.pad(curves, ((0, 0), (1, 0))), axis=1)
    return (cumsum[:, window:] - cumsum[:, :-window]) / window


def _fall(curves: np.ndarray, window: int) -> dict:
    """Peak and final of the ``window``-epoch moving average of each seed's curve [seeds, E+1].

    ``final`` is the mean of the last ``window`` evaluations ("late in training"), ``peak``
    the largest moving average anywhere (epoch 0, the reference, included), so
    ``drop = peak - final >= 0``; averaging over a window damps the upward bias
    that a max over noisy evaluations would have.
    """
    averaged = smooth(curves, window)
    peak, final = averaged.max(axis=1), averaged[:, -1]
    return {
        "peak": mean_ci95(peak), "final": mean_ci95(final), "drop": mean_ci95(peak - final),
        "peak_epoch_per_seed": (averaged.argmax(axis=1) + min(window, curves.shape[1]) - 1).tolist(),  # window's end
        "peak_per_seed": peak.tolist(), "final_per_seed": final.tolist(), "drop_per_seed": (peak - final).tolist(),
        "last_epoch": mean_ci95(curves[:, -1]),
    }


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    """a - b per seed (same seed = same gold reward, data and reference), with a 95% CI; ``separated``: CI above 0."""
    ci = mean_ci95(a - b)
    return ci | {"per_seed": (a - b).tolist(), "separated": bool(ci["ci95_low"] > 0)}


def summarize(s: Settings, curves: dict[str, dict[str, np.ndarray]]) -> dict:
    w = s.final_window
    arms = {}
    for name, c in curves.items():
        arms[name] = {"mean_curve": {m: c[m].mean(axis=0).tolist() for m in METRICS}}
        arms[name] |= {m: _fall(c[m], w) for m in ("chosen_logp", "gold")}
        for m in ("rejected_logp", "kl", "subset_mass", "entropy"):
            arms[name][f"final_{m}"] = mean_ci95(smooth(c[m], w)[:, -1])
    primary = arm_name(s.primary_eta)
    dpo, rpo = arms["dpo"], arms[primary]
    margins = {"chosen_logp": s.logp_margin, "gold": s.gold_margin}

    def falls(arm, m):
        drop = arm[m]["drop"]
        return bool(drop["mean"] > margins[m] and drop["ci95_low"] > 0)

    gaps = {
        m: _paired(np.asarray(rpo[m]["final_per_seed"]), np.asarray(dpo[m]["final_per_seed"]))
        for m in ("chosen_logp", "gold")
    }
    claim = {
        "primary_rpo_arm": primary,
        "margins": margins,
        "final_window_epochs": w,
        "definition": (
            f"values are {w}-epoch moving averages of each seed's curve; final = the last {w} epochs, peak = the "
            "largest moving average (epoch 0 = reference included), drop = peak - final. falls: mean drop over "
            "seeds > margin and its 95% CI above 0. stays_high: mean drop < margin. rpo_above_dpo: mean of the "
            "paired per-seed difference RPO final - DPO final >= 0; ci_separated: its 95% CI above 0."
        ),
        "dpo_chosen_logp_falls": falls(dpo, "chosen_logp"),
        "dpo_gold_falls": falls(dpo, "gold"),
        "rpo_chosen_logp_stays_high": bool(rpo["chosen_logp"]["drop"]["mean"] < s.logp_margin),
        "rpo_gold_stays_high": bool(rpo["gold"]["drop"]["mean"] < s.gold_margin),
        "rpo_final_chosen_logp_above_dpo": bool(gaps["chosen_logp"]["mean"] >= 0),
        "rpo_final_gold_above_dpo": bool(gaps["gold"]["mean"] >= 0),
        "rpo_minus_dpo_final": gaps,
        "ci_separated": {m: g["separated"] for m, g in gaps.items()},
    }
    claim["holds"] = all(
        claim[k] for k in (
            "dpo_chosen_logp_falls", "dpo_gold_falls", "rpo_chosen_logp_stays_high", "rpo_gold_stays_high",
            "rpo_final_chosen_logp_above_dpo", "rpo_final_gold_above_dpo",
        )
    )  # fmt: skip
    return {"arms": arms, "claim": claim}


def plot_curves(s: Settings, curves, metric: str, ylabel: str, path: str, hlines=None) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, c) in enumerate(curves.items()):
        y = c[metric]
        x = np.arange(y.shape[1])
        color = colors[i % len(colors)]
        headline = name in ("dpo", arm_name(s.primary_eta))  # the claim's two arms: per-seed lines too
        label = "DPO" if name == "dpo" else f"RPO eta={name.removeprefix('rpo_eta')}"
        if name == arm_name(s.primary_eta):
            label += " (primary)"
        if headline:
            ax.plot(x, y.T, color=color, alpha=0.35, linewidth=0.8)
        ax.plot(x, y.mean(axis=0), color=color, linewidth=2.2 if headline else 1.2,
                linestyle="-" if headline else "--", label=label + ("" if headline else ", mean only"))
    for value, text in hlines or []:
        ax.axhline(value, color="gray", linestyle=":", linewidth=1)
        ax.annotate(text, (x[-1], value), fontsize=7, color="gray", va="bottom", ha="right")
    ax.margins(y=0.08)
    ax.set_xlabel("epoch over the preference pairs (0 = reference policy)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel}: {s.seeds} seeds (thin), mean (thick)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


# ---------------------------------------------------------------- main


def main(args: argparse.Namespace) -> dict:
    s = settings_from_args(args)
    run_dir = setup_run(args, NAME)
    start = time.perf_counter()
    cfg = model_config(s)
    space = SequenceSpace(s.vocab_size, s.length)
    rows = prompted_rows(space, PROMPT_TOKEN)
    key = jax.random.PRNGKey(args.seed)
    base_key, sft_key, world_key, train_key = jax.random.split(key, 4)
    arms = [arm_name(e) for e in s.etas]
    weights = []
    for eta in s.etas:
        loss_types, w = rpo_loss_types(eta, s.beta)  # (("sigmoid", "sft"), (1, eta * beta)); eta = 0 is DPO
        weights.append(w)
    run_config = {
        "experiment": NAME, "settings": to_dict(s), "seed": args.seed, "arms": arms,
        "loss_types": list(loss_types), "loss_weights": {a: list(w) for a, w in zip(arms, weights)},
        "model": to_dict(cfg), "sft_normalization": "sum", "quick": bool(args.quick),
    }
    if not args.resume:
        write_json(os.path.join(run_dir, "config.json"), run_config)
    print(f"RPO vs DPO: {space}, {s.subset_size} covered responses, {s.num_pairs} pairs, arms {arms}, "
          f"{s.seeds} seeds x {s.num_epochs} epochs -> {run_dir}")

    base_probs = random_product_distribution(base_key, s.vocab_size, s.length, s.base_logit_std)
    ref_params, sft_loss = train_references(s, cfg, space, base_probs, sft_key)
    logps_fn = jax.jit(jax.vmap(lambda p: all_logps(p, cfg, rows)))
    ref_logps = np.asarray(logps_fn(ref_params))  # [seeds, V**L]
    base_logp = np.log(base_probs)
    sft_fit = {
        "final_token_nll": sft_loss.tolist(),
        "kl_base_to_ref": [float(exact_kl(base_logp, r)) for r in ref_logps],
        "base_entropy": float(exact_entropy(base_logp)),
        "ref_entropy": [float(exact_entropy(r)) for r in ref_logps],
        "uniform_entropy": float(np.log(space.size)),
    }

    dpo_config = lm_train.LMTrainConfig(
        model=cfg, objective="dpo", loss_types=loss_types, sft_normalization="sum", reference="precomputed",
        batch_size=s.batch_size, num_epochs=s.num_epochs,
    )  # fmt: skip
    hparams = lm_train.LMHParams(
        learning_rate=s.learning_rate, beta=s.beta, loss_weights=jnp.asarray(weights, jnp.float32)
    )  # leading axis = arms
    steps_per_epoch = s.num_pairs // s.batch_size
    curves = {a: {m: np.zeros((s.seeds, s.num_epochs + 1)) for m in METRICS} for a in arms}
    worlds, compile_seconds, run_seconds = [], 0.0, 0.0
    records = []
    for seed in range(s.seeds):
        gold, subset, pairs = make_world(s, space, jax.random.fold_in(world_key, seed))
        data = tokenize_preferences(
            [[PROMPT_TOKEN]] * len(pairs), pairs.chosen, pairs.rejected, None, s.length + 1,
            add_bos=False, add_eos=False, pad_id=PROMPT_TOKEN,
        )  # fmt: skip
        params = jax.tree.map(lambda x: x[seed], ref_params)
        eval_fn = make_eval_fn(cfg, rows, gold, ref_logps[seed], pairs, subset)
        trainer = lm_train.make_train(dpo_config, data, init_params=params, eval_fn=eval_fn)
        seed_dir = os.path.join(run_dir, f"seed{seed}")
        os.makedirs(seed_dir, exist_ok=True)
        result = loop_lib.run(
            trainer, jax.random.fold_in(train_key, seed), hparams, num_seeds=len(arms), run_dir=seed_dir,
            config_dict=run_config | {"world_seed": seed}, resume=bool(args.resume),
            loop=loop_lib.LoopConfig(
                chunk_updates=steps_per_epoch, eval_every_chunks=1, checkpoint_every_chunks=10,
                progress=not args.no_progress, tensorboard=args.tensorboard,
            ),
        )  # fmt: skip
        compile_seconds += result.compile_seconds
        run_seconds += result.run_seconds
        at_ref = exact_metrics(  # epoch 0: the reference policy, shared by every arm
            jnp.asarray(ref_logps[seed]), gold, ref_logps[seed], pairs.chosen_index, pairs.rejected_index, subset
        )
        evals = [r for r in result.records if "eval/gold/per_seed" in r]
        if len(evals) != s.num_epochs:
            raise RuntimeError(f"seed {seed}: expected {s.num_epochs} evaluations, found {len(evals)}")
        for m in METRICS:
            table = np.array([float(at_ref[m])] * len(arms))[None, :]
            table = np.concatenate([table, np.array([r[f"eval/{m}/per_seed"] for r in evals])])  # [E+1, arms]
            for i, a in enumerate(arms):
                curves[a][m][seed] = table[:, i]
        for epoch in range(s.num_epochs + 1):
            for a in arms:
                records.append({"seed": seed, "arm": a, "epoch": epoch, "update": epoch * steps_per_epoch}
                               | {m: float(curves[a][m][seed, epoch]) for m in METRICS})
        worlds.append({
            "gold_under_uniform": float(gold.mean()), "gold_under_ref": float(exact_expectation(ref_logps[seed], gold)),
            "gold_max": float(gold.max()), "gold_best_covered": float(gold[subset].max()),
            "gold_covered_mean": float(gold[subset].mean()),
            "ref_subset_mass": float(np.exp(ref_logps[seed][subset]).sum()),
            "label_accuracy": float((pairs.gold_margin > 0).mean()),
        })  # fmt: skip
    wall = time.perf_counter() - start

    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    summary = {
        "experiment": NAME, "seeds": s.seeds, "arms": arms, "epochs": s.num_epochs, "steps_per_epoch": steps_per_epoch,
        "wall_seconds": wall,  # everything: SFT, data, compiles, DPO/RPO training, evaluation
        "loop_compile_seconds": compile_seconds, "loop_run_seconds": run_seconds,  # the host loop's chunks only
        "reference_sft": sft_fit, "worlds": worlds,
    } | summarize(s, curves)
    write_json(os.path.join(run_dir, "result.json"), summary)
    ref_gold = float(np.mean([w["gold_under_ref"] for w in worlds]))
    best = float(np.mean([w["gold_best_covered"] for w in worlds]))
    plot_curves(s, curves, "chosen_logp", "mean log pi(y_chosen) on the pairs",
                os.path.join(run_dir, "chosen_logp.png"))
    plot_curves(s, curves, "gold", "exact expected gold reward", os.path.join(run_dir, "gold_reward.png"),
                hlines=[(ref_gold, "reference policy"), (best, "best covered response (mean)")])
    plot_curves(s, curves, "kl", "exact KL(pi || pi_ref)", os.path.join(run_dir, "kl.png"))

    claim = summary["claim"]
    for a in arms:
        c, g = summary["arms"][a]["chosen_logp"], summary["arms"][a]["gold"]
        print(f"{a:>14}: chosen logp peak {c['peak']['mean']:.2f} final {c['final']['mean']:.2f} | "
              f"gold peak {g['peak']['mean']:.3f} final {g['final']['mean']:.3f} (reference {ref_gold:.3f})")
    print(f"claim holds: {claim['holds']} ({', '.join(f'{k}={v}' for k, v in claim.items() if isinstance(v, bool))}); "
          f"wall {wall:.0f} s")
    print(f"wrote {run_dir}")
    return summary
