"""Autoregressive sampling from :class:`~rljax.lm.model.LanguageModel` with a KV cache.

``generate(params, config, prompt_ids, prompt_mask, key, sampling) -> Generation``
is jitted with ``config`` and ``sampling`` static (both frozen, hashable
dataclasses; a new value of either compiles a new program).

Prompts are LEFT-padded: ``prompt_mask`` [B, P] is 1 on real tokens, which are
aligned right, so the next token of every row goes to the same cache slot. The
whole prompt is prefilled in one forward call (positions ``cumsum(mask) - 1``,
clipped at 0, so a row's positions start at 0 on its first real token), then a
``lax.scan`` adds one token per step into a cache of P + max_new_tokens slots.
Every prompt row needs at least one real token.

Sampling follows Hugging Face's order: logits / temperature, then top-k, then
top-p (nucleus), then a categorical draw; ``greedy`` takes the argmax of the raw
logits instead. Step t draws with ``jax.random.split(key, max_new_tokens)[t]``.
A row that has emitted ``eos_id`` is finished: its later tokens are ``pad_id``
with mask 0 and log-probs 0.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp

from rljax.core.config import require
from rljax.lm.model import KVCache, LanguageModel, LMConfig


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens (static; hashable).

    * ``max_new_tokens``: tokens generated per row (the output width).
    * ``temperature``: logits are divided by it before filtering (> 0; ignored when greedy).
    * ``top_k``: keep only the k most likely tokens (0: off).
    * ``top_p``: keep the smallest set of most likely tokens whose probability
      sums to >= top_p, always including the most likely one (1.0: off).
    * ``eos_id``: token that finishes a row (None: rows never finish early).
    * ``pad_id``: token written after a row has finished.
    * ``greedy``: take the argmax of the raw logits (temperature, top_k, top_p unused).
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    eos_id: int | None = None
    pad_id: int = 0
    greedy: bool = False

    def __post_init__(self):
        def is_int(x):
            return isinstance(x, int) and not isinstance(x, bool)

        require(
            is_int(self.max_new_tokens) and self.max_new_tokens > 0,
            f"SamplingConfig.max_new_tokens: expected a positive int, got {self.max_new_tokens!r}",
        )
        require(
            self.greedy or self.temperature > 0,
            f"SamplingConfig.temperature: expected > 0 (or greedy=True), got {self.temperature!r}",
        )
        require(
            is_int(self.top_k) and self.top_k >= 0,
            f"SamplingConfig.top_k: expected an int >= 0 (0: off), got {self.top_k!r}",
        )
        require(0 < self.top_p <= 1, f"SamplingConfig.top_p: expected a number in (0, 1], got {self.top_p!r}")
        require(
            self.eos_id is None or (is_int(self.eos_id) and self.eos_id >= 0),
            f"SamplingConfig.eos_id: expected None or an int >= 0, got {self.eos_id!r}",
        )
        require(
            is_int(self.pad_id) and self.pad_id >= 0,
            f"SamplingConfig.pad_id: expected an int >= 0, got {self.pad_id!r}",
        )


@flax.struct.dataclass
class Generation:
    """The result of :func:`generate`. N = max_new_tokens.

    * ``tokens`` [B, N] int32: generated tokens, ``pad_id`` after a row's eos.
    * ``logprobs`` [B, N] float32: log-prob of each chosen token under the model's
      UNMODIFIED distribution, ``log_softmax(raw logits)`` (temperature 1, no
      top-k/top-p), i.e. what a training forward pass over ``sequences`` gives;
      0 where ``mask`` is 0.
    * ``sampling_logprobs`` [B, N] float32: log-prob under the distribution the
      token was actually drawn from (tempered, then top-k/top-p filtered); 0 for
      greedy decoding (a point mass) and where ``mask`` is 0.
    * ``mask`` [B, N] int32: 1 on generated tokens, the eos included.
    * ``finished`` [B] bool: whether the row emitted ``eos_id``.
    * ``prompt_ids``, ``prompt_mask`` [B, P]: the (left-padded) prompt, kept for
      the full-sequence helpers below.

    Full sequences are ``[prompt, completion]``, left-padded before the prompt and
    right-padded after the eos. In a training forward pass over ``sequences``
    (with ``attention_mask`` and ``positions``), logits at index i score token
    i + 1: the completion token t is at index P + t, scored by index P + t - 1.
    """

    tokens: jax.Array
    logprobs: jax.Array
    sampling_logprobs: jax.Array
    mask: jax.Array
    finished: jax.Array
    prompt_ids: jax.Array
    prompt_mask: jax.Array

    @property
    def sequences(self) -> jax.Array:
        """[B, P + N] prompt then completion tokens."""
        return jnp.concatenate([self.prompt_ids.astype(jnp.int32), self.tokens], axis=1)

    @property
    def attention_mask(self) -> jax.Array:
        """[B, P + N] int32: 1 on real prompt tokens and generated tokens."""
        return jnp.concatenate([self.prompt_mask.astype(jnp.int32), self.mask], axis=1)

    @property
    def completion_mask(self) -> jax.Array:
        """[B, P + N] int32: 1 on generated tokens only (where a loss on the samples applies)."""
        return jnp.concatenate([jnp.zeros_like(self.prompt_mask, jnp.int32), self.mask], axis=1)

    @property
    def positions(self) -> jax.Array:
        """[B, P + N] positions for a forward pass over ``sequences`` (left padding needs them)."""
        return positions_from_mask(self.attention_mask)

    @property
    def lengths(self) -> jax.Array:
        """[B] number of generated tokens (the eos included)."""
        return self.mask.sum(axis=1)


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """``cumsum(mask) - 1`` clipped at 0: position 0 on each row's first real token."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Set logits outside the top-k and outside the nucleus to -inf (last axis is the vocab).

    ``top_k`` (0: off) keeps the k largest logits (more on exact ties with the
    k-th). ``top_p`` (1.0: off) then keeps the smallest set of most likely tokens
    whose softmax probability sums to >= top_p; the most likely token is always
    kept. ``top_k`` and ``top_p`` are Python numbers (static).
    """
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # probability of the strictly more likely tokens
        keep = before < top_p  # the top token has before == 0 < top_p
        # The smallest kept logit is the threshold (sorted descending: keep is a prefix).
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def _choose(logits: jax.Array, key: jax.Array, sampling: SamplingConfig):
    """Pick a token per row from raw logits [B, V]: (tokens, logprobs, sampling_logprobs)."""
    raw_logp = jax.nn.log_softmax(logits, axis=-1)
    if sampling.greedy:
        tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        sample_logp = jnp.zeros(logits.shape[:-1], jnp.float32)
    else:
        filtered = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
        tokens = jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
        sample_logp = jnp.take_along_axis(jax.nn.log_softmax(filtered, axis=-1), tokens[:, None], axis=-1)[:, 0]
    logp = jnp.take_along_axis(raw_logp, tokens[:, None], axis=-1)[:, 0]
    return tokens, logp, sample_logp


@functools.partial(jax.jit, static_argnames=("config", "sampling"))
def generate(
    params,
    config: LMConfig,
    prompt_ids: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    sampling: SamplingConfig,
) -> Generation:
    """Sample ``sampling.max_new_tokens`` tokens after left-padded prompts [B, P].

    ``params`` are :class:`LanguageModel` parameters (the ``lm`` head is needed);
    ``key`` a PRNG key (unused when greedy). See the module docstring.
    """
    B, P = prompt_ids.shape
    N = sampling.max_new_tokens
    require(prompt_mask.shape == (B, P), f"prompt_mask: expected shape {(B, P)}, got {prompt_mask.shape}")
    require("lm" in config.heads, f"LMConfig.heads: generation needs the 'lm' head, got {config.heads!r}")
    for name in ("eos_id", "pad_id"):
        value = getattr(sampling, name)
        require(
            value is None or value < config.vocab_size,
            f"SamplingConfig.{name}: expected < vocab_size={config.vocab_size}, got {value}",
        )
    if config.style == "gpt2":  # learned positions: a larger index would read past the table
        require(
            P + N <= config.max_position_embeddings,
            f"prompt length {P} + SamplingConfig.max_new_tokens {N} exceeds "
            f"LMConfig.max_position_embeddings={config.max_position_embeddings}",
        )
    model = LanguageModel(config)
    prompt_ids = prompt_ids.astype(jnp.int32)
    prompt_mask = prompt_mask.astype(jnp.bool_)
    # Key slots: the prompt's, then one per new token. Future slots are hidden by the
    # causal mask, so this mask is fixed for the whole generation.
    slot_mask = jnp.concatenate([prompt_mask, jnp.ones((B, N), jnp.bool_)], axis=1)
    prompt_lengths = prompt_mask.sum(axis=1).astype(jnp.int32)  # [B]
    step_keys = jax.random.split(key, N)

    def forward(ids, positions, cache, cache_index):
        return model.apply({"params": params}, ids, slot_mask, positions=positions, cache=cache, cache_index=cache_index)

    # Prefill: the whole prompt in one call, into slots 0..P-1.
    out = forward(prompt_ids, positions_from_mask(prompt_mask), KVCache.init(config, B, P + N), 0)
    finished = jnp.zeros((B,), jnp.bool_)

    def pick(logits, key, finished):
        tokens, logp, sample_logp = _choose(logits, key, sampling)
        live = ~finished
        tokens = jnp.where(live, tokens, sampling.pad_id)
        logp = jnp.where(live, logp, 0.0)
        sample_logp = jnp.where(live, sample_logp, 0.0)
        if sampling.eos_id is not None:
            finished = finished | (tokens == sampling.eos_id)
        return (tokens, logp, sample_logp, live.astype(jnp.int32)), finished

    first, finished = pick(out.logits[:, -1], step_keys[0], finished)

    def step(carry, inputs):
        cache, token, finished = carry
        t, key = inputs  # token is generation step t - 1, written into slot P + t - 1
        positions = (prompt_lengths + t - 1)[:, None]
        out = forward(token[:, None], positions, cache, P + t - 1)
        picked, finished = pick(out.logits[:, 0], key, finished)
        return (out.cache, picked[0], finished), picked

    if N > 1:
        (_, _, finished), rest = jax.lax.scan(step, (out.cache, first[0], finished), (jnp.arange(1, N), step_keys[1:]))
        tokens, logp, sample_logp, mask = (jnp.concatenate([f[:, None], r.T], axis=1) for f, r in zip(first, rest))
    else:
        tokens, logp, sample_logp, mask = (f[:, None] for f in first)
    return Generation(
        tokens=tokens,
        logprobs=logp.astype(jnp.float32),
        sampling_logprobs=sample_logp.astype(jnp.float32),
        mask=mask,
        finished=finished,
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask.astype(jnp.int32),
    )
