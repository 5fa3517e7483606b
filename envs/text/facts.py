"""Fictitious-fact corpora for the Reversal Curse (Berglund et al. 2023), at the token-id level.

Each fact pairs a *name* with a *description*, both short random token
sequences. Facts are written in two directions with paraphrase templates:

    P2D (name -> description):  prefix  NAME  infix  DESC
    D2P (description -> name):  prefix  DESC  infix  NAME

The prompt is everything up to the second entity and the completion is the
second entity, so exact-match evaluation is "greedy-decode the completion".
Facts fall into three groups, as in the paper (papers/preference-lm.md §4):
``P2D_ONLY`` facts are trained only name->description, ``D2P_ONLY`` only
description->name, ``BOTH`` in both directions. Each direction has its own
training templates and held-out test templates (never seen in training).
Tests for all facts in both directions are provided; the reverse test of a
``P2D_ONLY`` fact is its ``test_d2p`` rows (description -> name).

Token layout (defaults give ``vocab_size = 320``)::

    0                 pad
    1                 bos
    2                 eos
    3 ..              template tokens   (num_template_tokens = 61: ids 3..63)
    .. ..             name tokens       (num_name_tokens = 128: ids 64..191)
    .. vocab_size-1   description tokens (num_desc_tokens = 128: ids 192..319)

Names and descriptions use disjoint token ranges, so an entity's kind is
visible in its tokens; no entity is a prefix of another (their first
``min length`` tokens are distinct), so exact match is unambiguous.
Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed
gives the same corpus.

To train: ``rljax.lm.data.tokenize_sft(ex.prompts, ex.completions, None,
corpus.max_length, pad_id=corpus.pad_id, bos_id=corpus.bos_id, eos_id=corpus.eos_id)``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

PAD, BOS, EOS = 0, 1, 2
FIRST_TEMPLATE_TOKEN = 3
P2D, D2P = 0, 1  # directions
DIRECTIONS = ("p2d", "d2p")
P2D_ONLY, D2P_ONLY, BOTH = 0, 1, 2  # groups
GROUPS = ("p2d_only", "d2p_only", "both")


@dataclasses.dataclass(frozen=True, eq=False)
class FactExamples:
    """``M`` prompt/completion examples (ragged: token-id arrays of varying length).

    prompts:      ``M`` int32 arrays, ``prefix + first entity + infix``
    completions:  ``M`` int32 arrays, the second entity
    fact:         ``[M]`` int32, the fact each example states
    template:     ``[M]`` int32, index into the direction's template list (train or test)
    direction:    ``[M]`` int32, ``P2D`` (0) or ``D2P`` (1)
    """

    prompts: tuple[np.ndarray, ...]
    completions: tuple[np.ndarray, ...]
    fact: np.ndarray
    template: np.ndarray
    direction: np.ndarray

    def __len__(self) -> int:
        return len(self.prompts)

    def where(self, mask) -> "FactExamples":
        """The examples where ``mask`` (``[M]`` bool) is true, e.g. ``ex.where(corpus.group[ex.fact] == P2D_ONLY)``."""
        mask = np.asarray(mask, bool)
        if mask.shape != (len(self),):
            raise ValueError(f"FactExamples.where: mask must be [{len(self)}] bool, got shape {mask.shape}")
        keep = np.flatnonzero(mask)
        return FactExamples(
            tuple(self.prompts[i] for i in keep), tuple(self.completions[i] for i in keep),
            self.fact[keep], self.template[keep], self.direction[keep],
        )

    def __add__(self, other: "FactExamples") -> "FactExamples":
        return FactExamples(
            self.prompts + other.prompts, self.completions + other.completions,
            np.concatenate([self.fact, other.fact]), np.concatenate([self.template, other.template]),
            np.concatenate([self.direction, other.direction]),
        )

    def sequences(self) -> list[np.ndarray]:
        """Full sequences ``prompt + completion`` (no bos/eos), one int32 array per example."""
        return [np.concatenate([p, c]) for p, c in zip(self.prompts, self.completions)]


@dataclasses.dataclass(frozen=True, eq=False)
class FactCorpus:
    """A fictitious-fact corpus (see the module docstring for layout and groups).

    names, descriptions:  ``num_facts`` int32 arrays each (3-4 tokens by default)
    group:                ``[num_facts]`` int32: ``P2D_ONLY``, ``D2P_ONLY`` or ``BOTH``
    templates:            ``{"p2d_train", "p2d_test", "d2p_train", "d2p_test"}`` ->
                          tuple of ``(prefix, infix)`` int32 array pairs, all distinct
    train_p2d:            P2D examples of ``P2D_ONLY`` and ``BOTH`` facts, every train template
    train_d2p:            D2P examples of ``D2P_ONLY`` and ``BOTH`` facts, every train template
    test_p2d, test_d2p:   every fact, every held-out template of that direction
    token_ranges:         ``{"template", "name", "description"}`` -> ``(start, stop)``
    """

    names: tuple[np.ndarray, ...]
    descriptions: tuple[np.ndarray, ...]
    group: np.ndarray
    templates: dict[str, tuple[tuple[np.ndarray, np.ndarray], ...]]
    train_p2d: FactExamples
    train_d2p: FactExamples
    test_p2d: FactExamples
    test_d2p: FactExamples
    token_ranges: dict[str, tuple[int, int]]
    vocab_size: int
    seed: int
    pad_id: int = PAD
    bos_id: int = BOS
    eos_id: int = EOS

    @property
    def num_facts(self) -> int:
        return len(self.names)

    @property
    def train(self) -> FactExamples:
        """All training examples (P2D then D2P)."""
        return self.train_p2d + self.train_d2p

    @property
    def max_length(self) -> int:
        """Longest ``bos + prompt + completion + eos`` over train and test: a ``max_length`` that fits every example."""
        every = self.train + self.test_p2d + self.test_d2p
        return max(len(p) + len(c) for p, c in zip(every.prompts, every.completions)) + 2


def _lengths(value, name: str) -> tuple[int, int]:
    lo, hi = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if not 1 <= lo <= hi:
        raise ValueError(f"make_fact_corpus: {name} must be an int >= 1 or a (min, max) pair with 1 <= min <= max, got {value!r}")
    return int(lo), int(hi)


def _entities(rng, count: int, lengths: tuple[int, int], start: int, stop: int, name: str) -> tuple[np.ndarray, ...]:
    """``count`` random token sequences from ``[start, stop)`` whose first ``min length`` tokens are all distinct."""
    lo, hi = lengths
    if (stop - start) ** lo < 4 * count:
        raise ValueError(
            f"make_fact_corpus: {stop - start} {name} tokens ** length {lo} gives too few distinct {name}s for "
            f"{count} facts; use more tokens or longer {name}s"
        )
    out, heads = [], set()
    while len(out) < count:
        seq = rng.integers(start, stop, size=int(rng.integers(lo, hi + 1))).astype(np.int32)
        head = tuple(seq[:lo].tolist())
        if head not in heads:
            heads.add(head)
            out.append(seq)
    return tuple(out)


def _examples(facts, first, second, templates, direction) -> FactExamples:
    prompts, completions, fact_ids, template_ids = [], [], [], []
    for f in facts:
        for t, (prefix, infix) in enumerate(templates):
            prompts.append(np.concatenate([prefix, first[f], infix]).astype(np.int32))
            completions.append(second[f])
            fact_ids.append(f)
            template_ids.append(t)
    m = len(prompts)
    return FactExamples(
        tuple(prompts), tuple(completions), np.asarray(fact_ids, np.int32).reshape(m),
        np.asarray(template_ids, np.int32).reshape(m), np.full(m, direction, np.int32),
    )


def make_fact_corpus(
    seed: int = 0,
    num_facts: int = 60,
    name_len: int | tuple[int, int] = (3, 4),
    desc_len: int | tuple[int, int] = (3, 4),
    *,
    num_train_templates: int = 10,
    num_test_templates: int = 5,
    prefix_len: int = 1,
    infix_len: int = 2,
    num_template_tokens: int = 61,
    num_name_tokens: int = 128,
    num_desc_tokens: int = 128,
    group_sizes: Sequence[int] | None = None,
) -> FactCorpus:
    """A Reversal-Curse corpus of ``num_facts`` name/description facts in three groups.

    Args:
      seed: numpy seed; the corpus is a deterministic function of all arguments.
      num_facts: facts in all; split into ``group_sizes`` ``(p2d_only, d2p_only,
        both)``, by default thirds (any remainder to the first groups). The paper
        used 3 x 30; the minimal CPU experiment 60 (papers/preference-lm.md §4).
      name_len, desc_len: entity length in tokens, an int or an inclusive
        ``(min, max)`` range (default 3-4 tokens, as in the minimal experiment).
      num_train_templates, num_test_templates: paraphrase templates per
        direction for training and held out for testing (the paper: 30 and 10).
      prefix_len, infix_len: template tokens before the first entity and between
        the two entities.
      num_template_tokens, num_name_tokens, num_desc_tokens: sizes of the three
        disjoint token ranges after pad/bos/eos; ``vocab_size`` is 3 + their sum.
    """
    rng = np.random.default_rng(seed)
    name_lengths, desc_lengths = _lengths(name_len, "name_len"), _lengths(desc_len, "desc_len")
    for label, value, minimum in (
        ("num_facts", num_facts, 1), ("num_train_templates", num_train_templates, 1),
        ("num_test_templates", num_test_templates, 1), ("prefix_len", prefix_len, 0), ("infix_len", infix_len, 0),
        ("num_template_tokens", num_template_tokens, 1), ("num_name_tokens", num_name_tokens, 2),
        ("num_desc_tokens", num_desc_tokens, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"make_fact_corpus: {label} must be an int >= {minimum}, got {value!r}")
    if group_sizes is None:
        base, extra = divmod(num_facts, 3)
        group_sizes = tuple(base + (g < extra) for g in range(3))
    group_sizes = tuple(int(s) for s in group_sizes)
    if len(group_sizes) != 3 or min(group_sizes) < 0 or sum(group_sizes) != num_facts:
        raise ValueError(
            f"make_fact_corpus: group_sizes must be 3 non-negative ints (p2d_only, d2p_only, both) summing to "
            f"num_facts={num_facts}, got {group_sizes}"
        )

    template_range = (FIRST_TEMPLATE_TOKEN, FIRST_TEMPLATE_TOKEN + num_template_tokens)
    name_range = (template_range[1], template_range[1] + num_name_tokens)
    desc_range = (name_range[1], name_range[1] + num_desc_tokens)
    vocab_size = desc_range[1]

    names = _entities(rng, num_facts, name_lengths, *name_range, "name")
    descriptions = _entities(rng, num_facts, desc_lengths, *desc_range, "description")

    # Templates: (prefix, infix) token sequences, all distinct across the four sets.
    counts = {"p2d_train": num_train_templates, "p2d_test": num_test_templates,
              "d2p_train": num_train_templates, "d2p_test": num_test_templates}
    needed, possible = sum(counts.values()), num_template_tokens ** (prefix_len + infix_len)
    if possible < 2 * needed:
        raise ValueError(
            f"make_fact_corpus: {num_template_tokens} template tokens ** (prefix_len {prefix_len} + infix_len "
            f"{infix_len}) = {possible} templates, too few for {needed} distinct ones; use more tokens or longer templates"
        )
    seen: set[tuple[int, ...]] = set()
    templates: dict[str, tuple[tuple[np.ndarray, np.ndarray], ...]] = {}
    for kind, count in counts.items():
        drawn = []
        while len(drawn) < count:
            tokens = rng.integers(*template_range, size=prefix_len + infix_len).astype(np.int32)
            if tuple(tokens.tolist()) not in seen:
                seen.add(tuple(tokens.tolist()))
                drawn.append((tokens[:prefix_len], tokens[prefix_len:]))
        templates[kind] = tuple(drawn)

    group = np.repeat(np.arange(3, dtype=np.int32), group_sizes)
    all_facts = np.arange(num_facts)
    p2d_facts = np.flatnonzero((group == P2D_ONLY) | (group == BOTH))
    d2p_facts = np.flatnonzero((group == D2P_ONLY) | (group == BOTH))
    return FactCorpus(
        names=names,
        descriptions=descriptions,
        group=group,
        templates=templates,
        train_p2d=_examples(p2d_facts, names, descriptions, templates["p2d_train"], P2D),
        train_d2p=_examples(d2p_facts, descriptions, names, templates["d2p_train"], D2P),
        test_p2d=_examples(all_facts, names, descriptions, templates["p2d_test"], P2D),
        test_d2p=_examples(all_facts, descriptions, names, templates["d2p_test"], D2P),
        token_ranges={"template": template_range, "name": name_range, "description": desc_range},
        vocab_size=vocab_size,
        seed=int(seed),
    )


__all__ = [
    "BOS", "BOTH", "D2P", "D2P_ONLY", "DIRECTIONS", "EOS", "FactCorpus", "FactExamples", "GROUPS", "P2D",
    "P2D_ONLY", "PAD", "make_fact_corpus",
]
