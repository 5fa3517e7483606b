"""Token-sequence spaces small enough to enumerate, gold rewards over them, exact divergences.

``SequenceSpace(vocab_size=V, length=L)`` holds all ``V**L`` sequences in
lexicographic order: row ``i`` of ``space.sequences`` is ``i`` written in base
``V``, most significant digit first, so for ``V=2, L=2`` the rows are
``[0,0], [0,1], [1,0], [1,1]``. With a policy's log-probabilities over every
row (``logp`` ``[V**L]``) the KL, entropy and expected gold reward are exact
sums, not Monte-Carlo estimates: the tabular ground truth for the preference
experiments (papers/preference-lm.md §3, §10, §15).

Gold rewards take token sequences ``[..., L]`` (integer, numpy or JAX) and
return ``[...]`` float32; they and the exact quantities are jitted JAX
functions (one compilation per shape), callable inside ``jit`` and ``vmap``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

MAX_SEQUENCES = 2**20


class SequenceSpace:
    """All ``vocab_size ** length`` token sequences of a fixed length (at most ``2**20`` of them).

    Attributes:
      vocab_size, length: ``V``, ``L``.
      size: ``V**L`` (also ``len(space)``).
      sequences: ``[size, L]`` int32, lexicographic (row ``i`` is ``i`` in base ``V``).
    """

    def __init__(self, vocab_size: int, length: int):
        for name, value in (("vocab_size", vocab_size), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SequenceSpace: {name} must be a positive int, got {value!r}")
        size = int(vocab_size) ** int(length)
        if size > MAX_SEQUENCES:
            raise ValueError(
                f"SequenceSpace: vocab_size {vocab_size} ** length {length} = {size} sequences, more than the "
                f"{MAX_SEQUENCES} (2**20) that can be enumerated; use a smaller vocab or length"
            )
        self.vocab_size, self.length, self.size = int(vocab_size), int(length), size
        self._sequences: np.ndarray | None = None

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"SequenceSpace(vocab_size={self.vocab_size}, length={self.length}, size={self.size})"

    @property
    def sequences(self) -> np.ndarray:
        """``[size, L]`` int32, row ``i`` = ``i`` in base ``V`` (most significant first). Built once, read-only."""
        if self._sequences is None:
            powers = self.vocab_size ** np.arange(self.length - 1, -1, -1, dtype=np.int64)
            seqs = (np.arange(self.size, dtype=np.int64)[:, None] // powers) % self.vocab_size
            seqs = seqs.astype(np.int32)
            seqs.flags.writeable = False
            self._sequences = seqs
        return self._sequences

    def index(self, seqs):
        """Row index of each sequence: ``[..., L]`` -> ``[...]`` int32 (JAX; works under ``jit``)."""
        seqs = jnp.asarray(seqs)
        if seqs.shape[-1] != self.length:
            raise ValueError(f"SequenceSpace.index: expected sequences of length {self.length}, got shape {seqs.shape}")
        powers = jnp.asarray(self.vocab_size ** np.arange(self.length - 1, -1, -1), jnp.int32)
        return jnp.sum(seqs.astype(jnp.int32) * powers, axis=-1)


# ---------------------------------------------------------------- gold rewards


@jax.jit
def token_count_reward(seqs, token: int):
    """Number of times ``token`` occurs: ``[..., L]`` -> ``[...]`` float32."""
    return jnp.sum(jnp.asarray(seqs) == token, axis=-1).astype(jnp.float32)


@jax.jit
def position_weighted_reward(seqs, weights):
    """Linear reward over one-hot tokens, ``r(y) = sum_t weights[t, y_t]``: ``[..., L]`` -> ``[...]`` float32.

    ``weights``: ``[L, V]``.
    """
    seqs, weights = jnp.asarray(seqs), jnp.asarray(weights, jnp.float32)
    if weights.ndim != 2 or weights.shape[0] != seqs.shape[-1]:
        raise ValueError(
            f"position_weighted_reward: weights must be [length, vocab] = [{seqs.shape[-1]}, V], got {weights.shape}"
        )
    per_position = weights[jnp.arange(seqs.shape[-1]), seqs]  # [..., L]
    return jnp.sum(per_position, axis=-1)


def random_linear_reward(key, vocab_size: int, length: int, scale: float = 1.0) -> Callable:
    """A random linear gold reward: ``weights[t, v] ~ N(0, scale**2 / length)``, so ``r(y)`` has std ``scale``.

    Returns ``reward(seqs [..., L]) -> [...]`` (a ``functools.partial`` of
    :func:`position_weighted_reward`; the weights are ``reward.keywords["weights"]``).
    ``key``: a JAX PRNG key or an int seed.
    """
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    weights = jax.random.normal(key, (length, vocab_size), jnp.float32) * (scale / np.sqrt(length))
    return functools.partial(position_weighted_reward, weights=weights)


@jax.jit
def gaussian_peak_reward(seqs, peak: float, width: float):
    """Mean over positions of ``exp(-((y_t - peak) / width) ** 2)`` (Tajwar et al. 2024's bandit reward): ``[..., L]`` -> ``[...]``."""
    y = jnp.asarray(seqs, jnp.float32)
    return jnp.mean(jnp.exp(-(((y - peak) / width) ** 2)), axis=-1)


# ---------------------------------------------------------------- exact quantities


@functools.partial(jax.jit, static_argnames="axis")
def exact_kl(logp, logq, axis: int = -1):
    """``KL(p || q) = sum p (log p - log q)`` over ``axis`` (the enumerated sequences), exact.

    ``logp``, ``logq``: log-probabilities of normalised distributions, ``[..., num_seqs]``.
    Terms with ``p = 0`` are 0; ``q = 0`` where ``p > 0`` gives ``inf``.
    """
    logp, logq = jnp.asarray(logp), jnp.asarray(logq)
    p = jnp.exp(logp)
    support = p > 0
    # Inner wheres keep -inf out of the unused branch, so gradients stay finite.
    terms = p * (jnp.where(support, logp, 0.0) - jnp.where(support, logq, 0.0))
    return jnp.sum(jnp.where(support, terms, 0.0), axis=axis)


@functools.partial(jax.jit, static_argnames="axis")
def exact_entropy(logp, axis: int = -1):
    """``H(p) = -sum p log p`` over ``axis``, with ``0 log 0 = 0``. ``logp``: ``[..., num_seqs]``."""
    logp = jnp.asarray(logp)
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * jnp.where(p > 0, logp, 0.0), 0.0), axis=axis)


@functools.partial(jax.jit, static_argnames="axis")
def exact_expectation(logp, values, axis: int = -1):
    """``E_p[values] = sum p * values`` over ``axis`` (e.g. the exact expected gold reward)."""
    logp = jnp.asarray(logp)
    p = jnp.exp(logp)
    return jnp.sum(jnp.where(p > 0, p * jnp.asarray(values), 0.0), axis=axis)


__all__ = [
    "MAX_SEQUENCES", "SequenceSpace", "exact_entropy", "exact_expectation", "exact_kl", "gaussian_peak_reward",
    "position_weighted_reward", "random_linear_reward", "token_count_reward",
]
