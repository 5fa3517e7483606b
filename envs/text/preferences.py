"""Synthetic preference pairs labelled by a known gold reward, with optional label noise.

    a_chosen = preference_labels(key, gold_a, gold_b, label_noise)      # [N] bool
    chosen, rejected = label_pairs(key, seq_a, seq_b, gold_a, gold_b, label_noise)
    pairs = sample_preference_pairs(key, space, probs, gold_reward, num_pairs, label_noise)

The labelling rule: the sequence with the higher gold reward is chosen (a tie
is a fair coin), then each pair's label is flipped independently with
probability ``label_noise`` (0.5 = uninformative labels). ``probs`` sets the
*coverage* of the offline data: a distribution over a small subset of the
space (:func:`subset_distribution`) gives the narrow-coverage datasets of the
RPO experiment (papers/preference-lm.md §10).

To train on the pairs, with token ids ``0..V-1`` and extra ids for pad/bos/eos::

    rljax.lm.data.tokenize_preferences([[]] * len(pairs), pairs.chosen, pairs.rejected, None,
                                       space.length + 2, pad_id=V, bos_id=V + 1, eos_id=V + 2,
                                       extras={"gold_margin": pairs.gold_margin})

``key_or_seed`` arguments take a JAX PRNG key or an int seed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from envs.text.enumerable import SequenceSpace


def _key(key_or_seed):
    if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, bool):
        return jax.random.key(int(key_or_seed))
    return key_or_seed


def _check_noise(label_noise) -> None:
    if isinstance(label_noise, (int, float, np.floating, np.integer)) and not 0.0 <= float(label_noise) <= 1.0:
        raise ValueError(f"label_noise: expected a probability in [0, 1], got {label_noise}")


def preference_labels(key_or_seed, gold_a, gold_b, label_noise=0.0):
    """Whether ``a`` is chosen over ``b``: ``[N]`` bool (JAX; ``jit``-able given a key).

    ``a`` is chosen when ``gold_a > gold_b`` (ties: a fair coin), then each label
    is flipped with probability ``label_noise``. ``gold_a``, ``gold_b``: ``[N]``.
    """
    _check_noise(label_noise)
    gold_a, gold_b = jnp.asarray(gold_a), jnp.asarray(gold_b)
    if gold_a.ndim != 1 or gold_a.shape != gold_b.shape:
        raise ValueError(f"gold_a, gold_b: expected two [N] arrays of one shape, got {gold_a.shape} and {gold_b.shape}")
    return _labels(_key(key_or_seed), gold_a, gold_b, label_noise)


@jax.jit
def _labels(key, gold_a, gold_b, label_noise):
    tie_key, flip_key = jax.random.split(key)
    coin = jax.random.bernoulli(tie_key, 0.5, gold_a.shape)
    a_better = jnp.where(gold_a == gold_b, coin, gold_a > gold_b)
    flip = jax.random.uniform(flip_key, gold_a.shape) < label_noise
    return a_better != flip


def label_pairs(key_or_seed, seq_a, seq_b, gold_a, gold_b, label_noise=0.0):
    """Order pairs by gold reward with label noise: ``(chosen, rejected)``, each shaped like ``seq_a`` ``[N, ...]``.

    ``seq_a``, ``seq_b``: ``[N, L]`` (or ``[N, ...]``) token sequences; ``gold_a``,
    ``gold_b``: ``[N]`` gold rewards. See :func:`preference_labels` for the rule.
    """
    seq_a, seq_b = jnp.asarray(seq_a), jnp.asarray(seq_b)
    if seq_a.shape != seq_b.shape or seq_a.ndim < 1 or seq_a.shape[0] != jnp.shape(gold_a)[0]:
        raise ValueError(
            f"seq_a, seq_b: expected one shape [N, ...] with N = len(gold_a) = {jnp.shape(gold_a)[0]}, "
            f"got {seq_a.shape} and {seq_b.shape}"
        )
    a_chosen = preference_labels(key_or_seed, gold_a, gold_b, label_noise)
    a_chosen = a_chosen.reshape(a_chosen.shape + (1,) * (seq_a.ndim - 1))
    return jnp.where(a_chosen, seq_a, seq_b), jnp.where(a_chosen, seq_b, seq_a)


@dataclasses.dataclass(frozen=True, eq=False)
class PreferencePairs:
    """Labelled pairs drawn from a :class:`SequenceSpace` (numpy arrays).

    chosen, rejected:              ``[N, L]`` int32 token sequences
    chosen_index, rejected_index:  ``[N]`` int32 rows of ``space.sequences``
    chosen_gold, rejected_gold:    ``[N]`` float32 gold rewards
    """

    chosen: np.ndarray
    rejected: np.ndarray
    chosen_index: np.ndarray
    rejected_index: np.ndarray
    chosen_gold: np.ndarray
    rejected_gold: np.ndarray

    def __len__(self) -> int:
        return int(self.chosen.shape[0])

    @property
    def gold_margin(self) -> np.ndarray:
        """``[N]`` ``chosen_gold - rejected_gold`` (negative on flipped labels)."""
        return self.chosen_gold - self.rejected_gold


def subset_distribution(size: int, indices) -> np.ndarray:
    """Uniform probabilities ``[size]`` on ``indices`` (distinct rows), zero elsewhere: a narrow-coverage data distribution."""
    indices = np.unique(np.asarray(indices))
    if indices.size == 0 or indices.min() < 0 or indices.max() >= size:
        raise ValueError(f"subset_distribution: indices must be a non-empty set of rows in 0..{size - 1}, got {indices}")
    probs = np.zeros(size, np.float64)
    probs[indices] = 1.0 / indices.size
    return probs


def sample_preference_pairs(
    key_or_seed,
    space: SequenceSpace,
    probs,
    gold_reward: Callable | np.ndarray,
    num_pairs: int,
    label_noise: float = 0.0,
    *,
    distinct: bool = True,
    max_redraws: int = 100,
) -> PreferencePairs:
    """Draw ``num_pairs`` pairs ``(a, b)`` i.i.d. from ``probs`` and label them by ``gold_reward``.

    Args:
      space: the sequence space; ``probs`` is over its rows.
      probs: ``[space.size]`` probabilities (non-negative, summing to 1), or
        ``None`` for uniform. Use :func:`subset_distribution` for narrow coverage.
      gold_reward: ``f(seqs [N, L]) -> [N]`` or an array ``[space.size]`` of rewards.
      label_noise: probability of flipping each label.
      distinct: redraw ``b`` where it equals ``a`` (the support must have two
        or more rows), up to ``max_redraws`` rounds.
    Returns numpy arrays (a host-side data generator); deterministic in the key.
    """
    _check_noise(label_noise)
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, (int, np.integer)) or num_pairs < 1:
        raise ValueError(f"num_pairs: expected a positive int, got {num_pairs!r}")
    if probs is None:
        probs = np.full(space.size, 1.0 / space.size)
    probs = np.asarray(probs, np.float64)
    if probs.shape != (space.size,):
        raise ValueError(f"probs: expected shape ({space.size},) (one per sequence of {space}), got {probs.shape}")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or abs(probs.sum() - 1.0) > 1e-5:
        raise ValueError(f"probs: expected finite non-negative probabilities summing to 1, got sum {probs.sum()}, min {probs.min()}")
    if distinct and np.count_nonzero(probs) < 2:
        raise ValueError("probs: distinct=True needs at least 2 sequences with positive probability")
    probs_j = jnp.asarray(probs / probs.sum(), jnp.float32)
    key_draw, key_label = jax.random.split(_key(key_or_seed))
    index_a, index_b = _draw(key_draw, probs_j, int(num_pairs), bool(distinct), int(max_redraws))
    index_a, index_b = np.asarray(index_a), np.asarray(index_b)
    if distinct and np.any(index_a == index_b):
        raise ValueError(
            f"sample_preference_pairs: after {max_redraws} redraws some pairs still have a == b; "
            "probs puts almost all mass on one sequence (or pass distinct=False)"
        )
    seq_a, seq_b = space.sequences[index_a], space.sequences[index_b]
    if callable(gold_reward):
        gold_a, gold_b = gold_reward(seq_a), gold_reward(seq_b)
    else:
        table = np.asarray(gold_reward)
        if table.shape != (space.size,):
            raise ValueError(f"gold_reward: expected a callable or an array of shape ({space.size},), got {table.shape}")
        gold_a, gold_b = table[index_a], table[index_b]
    gold_a, gold_b = np.asarray(gold_a, np.float32), np.asarray(gold_b, np.float32)
    a_chosen = np.asarray(preference_labels(key_label, gold_a, gold_b, label_noise))
    return PreferencePairs(
        chosen=np.where(a_chosen[:, None], seq_a, seq_b).astype(np.int32),
        rejected=np.where(a_chosen[:, None], seq_b, seq_a).astype(np.int32),
        chosen_index=np.where(a_chosen, index_a, index_b).astype(np.int32),
        rejected_index=np.where(a_chosen, index_b, index_a).astype(np.int32),
        chosen_gold=np.where(a_chosen, gold_a, gold_b),
        rejected_gold=np.where(a_chosen, gold_b, gold_a),
    )


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _draw(key, probs, num_pairs: int, distinct: bool, max_redraws: int):
    """Row indices ``a``, ``b`` ``[num_pairs]`` i.i.d. from ``probs``; with ``distinct``, ``b`` redrawn where ``a == b``."""
    size = probs.shape[0]
    key_a, key_b, key_loop = jax.random.split(key, 3)
    index_a = jax.random.choice(key_a, size, (num_pairs,), p=probs)
    index_b = jax.random.choice(key_b, size, (num_pairs,), p=probs)
    if not distinct:
        return index_a, index_b

    def redraw(carry):
        rounds, index_b, key = carry
        key, sub = jax.random.split(key)
        fresh = jax.random.choice(sub, size, (num_pairs,), p=probs)
        return rounds + 1, jnp.where(index_a == index_b, fresh, index_b), key

    def colliding(carry):
        rounds, index_b, _ = carry
        return (rounds < max_redraws) & jnp.any(index_a == index_b)

    _, index_b, _ = jax.lax.while_loop(colliding, redraw, (0, index_b, key_loop))
    return index_a, index_b


__all__ = [
    "PreferencePairs", "label_pairs", "preference_labels", "sample_preference_pairs", "subset_distribution",
]
