"""Likelihood displacement in DPO and the CHES score (Razin et al., ICLR 2025; papers/preference-lm.md §15).

    python -m experiments likelihood-displacement              # full run, a few minutes on one CPU core
    python -m experiments likelihood-displacement --quick      # smoke test, seconds
    python -m experiments likelihood-displacement --optimizer adamw   # the previous (AdamW) result

Claim under test (papers/preference-lm.md §15(d)): the centred hidden embedding similarity
``CHES(x, y+, y-) = <Pos, Neg> - ||Pos||^2`` (Pos, Neg = sums of the last hidden
states over the positions that predict a response token) predicts how much
DPO on a pair lowers log pi(y+ | x): Spearman(CHES, -Delta log pi(y+)) > 0.5 across
pairs, and DPO on the top CHES tertile lowers log pi(y+) while on the bottom
tertile it rises. Also reported: removing the top-scoring half of a DPO training set
reduces that displacement.

What the paper and its code do (princeton-nlp/unintentional-unalignment, read for this design):

* ``ches/ches.py`` and ``compute_preference_similarity_per_example.py``: CHES from the last hidden
  states, from the last prompt token up to (not including) the final token; ln-CHES divides by the
  lengths. The library's ``rljax.losses.preference.ches_score`` computes the same.
* CHES vs displacement (Section 5, Figure 2; README and ``similarity_measures_experiment_runner.py``):
  no per-pair correlation. CHES is computed for 5000 UltraFeedback pairs; a model (README examples:
  base OLMo-1B / Gemma-2B / Llama-3-8B) is trained by DPO on a subset of 512 pairs centred on one CHES
  quantile (``--use_samples_with_preference_similarity_quantile``), 1 epoch, batch 32, RMSprop lr 1e-7,
  beta 0.1; the quantity is ``eval_metrics/train/preferred_logprobs_change_mean``: the mean over the
  subset's own pairs of log pi(y+) at the end of training minus under the initial model.
* Single-example runs (Section 3, ``persona_experiments/experiments_plans/persona_post_sft_*.json``):
  a model after one epoch of SFT (``persona_sft_*``: 1 epoch, batch 32), DPO on one prompt for 101
  epochs (full batch), RMSprop lr 1e-7, beta 0.1; ``persona_single_example_results_printer.py``
  reports the largest decrease of log pi(y+) from any point of training to a later one.
* Filtering (Section 6, README): keep only the 19 of 389 pairs (5%) with the lowest ln-CHES, and
  compare each run's ``preferred_logprobs_change_mean`` on its own training set (Table 16; the headline
  measure is the refusal rate). Footnote 9: keeping up to 15% gave analogous results; keeping more, the
  refusal rates dropped as with the full set. Each run is one epoch at batch 32 and the same lr, so the
  filtered run takes ~1 update where the full run takes ~12.

Design (one "seed" = an independent task, SFT model and pair set):

1. **Task.** Response tokens form ``num_groups`` classes of ``synonyms``
   interchangeable tokens. Each of ``num_prompts`` prompts (``prompt_length``
   prompt tokens) has a fixed class sequence of 3..5 slots; a correct response
   fills each slot with any synonym of its class, uniformly. A tiny Llama-style
   model gets **one epoch** of SFT on these (library ``make_train``, objective ``"sft"``,
   batch 32, as the paper's initial SFT), so it is well above its entropy floor
   (token NLL about 2.6 vs floor 1.1) and y+ is not at its mode.
2. **Pairs.** y+ is a fresh correct response; y- is built from it in one of five
   ways (a priori family, round robin), so the pairs span similarities and lengths:
   ``synonym`` (k slots swapped for a synonym), ``wrong_class`` (k slots swapped for
   a token of another class), ``other_prompt`` (a correct response to another
   prompt), ``truncated`` (y+ without its last k tokens), ``extended`` (y+ followed
   by k random response tokens). CHES and length-normalised CHES come from the
   SFT model's hidden states (``rljax.losses.preference.ches_score``).
3. **Single-pair DPO** (the §15(d) per-pair test, trained like the paper's single-example runs).
   For every pair alone, ``pair_steps`` = 100 full-batch DPO updates from the SFT model. Delta log pi(y+) = end of training minus
   SFT model (the paper's Section 5 quantity); the largest decrease over training (its Section 3
   quantity) is reported too. Library trainer with one pair as its data set, ``lax.map`` in chunks
   of a ``vmap``. Reported: Spearman(CHES, -Delta) and Spearman(ln-CHES, -Delta) per seed and
   pooled, mean Delta per CHES tertile, per pair kind; lr 3e-4 as a robustness check. Also, as a
   reference for the proxy (not part of the claim): the same for ``gradient_ches``, CHES's exact
   first-order counterpart over every parameter's gradient (``make_gradient_ches``), and
   Spearman(CHES, gradient CHES).
4. **CHES-tertile subsets** (the paper's Figure 2). DPO on each CHES tertile of the pairs alone
   (``dpo_steps`` = 240 updates, batch 16, lr 1e-4), Delta log pi(y+) averaged over that tertile's
   own pairs at the end.
5. **Filtering** (Section 6, scaled: half the pairs removed rather than 95%). DPO on the full set
   vs the set without the top half by CHES, by ln-CHES (the paper's filter), or a random half, the
   same number of updates. Delta on the pairs kept in both (an unconfounded comparison) and on each
   run's own training set (the paper's comparison).
   Every pair-set run trains on ``num_pairs`` rows (a subset repeated), so one program serves all.

**Optimiser.** Every DPO run (steps 3 to 5) uses RMSprop as the paper's (``LMTrainConfig(optimizer="rmsprop")``:
PyTorch's RMSprop, alpha 0.99, eps 1e-8 outside the sqrt, no momentum, no bias correction) on the raw
gradient: no gradient-norm clipping (``Setup.dpo_max_grad_norm = 0``), as the paper's DPO trainer
(``common_dpo/trainers/dpo_trainer.py``: backward, then ``optimizer.step()``). The earlier results below were
measured with the library's default clipping at 1.0 (``--set dpo_max_grad_norm=1``), which was active at
the SFT model (single-pair gradient norms up to 27, above 1 at the first update for 88% of the pairs, in 59%
of the full-set updates) and, through RMSprop's second-moment average, changed the later steps. The SFT phase
keeps AdamW (clipped at 1.0). The learning rate
stays 1e-4 (3e-4 the robustness check), chosen before any RMSprop run: RMSprop's per-parameter step is
about lr, as Adam's, so 1e-4 is the same step scale as the AdamW runs (the paper's 1e-7 is for 1B-8B
models; this model is ~0.1M parameters). Without bias correction RMSprop's first steps are larger
(lr / sqrt(1 - 0.99^t): 10x at t = 1, 3.2x at t = 10, 1.3x at t = 100), as in the paper's runs.
``--optimizer adamw --set dpo_max_grad_norm=1`` reruns the previous AdamW protocol unchanged.

In larger models (``--set hidden_size=128 --set num_layers=4``, 256 x 4; diagnostics in experiments/RESULTS.md)
the per-pair Spearman rises to 0.34-0.43, still below 0.5, while the CHES-tertile subsets separate as the
paper's Figure 2 (at 256 x 4 the bottom tertile's y+ rises) and the CHES filter helps.

Result at the defaults (RMSprop without clipping, lr 1e-4; 3 seeds; one core, 88 s): the §15(d) claim is
NOT reproduced, and dropping the clipping changed no conclusion. Single-pair Spearman(CHES, -Delta) = 0.23
(seeds 0.30, 0.22, 0.18; 95% CI 0.07..0.39; p = 2e-6, 7e-4, 7e-3); pooled 0.23 (p = 2e-10); ln-CHES -0.01;
largest decrease 0.18; after 1 update 0.22. 29% of pairs drop (median final DPO loss 0.07); single-pair
tertiles +2.53, +4.06, -1.09 (``truncated`` pairs: lowest CHES, 56% drop, within-kind Spearman 0.72;
``extended``: highest CHES, -5.96, 81% drop). DPO on each CHES tertile alone: -1.64 (bottom; seeds -0.19,
-1.71, -3.02), -2.95, -3.86 (top); top minus bottom -2.22 (CI -7.9..+3.5). Full set -3.28 (CI -5.0..-1.6).
Removing the top half by CHES / ln-CHES raises the kept pairs' Delta by +1.23 / +1.33 (CI -1.9..+4.4 /
-2.4..+5.1; 2 / 3 of 3 seeds), a random half by -0.77 (CI -2.0..+0.5). lr 3e-4: Spearman 0.32 (CI 0.23..0.41).
The paper's filter size (a diagnostic run, ``--set removed_fraction=0.95``: keep 12 of 240 pairs, 75 s): the
kept pairs' Delta rises by +4.85 with CHES (CI -2.8..+12.5), +2.80 with ln-CHES (CI -3.6..+9.2) and +5.43 with a
random 5% (CI +2.0..+8.8): the small set's own y+ rises whichever pairs it holds; CHES - random -0.57.

With clipping at 1.0 (``--set dpo_max_grad_norm=1``; otherwise the same; 96 s on a shared core): the §15(d)
claim is NOT reproduced. Single-pair Spearman(CHES, -Delta) = 0.24 (seeds 0.30, 0.23, 0.18; 95% CI
0.09..0.38; p = 3e-6, 3e-4, 5e-3, so positive and significant in every seed, but below 0.5); pooled 0.24
(p = 6e-11); ln-CHES -0.02; with the largest decrease as the measure 0.17. 29% of pairs end with
log pi(y+) lower (median final DPO loss 0.06); by CHES tertile the single-pair Delta is +2.79, +4.41, -1.24
(not monotone: ``truncated`` pairs have the lowest CHES yet 55% of them drop, ``extended`` pairs the
highest CHES and drop most, -6.6, 85% of them). DPO on each CHES tertile alone lowers log pi(y+) in every
tertile: -1.61 (bottom; seeds -0.38, -1.42, -3.04), -3.23, -3.38 (top): ordered as the paper's Figure 2,
but the bottom does not rise and top minus bottom = -1.77 (95% CI -6.6..+3.0). The full-set run displaces
(-3.01 on all pairs, CI -3.73..-2.28). Removing the top half by CHES / ln-CHES raises the kept pairs'
Delta by +0.70 / +1.28 (95% CI -3.7..+5.1 / -2.3..+4.9; 2 / 3 of 3 seeds), a random half by -0.81: in
the direction of the paper, not significant. These pair-set runs are sensitive to float rounding: when
the trainers began to precompute the reference log-probs themselves (the same values to ~1e-6), the
filtering gains moved from +1.39 / +1.52 / -0.24 to the numbers above; no conclusion changed. lr 3e-4: Spearman 0.33 (CI 0.26..0.40).

Previous result (AdamW lr 1e-4, clipping at 1.0: ``--optimizer adamw --set dpo_max_grad_norm=1``; rerun after the switch:
the same numbers, 83 s on the same core): Spearman
0.19 (seeds 0.27, 0.19, 0.12; 95% CI 0.01..0.38; p = 2e-5, 3e-3, 0.06), ln-CHES 0.03, largest decrease
0.14; 34% of pairs dropping; single-pair tertiles +1.17, +2.64, -1.67; tertile subsets -1.19 (seeds +0.59,
-1.25, -2.90), -2.79, -3.54, top minus bottom -2.35 (CI -10.9..+6.2); full set -2.35 (CI -4.37..-0.33);
filtering by CHES / ln-CHES +0.55 / +0.68 (CI -1.5..+2.6 / -3.3..+4.7; 2 of 3 seeds each), random -0.69;
lr 3e-4: Spearman 0.28. The switch to the paper's optimiser changes no conclusion: the Spearman and the
filtering effects move toward the paper (0.19 -> 0.24, all within the other's CI), the bottom-tertile
subset moves away from it (-1.19 -> -1.58, top minus bottom -2.35 -> -1.72). The design
before that (20 SFT epochs to the floor, 8 single-pair updates, top third removed) gave Spearman 0.39,
16% of pairs dropping, and no filtering benefit.

Writes config.json, metrics.jsonl (SFT and pair-set-run training curves),
result.json (the numbers below, mean_ci95 over seeds, claim booleans), and the
plots ches_scatter.png and displacement.png.
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

from experiments.common import add_run_arguments, apply_overrides, setup_run
from rljax.core.config import ConfigError, require, to_dict
from rljax.core.logging import MetricsWriter, write_json
from rljax.core.stats import mean_ci95
from rljax.lm.data import PreferenceData, tokenize_preferences, tokenize_sft
from rljax.lm.model import LanguageModel, LMConfig
from rljax.lm.train import SEQUENCE_FIELDS, LMHParams, LMTrainConfig, make_train
from rljax.losses import preference
from rljax.losses.dice import tree_dot
from rljax.core.plotting import plt, save_figure

NAME = "likelihood-displacement"
DESCRIPTION = "Likelihood displacement in DPO: CHES vs the drop of log pi(y+), and CHES filtering (Razin et al., 2025)"
PAIR_KINDS = ("synonym", "wrong_class", "other_prompt", "truncated", "extended")
FILTERS = ("ches", "ln_ches", "random")
TERTILES = ("bottom", "middle", "top")
SPEARMAN_THRESHOLD = 0.5
# rmsprop: the paper's DPO runs; adamw: this experiment's previous result; sgd: plain gradient steps, whose first
# step is the first-order change that CHES's theory describes (a diagnostic: --optimizer sgd --set pair_steps=1)
DPO_OPTIMIZERS = ("rmsprop", "adamw", "sgd")


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything that fixes a run (``--set field=value`` overrides any field)."""

    # task
    num_groups: int = 8  # token classes
    synonyms: int = 4  # interchangeable tokens per class
    prompt_vocab: int = 16
    prompt_length: int = 2
    num_prompts: int = 32
    min_response: int = 3
    max_response: int = 5
    max_edit: int = 3  # extended pairs append 1..max_edit tokens
    sft_samples_per_prompt: int = 32
    # model
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    # SFT: one epoch at batch 32, as the paper's initial SFT phase (Section 3), so the model is not at its floor
    sft_batch_size: int = 32
    sft_epochs: int = 1
    sft_learning_rate: float = 3e-3
    # pairs and DPO
    num_pairs: int = 240  # a multiple of 6 (tertiles; half removed by a filter)
    beta: float = 0.1
    pair_steps: int = 100  # single-pair DPO updates (the paper's single-example runs: 101 epochs of one example)
    pair_learning_rate: float = 1e-4  # the claim's setting
    sweep_learning_rates: tuple[float, ...] = (1e-4, 3e-4)
    pair_chunk: int = 60  # pairs trained side by side (vmap) per lax.map step
    dpo_batch_size: int = 16
    dpo_steps: int = 240  # updates of every pair-set run (full, filtered, CHES-tertile subsets alike)
    dpo_eval_every: int = 30  # Delta log pi(y+) of every pair is recorded every this many updates
    dpo_learning_rate: float = 1e-4
    # every DPO run (single-pair, tertile subsets, filtering); SFT keeps AdamW. "rmsprop": PyTorch's RMSprop
    # (alpha 0.99, eps 1e-8), the paper's optimiser; "adamw": the previous result (see the docstring)
    dpo_optimizer: str = "rmsprop"
    # gradient-norm clipping of every DPO run; 0 = none, as the paper's DPO trainer (common_dpo/trainers/dpo_trainer.py:
    # backward, then torch RMSprop step, no clipping). The results before this field existed used 1.0.
    dpo_max_grad_norm: float = 0.0
    removed_fraction: float = 1 / 2
    seeds: int = 3
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "sweep_learning_rates", tuple(float(x) for x in self.sweep_learning_rates))
        for name in ("num_groups", "prompt_vocab", "prompt_length", "num_prompts", "sft_samples_per_prompt",
                     "num_pairs", "pair_steps", "dpo_steps", "seeds", "pair_chunk", "max_edit"):
            require(getattr(self, name) >= 1, f"Setup.{name}: expected a positive int, got {getattr(self, name)!r}")
        require(self.synonyms >= 2, f"Setup.synonyms: expected >= 2 (a synonym swap needs two), got {self.synonyms}")
        require(
            2 <= self.min_response <= self.max_response,
            f"Setup.min_response/max_response: expected 2 <= min <= max, got {self.min_response}, {self.max_response}",
        )
        require(
            self.prompt_vocab ** self.prompt_length >= self.num_prompts,
            f"Setup.num_prompts: {self.num_prompts} distinct prompts do not fit in prompt_vocab ** prompt_length = "
            f"{self.prompt_vocab ** self.prompt_length}",
        )
        require(
            self.dpo_steps % self.dpo_eval_every == 0,
            f"Setup.dpo_eval_every: {self.dpo_eval_every} must divide dpo_steps = {self.dpo_steps}",
        )
        require(
            self.dpo_optimizer in DPO_OPTIMIZERS,
            f"Setup.dpo_optimizer: expected one of {DPO_OPTIMIZERS}, got {self.dpo_optimizer!r}",
        )
        require(
            self.dpo_max_grad_norm >= 0,
            f"Setup.dpo_max_grad_norm: expected >= 0 (0: no clipping), got {self.dpo_max_grad_norm}",
        )
        require(0 < self.removed_fraction < 1, f"Setup.removed_fraction: expected in (0, 1), got {self.removed_fraction}")
        require(
            self.num_pairs % 3 == 0 and self.num_pairs % self.num_kept == 0 and self.num_pairs // 3 >= self.dpo_batch_size,
            f"Setup.num_pairs: every pair-set run trains on num_pairs rows (a CHES tertile repeated 3 times, a filtered "
            f"set repeated num_pairs / num_kept times), so num_pairs ({self.num_pairs}) must be divisible by 3 and by "
            f"num_kept ({self.num_kept}), and a tertile must hold one DPO batch ({self.dpo_batch_size})",
        )
        require(
            self.pair_learning_rate in self.sweep_learning_rates,
            f"Setup.sweep_learning_rates: must contain pair_learning_rate = {self.pair_learning_rate}, "
            f"got {self.sweep_learning_rates}",
        )

    @property
    def num_kept(self) -> int:
        return self.num_pairs - int(round(self.num_pairs * self.removed_fraction))

    @property
    def pad_id(self) -> int:
        return self.num_groups * self.synonyms + self.prompt_vocab

    @property
    def eos_id(self) -> int:
        return self.pad_id + 1

    @property
    def vocab_size(self) -> int:
        return self.eos_id + 1

    @property
    def max_length(self) -> int:
        return self.prompt_length + self.max_response + self.max_edit + 1  # + eos

    def model(self) -> LMConfig:
        return LMConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
            num_heads=self.num_heads, max_position_embeddings=self.max_length, style="llama",
        )  # fmt: skip


QUICK = dict(
    num_prompts=8, sft_samples_per_prompt=8, hidden_size=16, num_layers=1, num_heads=2, sft_batch_size=32,
    sft_epochs=1, num_pairs=30, pair_steps=3, sweep_learning_rates=(1e-4,), pair_chunk=30, dpo_batch_size=5,
    dpo_steps=4, dpo_eval_every=2, seeds=2,
)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def make_task(setup: Setup, seed: int):
    """One seed's task: SFT data, preference pairs and their kind / edit size. Deterministic in ``seed``."""
    rng = np.random.default_rng([setup.seed, seed])
    G, S = setup.num_groups, setup.synonyms
    first_prompt_token = G * S
    prompts, seen = [], set()
    while len(prompts) < setup.num_prompts:
        p = tuple(int(t) for t in rng.integers(first_prompt_token, first_prompt_token + setup.prompt_vocab, setup.prompt_length))
        if p not in seen:
            seen.add(p)
            prompts.append(list(p))
    lengths = rng.integers(setup.min_response, setup.max_response + 1, setup.num_prompts)
    classes = [rng.integers(0, G, n) for n in lengths]

    def realize(cls):
        return [int(c * S + rng.integers(S)) for c in cls]

    reps = setup.sft_samples_per_prompt
    sft = tokenize_sft(
        [prompts[i] for i in range(setup.num_prompts) for _ in range(reps)],
        [realize(classes[i]) for i in range(setup.num_prompts) for _ in range(reps)],
        None, setup.max_length, add_bos=False, pad_id=setup.pad_id, eos_id=setup.eos_id,
    )  # fmt: skip

    prompt_rows, chosen, rejected, kinds, edits = [], [], [], [], []
    for n in range(setup.num_pairs):
        i = int(rng.integers(setup.num_prompts))
        yp = realize(classes[i])
        kind = n % len(PAIR_KINDS)
        L = len(yp)
        if PAIR_KINDS[kind] == "other_prompt":
            j = int((i + 1 + rng.integers(setup.num_prompts - 1)) % setup.num_prompts) if setup.num_prompts > 1 else i
            yn = realize(classes[j])
            k = len(yn)
        elif PAIR_KINDS[kind] == "truncated":
            k = int(rng.integers(1, L))
            yn = yp[: L - k]
        elif PAIR_KINDS[kind] == "extended":
            k = int(rng.integers(1, setup.max_edit + 1))
            yn = yp + [int(t) for t in rng.integers(0, G * S, k)]
        else:
            k = int(rng.integers(1, L + 1))
            yn = list(yp)
            for q in rng.choice(L, k, replace=False):
                c, s = divmod(yp[q], S)
                if PAIR_KINDS[kind] == "synonym":
                    yn[q] = c * S + int((s + 1 + rng.integers(S - 1)) % S)
                else:
                    other = int((c + 1 + rng.integers(G - 1)) % G)
                    yn[q] = other * S + int(rng.integers(S))
        if yn == yp:  # only possible for other_prompt with identical classes and draws; keep pairs distinct
            yn = yp + [int(rng.integers(0, G * S))]
        prompt_rows.append(prompts[i])
        chosen.append(yp)
        rejected.append(yn)
        kinds.append(kind)
        edits.append(k)
    pairs = tokenize_preferences(
        prompt_rows, chosen, rejected, None, setup.max_length, add_bos=False, pad_id=setup.pad_id, eos_id=setup.eos_id,
    )  # fmt: skip
    # Token-NLL floor of SFT: each of a response's L slots has entropy log S; eos is certain.
    ideal_nll = float(np.log(S) * lengths.sum() / (lengths + 1).sum())
    return sft, pairs, np.asarray(kinds), np.asarray(edits), ideal_nll


def pair_fields(pairs: PreferenceData) -> dict[str, np.ndarray]:
    return {f: np.asarray(getattr(pairs, f), np.int32) for f in SEQUENCE_FIELDS["dpo"]}


def stack(dicts):
    return {k: np.stack([d[k] for d in dicts]) for k in dicts[0]}


# ---------------------------------------------------------------------------
# Model pieces
# ---------------------------------------------------------------------------


def side_outputs(model: LMConfig, params, data, name: str):
    """One side (``name``: "chosen" or "rejected") of pairs ``[N, T]``: (hidden [N, T, H], completion mask, log pi [N])."""
    ids, attn, mask = (data[f"{name}_{f}"] for f in ("input_ids", "attention_mask", "completion_mask"))
    out = LanguageModel(model).apply({"params": params}, ids, attn)
    return out.hidden, mask, preference.sequence_logps(preference.token_logps(out.logits, ids), mask)


def make_forward(model: LMConfig):
    """``(params, pairs) -> (ches, ln_ches, logp_chosen, logp_rejected)``, each [N]."""

    def forward(params, data):
        h_c, m_c, lp_c = side_outputs(model, params, data, "chosen")
        h_r, m_r, lp_r = side_outputs(model, params, data, "rejected")
        ches = preference.ches_score(h_c, m_c, h_r, m_r, length_normalized=False)
        ln_ches = preference.ches_score(h_c, m_c, h_r, m_r, length_normalized=True)
        return ches, ln_ches, lp_c, lp_r

    return forward


def make_gradient_ches(model: LMConfig, chunk: int):
    """``(params, pairs [N, T]) -> [N]``: CHES's exact first-order counterpart ``<g+, g-> - ||g+||^2``,
    ``g+-`` = the gradient of log pi(y+- | x) over every parameter.

    One plain gradient step (rate lr) of DPO on a pair alone, from its reference, changes log pi(y+) by
    ``-lr beta / 2`` times this, to first order, so it ranks ``-Delta log pi(y+)`` of ``--optimizer sgd
    --set pair_steps=1`` almost exactly. CHES is the same inner product over the last hidden states only
    (exact in the unconstrained-features model of the paper's analysis); how well the two agree measures
    the proxy. ``chunk`` pairs at a time keep two gradient copies per pair in memory.
    """

    def one(params, row):
        row = jax.tree.map(lambda x: x[None], row)
        logp = lambda p, name: side_outputs(model, p, row, name)[2][0]  # noqa: E731
        g_c, g_r = jax.grad(logp)(params, "chosen"), jax.grad(logp)(params, "rejected")
        return tree_dot(g_c, g_r) - tree_dot(g_c, g_c)

    return lambda params, pairs: jax.lax.map(lambda row: one(params, row), pairs, batch_size=chunk)


def train_sft(setup: Setup, sft_sets):
    model = setup.model()
    config = LMTrainConfig(model=model, objective="sft", batch_size=setup.sft_batch_size, num_epochs=setup.sft_epochs)
    trainer = make_train(config, sft_sets[0])
    hp = LMHParams(learning_rate=setup.sft_learning_rate)
    data = stack([{f: np.asarray(getattr(s, f), np.int32) for f in SEQUENCE_FIELDS["sft"]} for s in sft_sets])

    def run(key, d):
        state = trainer.init_from(key, hp, data=d)
        state, metrics = trainer.run_updates(state, trainer.num_updates)
        return state.params, metrics["loss"]

    keys = jax.random.split(jax.random.key(setup.seed), setup.seeds)
    return over_seeds(jax.jit(run), keys, {k: jnp.asarray(v) for k, v in data.items()})


def over_seeds(fn, *args):
    """``fn`` (one seed, jitted) on each seed's slice of ``args`` (leading axis S); outputs stacked on axis 0.

    A loop rather than ``vmap``: on CPU it runs about as fast, and the program
    compiles in about half the time (compiling is most of a --quick run).
    """
    outs = [fn(*jax.tree.map(lambda x: x[s], args)) for s in range(jax.tree.leaves(args)[0].shape[0])]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


def dpo_train_config(setup: Setup, batch_size: int) -> LMTrainConfig:
    """The trainer settings of every DPO run: ``setup.dpo_optimizer``, reference log-probs of the SFT model,
    and clipping at ``setup.dpo_max_grad_norm`` (0: none, as the paper's runs)."""
    return LMTrainConfig(
        model=setup.model(), objective="dpo", batch_size=batch_size, num_epochs=1, reference="precomputed",
        optimizer=setup.dpo_optimizer, max_grad_norm=setup.dpo_max_grad_norm,
    )  # fmt: skip


def make_single_pair_dpo(setup: Setup, template: PreferenceData):
    """``(params, pairs [N, T], lr) -> (logp_chosen, logp_rejected)``, each [N, pair_steps]: the pair's
    log-probs after each of ``pair_steps`` DPO updates on that pair alone (pairs trained side by side)."""
    model = setup.model()
    trainer = make_train(dpo_train_config(setup, batch_size=1), template.take(np.array([0])))
    forward = make_forward(model)

    def one(params, row, lr):
        hp = LMHParams(learning_rate=lr, beta=setup.beta)
        data = jax.tree.map(lambda x: x[None], row)

        def step(state, _):
            state, _ = trainer.update(state)
            _, _, lp_c, lp_r = forward(state.params, data)
            return state, (lp_c[0], lp_r[0])

        _, (lp_c, lp_r) = jax.lax.scan(step, trainer.init_from(jax.random.key(0), hp, params, data), None, length=setup.pair_steps)
        return lp_c, lp_r

    def run(params, pairs, lr):
        return jax.lax.map(lambda row: one(params, row, lr), pairs, batch_size=setup.pair_chunk)

    return jax.jit(run)


def make_dataset_dpo(setup: Setup, template: PreferenceData, size: int):
    """``(keys [S], params [S], train pairs [S, size, T], eval pairs [S, N, T])`` -> (seed by seed)
    ``(logp_chosen [S, checkpoints, N], loss [S, dpo_steps])``: DPO on ``train`` for ``dpo_steps``
    updates (the same for every data set size), evaluated every ``dpo_eval_every`` updates."""
    model = setup.model()
    trainer = make_train(dpo_train_config(setup, batch_size=setup.dpo_batch_size), template.take(np.arange(size)))
    forward = make_forward(model)
    hp = LMHParams(learning_rate=setup.dpo_learning_rate, beta=setup.beta)

    def run(key, params, train, evaluate):
        def segment(state, _):
            state, metrics = trainer.run_updates(state, setup.dpo_eval_every)
            _, _, lp_c, _ = forward(state.params, evaluate)
            return state, (lp_c, metrics["loss"])

        checkpoints = setup.dpo_steps // setup.dpo_eval_every
        _, (lp_c, loss) = jax.lax.scan(segment, trainer.init_from(key, hp, params, train), None, length=checkpoints)
        return lp_c, loss.reshape(-1)

    return functools.partial(over_seeds, jax.jit(run))


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


def take_rows(data, rows):
    """``{field: [S, N, ...]}`` -> the rows ``rows`` [S, M] of each seed: ``{field: [S, M, ...]}`` (numpy)."""
    rows = np.asarray(rows)
    return {k: np.take_along_axis(np.asarray(v), rows.reshape(rows.shape + (1,) * (np.ndim(v) - 2)), axis=1) for k, v in data.items()}


def spearman(score, drop) -> dict[str, float]:
    """Spearman's rho with its p-value; a constant input (no ranking, e.g. no pair ever dropped) counts as rho 0, p 1."""
    if np.ptp(score) == 0 or np.ptp(drop) == 0:
        return {"rho": 0.0, "p_value": 1.0, "n": int(len(score)), "constant_input": True}
    res = scipy_stats.spearmanr(score, drop)
    return {"rho": float(res.statistic), "p_value": float(res.pvalue), "n": int(len(score))}


def tertile_means(score, delta) -> list[float]:
    """Mean of ``delta`` in the bottom, middle and top third of pairs by ``score``."""
    order = np.argsort(score, kind="stable")
    return [float(delta[part].mean()) for part in np.array_split(order, 3)]


def kept_indices(setup: Setup, how: str, ches, ln_ches, rng) -> np.ndarray:
    """Sorted indices of the pairs kept by a filter that removes ``removed_fraction`` of them."""
    if how == "random":
        return np.sort(rng.choice(setup.num_pairs, setup.num_kept, replace=False))
    score = {"ches": ches, "ln_ches": ln_ches}[how]
    return np.sort(np.argsort(score, kind="stable")[: setup.num_kept])  # drop the highest scores


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def plot_scatter(path, ches, ln_ches, delta, kinds, result):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, score, name, key in ((axes[0], ches, "CHES", "ches"), (axes[1], ln_ches, "length-normalised CHES", "ln_ches")):
        for k, kind in enumerate(PAIR_KINDS):
            m = kinds == k
            ax.scatter(score[m], delta[m], s=10, alpha=0.6, label=kind)
        ax.axhline(0.0, color="k", linewidth=0.8)
        s = result["single_pair"]["spearman_pooled"][key]
        ax.set_xlabel(f"{name} (SFT model)")
        ax.set_ylabel("Δ log π(y+) after single-pair DPO")
        ax.set_title(f"{name}: Spearman(score, −Δ) = {s['rho']:.2f} (p = {s['p_value']:.1e})", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    save_figure(fig, path)


def plot_displacement(path, result):
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    names = list(TERTILES)
    x = np.arange(3)
    for offset, (label, cis, color) in enumerate((
        ("single-pair DPO", [result["single_pair"]["tertiles"]["ches"][n] for n in names], "tab:gray"),
        ("DPO on the tertile's pairs", [result["subsets"][n]["own_pairs"] for n in names], "tab:red"),
    )):
        means = np.array([c["mean"] for c in cis])
        errs = [means - [c["ci95_low"] for c in cis], np.array([c["ci95_high"] for c in cis]) - means]
        axes[0].bar(x + 0.4 * offset - 0.2, means, width=0.4, yerr=errs, color=color, capsize=4, label=label)
    axes[0].set_xticks(x, names)
    axes[0].axhline(0.0, color="k", linewidth=0.8)
    axes[0].set_xlabel("CHES tertile")
    axes[0].set_title("mean Δ log π(y+) per CHES tertile", fontsize=10)
    axes[0].set_ylabel("Δ log π(y+) (mean over seeds, 95% CI)")
    axes[0].legend(fontsize=8)

    filt = result["filtering"]
    labels, means, lows, highs, colors = [], [], [], [], []
    for how in FILTERS:
        for run, color in (("full", "tab:blue"), ("filtered", "tab:orange")):
            ci = filt[how][f"{run}_on_kept"]
            name = "full set" if run == "full" else ("random half out" if how == "random" else "top half out")
            labels.append(f"{name}\n[{how}]")
            means.append(ci["mean"])
            lows.append(ci["mean"] - ci["ci95_low"])
            highs.append(ci["ci95_high"] - ci["mean"])
            colors.append(color)
    x = np.arange(len(labels))
    axes[1].bar(x, means, yerr=[lows, highs], color=colors, capsize=4)
    axes[1].set_xticks(x, labels, fontsize=8)
    axes[1].set_xlabel("[filter]: Δ measured on the pairs that filter keeps")
    axes[1].axhline(0.0, color="k", linewidth=0.8)
    steps = result["setup"]["dpo_steps"]
    axes[1].set_title(f"DPO on the pair set, {steps} updates: Δ log π(y+) on the kept pairs", fontsize=10)
    axes[1].set_ylabel("Δ log π(y+) (mean over seeds, 95% CI)")

    for how, color in zip(FILTERS, ("tab:red", "tab:purple", "tab:gray")):
        curve = filt[how]["curve"]
        u = [c["update"] for c in curve]
        m = np.array([c["filtered_minus_full_on_kept"]["mean"] for c in curve])
        lo = [c["filtered_minus_full_on_kept"]["ci95_low"] for c in curve]
        hi = [c["filtered_minus_full_on_kept"]["ci95_high"] for c in curve]
        axes[2].plot(u, m, marker="o", color=color, label=f"{how} filter")
        axes[2].fill_between(u, lo, hi, color=color, alpha=0.15)
    axes[2].axhline(0.0, color="k", linewidth=0.8)
    axes[2].set_xlabel("DPO updates")
    axes[2].set_ylabel("Δ log π(y+) on kept pairs: filtered − full")
    axes[2].set_title("> 0: filtering reduced displacement", fontsize=10)
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3)
    save_figure(fig, path)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a tiny smoke-test configuration (seconds)")
    parser.add_argument("--seeds", type=int, help="independent tasks/SFT models/pair sets (default 3, quick 2)")
    parser.add_argument("--seed", type=int, default=0, help="base seed")
    parser.add_argument(
        "--optimizer", choices=DPO_OPTIMIZERS, default="rmsprop",
        help="optimiser of every DPO run (default rmsprop, the paper's; adamw with --set dpo_max_grad_norm=1 "
        "reproduces the previous AdamW result; sgd with --set pair_steps=1 measures the first-order change)",
    )
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a Setup field")
    add_run_arguments(parser, NAME)


def main(args: argparse.Namespace) -> dict:
    if getattr(args, "resume", None):
        raise ConfigError("--resume: this experiment has no checkpoints (a full run takes minutes); start a new run")
    changes = dict(QUICK) if args.quick else {}
    changes["seed"] = args.seed
    changes["dpo_optimizer"] = getattr(args, "optimizer", "rmsprop")
    if args.seeds is not None:
        changes["seeds"] = args.seeds
    (setup,) = apply_overrides(args.set, Setup(), **changes)
    run_dir = setup_run(args, NAME)
    write_json(os.path.join(run_dir, "config.json"), {"experiment": NAME, "quick": bool(args.quick), "setup": to_dict(setup)})
    say = (lambda *a: None) if args.no_progress else print
    timings = {}
    start_time = time.perf_counter()

    # 1. tasks and SFT (one compiled program, run seed by seed)
    tasks = [make_task(setup, s) for s in range(setup.seeds)]
    sft_sets = [t[0] for t in tasks]
    pair_sets = [t[1] for t in tasks]
    kinds = np.stack([t[2] for t in tasks])
    edits = np.stack([t[3] for t in tasks])
    ideal_nll = [t[4] for t in tasks]
    t0 = time.perf_counter()
    sft_params, sft_loss = train_sft(setup, sft_sets)
    sft_loss = np.asarray(sft_loss)  # [S, updates]
    timings["sft"] = time.perf_counter() - t0
    say(f"SFT: {setup.seeds} seeds x {sft_loss.shape[1]} updates, final token NLL "
        f"{sft_loss[:, -1].round(3).tolist()} (floor {np.round(ideal_nll, 3).tolist()}), {timings['sft']:.0f} s")

    # 2. CHES and log-probs of every pair under each seed's SFT model
    model = setup.model()
    forward = jax.jit(jax.vmap(make_forward(model)))
    pairs = stack([pair_fields(p) for p in pair_sets])  # [S, N, T], numpy (sliced and gathered on the host)
    # The SFT model is also the DPO reference; the trainers precompute its log-probs (reference="precomputed").
    ches, ln_ches, ref_c, ref_r = forward(sft_params, pairs)
    ches, ln_ches, lp0_c, lp0_r = (np.asarray(x, np.float64) for x in (ches, ln_ches, ref_c, ref_r))
    gradient_ches = np.asarray(over_seeds(jax.jit(make_gradient_ches(model, setup.pair_chunk)), sft_params, pairs), np.float64)

    # 3. single-pair DPO, every pair alone, at each learning rate of the sweep
    t0 = time.perf_counter()
    single = make_single_pair_dpo(setup, pair_sets[0])
    delta, delta_rejected = {}, {}  # lr -> [S, pair_steps, N] change of log pi(y+), log pi(y-)
    for lr in setup.sweep_learning_rates:
        outs = [
            single(jax.tree.map(lambda x: x[s], sft_params), jax.tree.map(lambda x: x[s], pairs), jnp.float32(lr))
            for s in range(setup.seeds)
        ]
        delta[lr] = np.stack([np.asarray(c, np.float64).T for c, _ in outs]) - lp0_c[:, None]
        delta_rejected[lr] = np.stack([np.asarray(r, np.float64).T for _, r in outs]) - lp0_r[:, None]
    timings["single_pair_dpo"] = time.perf_counter() - t0
    main_delta = delta[setup.pair_learning_rate][:, -1]  # [S, N] after pair_steps updates
    say(f"single-pair DPO: {setup.seeds} x {setup.num_pairs} pairs x {len(setup.sweep_learning_rates)} learning rates, "
        f"{timings['single_pair_dpo']:.0f} s")

    # 4. DPO on pair sets, the same number of updates each: the full set; each CHES tertile alone (the
    #    paper's Figure 2: DPO on a subset of pairs at one CHES quantile); the set without the top-scoring half
    #    (Section 6 filters by ln-CHES). Every run trains on num_pairs rows (a subset repeated), so one
    #    compiled program serves all of them.
    t0 = time.perf_counter()
    rng = np.random.default_rng([setup.seed, 10_000])
    kept = {how: np.stack([kept_indices(setup, how, ches[s], ln_ches[s], rng) for s in range(setup.seeds)]) for how in FILTERS}
    tertile_rows = np.stack([np.stack(np.array_split(np.argsort(ches[s], kind="stable"), 3)) for s in range(setup.seeds)])  # [S, 3, N/3]
    train_rows = {"full": np.tile(np.arange(setup.num_pairs), (setup.seeds, 1))}
    train_rows |= {f"tertile_{name}": np.tile(tertile_rows[:, t], 3) for t, name in enumerate(TERTILES)}
    train_rows |= {f"filter_{how}": np.tile(kept[how], setup.num_pairs // setup.num_kept) for how in FILTERS}
    keys = jax.random.split(jax.random.key(setup.seed + 1), setup.seeds)
    set_run = make_dataset_dpo(setup, pair_sets[0], setup.num_pairs)
    dpo_delta, dpo_loss = {}, {}  # run -> [S, checkpoints, N], [S, dpo_steps]
    for run, rows in train_rows.items():
        lp, loss = set_run(keys, sft_params, take_rows(pairs, rows), pairs)
        dpo_delta[run] = np.asarray(lp, np.float64) - lp0_c[:, None]
        dpo_loss[run] = np.asarray(loss)
    timings["pair_set_dpo"] = time.perf_counter() - t0
    say(f"pair-set DPO: {len(train_rows)} runs x {setup.seeds} seeds x {setup.dpo_steps} updates, {timings['pair_set_dpo']:.0f} s")

    result = summarize(setup, ches, ln_ches, gradient_ches, kinds, edits, delta, delta_rejected, (lp0_c, lp0_r), kept,
                       tertile_rows, dpo_delta, dpo_loss)
    result |= {
        "quick": bool(args.quick),
        "sft": {
            "updates": int(sft_loss.shape[1]),
            "final_token_nll_per_seed": sft_loss[:, -1].tolist(),
            "token_nll_floor_per_seed": ideal_nll,
            "mean_logp_chosen": float(lp0_c.mean()),
            "mean_logp_rejected": float(lp0_r.mean()),
        },
        "wall_seconds": time.perf_counter() - start_time,
        "timings_seconds": timings,
        "devices": jax.device_count(),
    }

    writer = MetricsWriter(run_dir)
    for u in range(sft_loss.shape[1]):
        writer.write({"phase": "sft", "update": u, "loss/per_seed": sft_loss[:, u]})
    for run, loss in dpo_loss.items():
        for u in range(loss.shape[1]):
            writer.write({"phase": f"dpo_{run}", "update": u, "loss/per_seed": loss[:, u]})
    writer.close()
    write_json(os.path.join(run_dir, "result.json"), result)
    plot_scatter(os.path.join(run_dir, "ches_scatter.png"), ches.ravel(), ln_ches.ravel(), main_delta.ravel(), kinds.ravel(), result)
    plot_displacement(os.path.join(run_dir, "displacement.png"), result)

    sp, filt, claims = result["single_pair"], result["filtering"], result["claims"]
    say(f"Spearman(CHES, -Δ log π(y+)) per seed {[round(r['rho'], 3) for r in sp['spearman_per_seed']['ches']]} "
        f"(mean {sp['spearman_mean']['ches']['mean']:.3f}); ln-CHES "
        f"{[round(r['rho'], 3) for r in sp['spearman_per_seed']['ln_ches']]}; gradient CHES (exact first order) "
        f"{[round(r['rho'], 3) for r in sp['spearman_per_seed']['gradient_ches']]}; "
        f"Spearman(CHES, gradient CHES) {[round(r['rho'], 3) for r in sp['ches_vs_gradient_ches']]}")
    say(f"single-pair: {sp['fraction_pairs_with_drop']:.0%} of pairs drop, final DPO loss median "
        f"{sp['final_dpo_loss']['median']:.3f}; Spearman(CHES, largest decrease) "
        f"{sp['largest_decrease']['spearman_mean']['ches']['mean']:.3f}")
    say("single-pair mean Δ log π(y+) by CHES tertile (bottom, middle, top): "
        + ", ".join(f"{sp['tertiles']['ches'][n]['mean']:+.3f}" for n in TERTILES))
    sub = result["subsets"]
    say(f"DPO on each CHES tertile alone, {setup.dpo_steps} updates: Δ log π(y+) on its own pairs (bottom, middle, top): "
        + ", ".join(f"{sub[n]['own_pairs']['mean']:+.3f}" for n in TERTILES))
    for how in FILTERS:
        f = filt[how]
        say(f"filter {how:>7}: Δ log π(y+) on kept pairs after {setup.dpo_steps} updates: full {f['full_on_kept']['mean']:+.4f}, "
            f"filtered {f['filtered_on_kept']['mean']:+.4f} (difference {f['filtered_minus_full_on_kept']['mean']:+.4f}, 95% CI "
            f"{f['filtered_minus_full_on_kept']['ci95_low']:+.4f} .. {f['filtered_minus_full_on_kept']['ci95_high']:+.4f}); "
            f"own set minus full set {f['own_set_filtered_minus_full']['mean']:+.4f}")
    say(f"claims: {claims}")
    say(f"wrote {run_dir} ({result['wall_seconds']:.0f} s)")
    return result


def largest_decrease(delta) -> np.ndarray:
    """The paper's single-example measure (persona results printer): the largest drop of log pi(y+) from any
    point of training to a later one, the start included. ``delta`` [..., steps, N] -> [..., N], >= 0."""
    d = np.concatenate([np.zeros_like(delta[..., :1, :]), delta], axis=-2)
    return (np.maximum.accumulate(d, axis=-2) - d).max(axis=-2)


def summarize(setup: Setup, ches, ln_ches, gradient_ches, kinds, edits, delta, delta_rejected, ref, kept, tertile_rows, dpo_delta,
              dpo_loss) -> dict:
    """The numbers of result.json. Shapes: scores, kinds, edits [S, N]; delta[lr] [S, pair_steps, N];
    ref = SFT log pi(y+), log pi(y-) [S, N]; kept[filter] [S, num_kept]; tertile_rows [S, 3, N/3];
    dpo_delta[run] [S, checkpoints, N]; dpo_loss[run] [S, dpo_steps]."""
    S, N = ches.shape
    scores = (("ches", ches), ("ln_ches", ln_ches), ("gradient_ches", gradient_ches))
    main_delta = delta[setup.pair_learning_rate][:, -1]
    drop = -main_delta
    per_seed = {key: [spearman(score[s], drop[s]) for s in range(S)] for key, score in scores}
    rho = {key: mean_ci95([r["rho"] for r in per_seed[key]]) for key, _ in scores}
    largest = largest_decrease(delta[setup.pair_learning_rate])  # [S, N]
    per_seed_largest = {key: [spearman(score[s], largest[s]) for s in range(S)] for key, score in scores}
    tertiles = {}
    for key, score in scores:
        per = np.array([tertile_means(score[s], main_delta[s]) for s in range(S)])  # [S, 3]
        tertiles[key] = {name: mean_ci95(per[:, i]) for i, name in enumerate(TERTILES)}
        tertiles[key]["per_seed"] = per.tolist()
    rejected = delta_rejected[setup.pair_learning_rate][:, -1]
    margin = setup.beta * (main_delta - rejected)  # the DPO margin at the end of single-pair training
    final_loss = np.logaddexp(0.0, -margin)  # -log sigmoid(margin)
    by_kind = {}
    for k, kind in enumerate(PAIR_KINDS):
        m = kinds == k
        if not m.any():
            continue
        by_kind[kind] = {
            "n": int(m.sum()),
            "mean_ches": float(ches[m].mean()),
            "mean_ln_ches": float(ln_ches[m].mean()),
            "mean_delta_logp_chosen": float(main_delta[m].mean()),
            "sd_delta_logp_chosen": float(main_delta[m].std()),
            "fraction_with_drop": float((main_delta[m] < 0).mean()),
            "mean_largest_decrease": float(largest[m].mean()),
            "mean_delta_logp_rejected": float(rejected[m].mean()),
            "median_final_dpo_loss": float(np.median(final_loss[m])),
            "mean_edit_size": float(edits[m].mean()),
            "spearman_ches_within_kind": spearman(ches[m], drop[m])["rho"] if m.sum() > 2 else None,
        }
    sweep = {}
    for lr in setup.sweep_learning_rates:
        d = delta[lr]
        loss_lr = np.logaddexp(0.0, -setup.beta * (d[:, -1] - delta_rejected[lr][:, -1]))
        sweep[f"{lr:g}"] = {
            "spearman_mean_by_step": {
                key: [float(np.mean([spearman(score[s], -d[s, t])["rho"] for s in range(S)])) for t in range(d.shape[1])]
                for key, score in scores
            },
            "spearman_final": {key: mean_ci95([spearman(score[s], -d[s, -1])["rho"] for s in range(S)]) for key, score in scores},
            "spearman_largest_decrease": {
                key: mean_ci95([spearman(score[s], largest_decrease(d)[s])["rho"] for s in range(S)]) for key, score in scores
            },
            "mean_delta_logp_chosen": float(d[:, -1].mean()),
            "fraction_with_drop": float((d[:, -1] < 0).mean()),
            "mean_delta_logp_rejected": float(delta_rejected[lr][:, -1].mean()),
            "median_final_dpo_loss": float(np.median(loss_lr)),
        }

    def on(d, rows):  # mean over each seed's rows: d [S, N], rows [S, M] -> [S]
        return np.array([d[s, rows[s]].mean() for s in range(S)])

    checkpoints = [setup.dpo_eval_every * (c + 1) for c in range(dpo_delta["full"].shape[1])]
    # The paper's Figure 2: DPO on the pairs of one CHES quantile; Delta log pi(y+) averaged over that subset.
    subsets = {"checkpoints": checkpoints}
    for t, name in enumerate(TERTILES):
        run, rows = dpo_delta[f"tertile_{name}"], tertile_rows[:, t]
        subsets[name] = {
            "own_pairs": mean_ci95(on(run[:, -1], rows)),
            "own_pairs_per_seed": on(run[:, -1], rows).tolist(),
            "own_pairs_curve": [mean_ci95(on(run[:, c], rows)) for c in range(run.shape[1])],
            "full_run_same_pairs": mean_ci95(on(dpo_delta["full"][:, -1], rows)),
            "mean_ches": float(np.mean([ches[s, rows[s]].mean() for s in range(S)])),
            "final_loss": mean_ci95(dpo_loss[f"tertile_{name}"][:, -1]),
        }
    subset_means = np.array([on(dpo_delta[f"tertile_{n}"][:, -1], tertile_rows[:, t]) for t, n in enumerate(TERTILES)])
    subsets["top_minus_bottom"] = mean_ci95(subset_means[2] - subset_means[0])

    filtering = {"checkpoints": checkpoints, "final_loss_full": mean_ci95(dpo_loss["full"][:, -1])}
    reduction = {}  # filter -> [S] (filtered - full) on its kept pairs at the final checkpoint
    full = dpo_delta["full"][:, -1]
    for how in FILTERS:
        rows = kept[how]
        removed = np.stack([np.setdiff1d(np.arange(N), rows[s]) for s in range(S)])
        filt = dpo_delta[f"filter_{how}"][:, -1]
        full_kept, filt_kept = on(full, rows), on(filt, rows)
        reduction[how] = filt_kept - full_kept
        curve = [
            {
                "update": u,
                "full_on_kept": mean_ci95(on(dpo_delta["full"][:, c], rows)),
                "filtered_on_kept": mean_ci95(on(dpo_delta[f"filter_{how}"][:, c], rows)),
                "filtered_minus_full_on_kept": mean_ci95(
                    on(dpo_delta[f"filter_{how}"][:, c], rows) - on(dpo_delta["full"][:, c], rows)
                ),
            }
            for c, u in enumerate(checkpoints)
        ]
        filtering[how] = {
            "full_on_kept": mean_ci95(full_kept),
            "filtered_on_kept": mean_ci95(filt_kept),  # = the filtered run's own training pairs
            "filtered_minus_full_on_kept": mean_ci95(reduction[how]),
            # the paper's comparison: each run's Delta log pi(y+) on its own training set
            "own_set_filtered_minus_full": mean_ci95(filt_kept - full.mean(axis=1)),
            "full_on_all": mean_ci95(full.mean(axis=1)),
            "full_on_removed": mean_ci95(on(full, removed)),
            "filtered_on_removed": mean_ci95(on(filt, removed)),
            "final_loss_filtered": mean_ci95(dpo_loss[f"filter_{how}"][:, -1]),
            "per_seed": {"full_on_kept": full_kept.tolist(), "filtered_on_kept": filt_kept.tolist()},
            "curve": curve,
        }
    filtering["ches_minus_random_reduction"] = mean_ci95(reduction["ches"] - reduction["random"])
    filtering["ln_ches_minus_random_reduction"] = mean_ci95(reduction["ln_ches"] - reduction["random"])

    claims = {
        "ches_spearman_above_0.5": bool(rho["ches"]["mean"] > SPEARMAN_THRESHOLD),
        "ches_spearman_significant_every_seed": bool(all(r["p_value"] < 0.05 and r["rho"] > 0 for r in per_seed["ches"])),
        "ln_ches_spearman_above_0.5": bool(rho["ln_ches"]["mean"] > SPEARMAN_THRESHOLD),
        "ches_spearman_largest_decrease_above_0.5": bool(
            np.mean([r["rho"] for r in per_seed_largest["ches"]]) > SPEARMAN_THRESHOLD
        ),
        "single_pair_top_ches_tertile_drops": bool(tertiles["ches"]["top"]["mean"] < 0),
        "single_pair_bottom_ches_tertile_rises": bool(tertiles["ches"]["bottom"]["mean"] > 0),
        "subset_top_ches_tertile_drops": bool(subsets["top"]["own_pairs"]["mean"] < 0),
        "subset_bottom_ches_tertile_rises": bool(subsets["bottom"]["own_pairs"]["mean"] > 0),
        "subset_top_below_bottom_ci95": bool(subsets["top_minus_bottom"]["ci95_high"] < 0),
        "displacement_in_full_run": bool(filtering["ches"]["full_on_all"]["mean"] < 0),
        "ln_ches_filter_reduces_displacement_on_kept": bool(filtering["ln_ches"]["filtered_minus_full_on_kept"]["mean"] > 0),
        "ches_filter_reduces_displacement_on_kept": bool(filtering["ches"]["filtered_minus_full_on_kept"]["mean"] > 0),
        "ln_ches_filter_reduces_displacement_own_set": bool(filtering["ln_ches"]["own_set_filtered_minus_full"]["mean"] > 0),
        "ln_ches_filter_beats_random_filter": bool(filtering["ln_ches_minus_random_reduction"]["mean"] > 0),
        "ches_filter_beats_random_filter": bool(filtering["ches_minus_random_reduction"]["mean"] > 0),
    }
    # papers/preference-lm.md §15(d): Spearman > 0.5, the top CHES tertile drops and the bottom rises.
    claims["claim_holds"] = bool(
        claims["ches_spearman_above_0.5"] and claims["subset_top_ches_tertile_drops"] and claims["subset_bottom_ches_tertile_rises"]
    )
    return {
        "experiment": NAME,
        "paper": "Razin et al., ICLR 2025, Unintentional Unalignment (papers/preference-lm.md §15)",
        "seeds": S,
        "setup": to_dict(setup),
        "single_pair": {
            "learning_rate": setup.pair_learning_rate,
            "steps": setup.pair_steps,
            "spearman_per_seed": per_seed,
            "spearman_mean": rho,
            "spearman_pooled": {key: spearman(score.ravel(), drop.ravel()) for key, score in scores},
            # How well CHES (last hidden states) ranks pairs as its exact first-order counterpart does.
            "ches_vs_gradient_ches": [spearman(ches[s], gradient_ches[s]) for s in range(S)],
            "largest_decrease": {
                "spearman_per_seed": per_seed_largest,
                "spearman_mean": {key: mean_ci95([r["rho"] for r in per_seed_largest[key]]) for key, _ in scores},
                "mean": float(largest.mean()),
            },
            "tertiles": tertiles,
            "by_kind": by_kind,
            "mean_delta_logp_chosen": float(main_delta.mean()),
            "fraction_pairs_with_drop": float((main_delta < 0).mean()),
            "final_dpo_loss": {"median": float(np.median(final_loss)), "mean": float(final_loss.mean()),
                               "fraction_below_0.1": float((final_loss < 0.1).mean())},
            "initial_logp_chosen_mean": float(ref[0].mean()),
            "learning_rate_sweep": sweep,
        },
        "subsets": subsets,
        "filtering": filtering,
        "claims": claims,
    }
