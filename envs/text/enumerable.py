"""Token-sequence spaces small enough to enumerate, gold rewards over them, exact divergences.

``SequenceSpace(vocab_size=V, length=L)`` holds all ``V**L`` sequences in
lexicographic order: row ``i`` of ``space.sequences`` is ``i`` written in base
``V``, most significant digit first, so for ``V=2, L=2`` the rows are
``[0,0], [0,1], [1,0], [1,1]``. With a policy's log-probabilities over every
row (``logp`` ``[V**L]``) the KL, entropy and expected gold reward are exact
sums, not Monte-Carlo estimates: the tabular ground truth for the preference
experiments (papers/preference-lm.md §3, §6, §10, §15), best-of-n sampling included
(:func:`best_of_n_logp`).

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


def random_mlp_reward(key, vocab_size: int, embed_dim: int = 16, hidden_size: int = 32) -> Callable:
    """A random nonlinear gold reward: a 2-layer tanh MLP on the mean of frozen random token embeddings.

    ``embedding [V, embed_dim] ~ N(0, 1)``; ``r(y) = w2 . tanh(W1^T mean_t embedding[y_t] + b1)`` with
    ``W1 ~ N(0, 1 / embed_dim)``, ``b1 ~ N(0, 1)``, ``w2 ~ N(0, 1 / hidden_size)`` (the gold reward of the
    reward-ensemble digest, papers/preference-lm.md §6). It depends on the bag of tokens, not their order.
    Returns ``reward(seqs [..., L]) -> [...]`` float32; ``key``: a JAX PRNG key or an int seed.
    """
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    k_emb, k_w1, k_b1, k_w2 = jax.random.split(key, 4)
    embedding = jax.random.normal(k_emb, (vocab_size, embed_dim), jnp.float32)
    w1 = jax.random.normal(k_w1, (embed_dim, hidden_size), jnp.float32) / np.sqrt(embed_dim)
    b1 = jax.random.normal(k_b1, (hidden_size,), jnp.float32)
    w2 = jax.random.normal(k_w2, (hidden_size,), jnp.float32) / np.sqrt(hidden_size)

    @jax.jit
    def reward(seqs):
        pooled = embedding[jnp.asarray(seqs)].mean(axis=-2)  # [..., embed_dim]
        return jnp.tanh(pooled @ w1 + b1) @ w2

    return reward


@jax.jit
def gaussian_peak_reward(seqs, peak: float, width: float):
    """Mean over positions of ``exp(-((y_t - peak) / width) ** 2)`` (Tajwar et al. 2024's bandit reward): ``[..., L]`` -> ``[...]``."""
    y = jnp.asarray(seqs, jnp.float32)
    return jnp.mean(jnp.exp(-(((y - peak) / width) ** 2)), axis=-1)


# ---------------------------------------------------------------- distributions over the space


def random_product_distribution(key, vocab_size: int, length: int, logit_std: float = 1.0) -> np.ndarray:
    """Probabilities ``[V**L]`` (float64, in ``SequenceSpace`` row order) of independent tokens per
    position, ``softmax(N(0, logit_std^2))`` each: a broad, non-uniform base distribution."""
    logits = jax.random.normal(key, (length, vocab_size)) * logit_std
    token_logp = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)  # [L, V]
    seqs = SequenceSpace(vocab_size, length).sequences
    logp = token_logp[np.arange(length), seqs].sum(axis=1)
    return np.exp(logp - np.logaddexp.reduce(logp))


def prompted_rows(space: SequenceSpace, prompt_token: int = 0):
    """Every sequence after a one-token prompt, for one batched forward of a model over the whole space:
    ``input_ids``, ``attention_mask``, ``completion_mask``, each ``[V**L, L+1]`` (JAX int32; the
    completion mask is 0 on the prompt)."""
    n = space.size
    ids = np.concatenate([np.full((n, 1), prompt_token, np.int32), space.sequences], axis=1)
    attention = np.ones_like(ids)
    completion = attention.copy()
    completion[:, 0] = 0
    return jnp.asarray(ids), jnp.asarray(attention), jnp.asarray(completion)


@jax.jit
def best_of_n_logp(base_logp, scores, n):
    """Exact log-probabilities ``[S]`` of best-of-n selection: draw ``n`` sequences i.i.d. from the base
    distribution ``exp(base_logp)`` ``[S]`` and keep the one of highest ``scores`` ``[S]``.

    Ties in ``scores`` are broken by row index (the later row wins), which makes the order strict. With
    ``C_j`` the base mass of the rows ranked at or below row ``j``, best-of-n picks ``j`` with probability
    ``C_j^n - C_{j-1}^n = C_j^n (1 - (C_{j-1} / C_j)^n)``, computed in log space from the mass ranked
    *above* ``j`` (exactly 0 for the top row), so that it stays accurate for small masses and large ``n``
    in float32. ``n`` may be traced (vmap over several ``n``).
    """
    base_logp, scores = jnp.asarray(base_logp, jnp.float32), jnp.asarray(scores, jnp.float32)
    n = jnp.asarray(n, jnp.float32)
    order = jnp.lexsort((jnp.arange(scores.shape[0]), scores))  # ascending: score, then row
    p = jnp.exp(base_logp[order])
    total = p.sum()
    above = jnp.cumsum(p[::-1])[::-1] - p  # mass ranked strictly above each row
    at_or_below = jnp.maximum(total - above, p)
    log_c = jnp.log1p(-above / total)  # log C_j
    # (C_{j-1} / C_j)^n = exp(n log1p(-p_j / (C_j total))); log1p(-1) = -inf for the lowest row.
    ratio_log = n * jnp.log1p(-jnp.minimum(p / jnp.where(at_or_below > 0, at_or_below, 1.0), 1.0))
    logp_sorted = n * log_c + jnp.log(-jnp.expm1(ratio_log))
    logp_sorted = jnp.where(p > 0, logp_sorted, -jnp.inf)
    return jnp.zeros_like(logp_sorted).at[order].set(logp_sorted)


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
    "MAX_SEQUENCES", "SequenceSpace", "best_of_n_logp", "exact_entropy", "exact_expectation", "exact_kl",
    "gaussian_peak_reward", "position_weighted_reward", "prompted_rows", "random_linear_reward",
    "random_mlp_reward", "random_product_distribution", "token_count_reward",
]
