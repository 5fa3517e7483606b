"""KV-cache sampling against a no-cache reference that recomputes the whole sequence each step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.core.config import ConfigError
from rljax.lm.model import LanguageModel, LMConfig, init_params, stack_layers
from rljax.lm.sampling import Generation, SamplingConfig, filter_logits, generate

STYLES = ("llama", "gpt2")
LENGTHS = (6, 3, 1)  # real prompt tokens per row; left-padded to P = 6
P = max(LENGTHS)
N = 6  # new tokens
SAMPLED = dict(temperature=0.8, top_k=10, top_p=0.9)
# Shared configs (and shapes) let the tests reuse each other's compiled programs.
GREEDY_CFG = SamplingConfig(N, greedy=True)
SAMPLED_CFG = SamplingConfig(N, **SAMPLED)


def tiny(style, **kwargs):
    return LMConfig(53, 32, 2, 4, num_kv_heads=2, max_position_embeddings=64, style=style, **kwargs)


@functools.lru_cache(maxsize=None)
def setup(style):
    config = tiny(style)
    params = jax.jit(functools.partial(init_params, config))(jax.random.key(0))  # jitted: faster than eager
    rng = np.random.default_rng(1)
    # Padding slots hold random tokens: only prompt_mask may decide what they are.
    ids = rng.integers(0, config.vocab_size, size=(len(LENGTHS), P)).astype(np.int32)
    mask = np.zeros((len(LENGTHS), P), np.int32)
    for b, n in enumerate(LENGTHS):
        mask[b, P - n :] = 1
    return config, params, ids, mask


@functools.lru_cache(maxsize=None)
def forward(config):
    """Full forward pass without a cache: (params, ids, mask, positions) -> logits [B, T, V]."""
    model = LanguageModel(config)
    return jax.jit(lambda params, ids, mask, pos: model.apply({"params": params}, ids, mask, pos).logits)


def np_positions(mask):
    return np.maximum(np.cumsum(mask, axis=-1) - 1, 0).astype(np.int32)


def reference(params, config, ids, mask, key, sampling):
    """Plain loop: a full forward pass over the whole (left-padded) sequence so far at
    every step, no cache. The sequence is right-padded to its final width with
    masked zeros so that one compiled forward serves every step; the causal mask
    hides those future slots from the last real token, whose logits are read."""
    B, Pl, N = ids.shape[0], ids.shape[1], sampling.max_new_tokens
    keys = jax.random.split(key, N)
    seq = np.zeros((B, Pl + N), np.int32)
    seq_mask = np.zeros((B, Pl + N), np.int32)
    seq[:, :Pl], seq_mask[:, :Pl] = ids, mask
    finished = np.zeros(B, bool)
    tokens, logps, slogps, live = [], [], [], []
    for t in range(N):
        logits = forward(config)(params, seq, seq_mask, np_positions(seq_mask))[:, Pl + t - 1]
        raw = jax.nn.log_softmax(logits)
        if sampling.greedy:
            tok = np.asarray(jnp.argmax(logits, -1))
            slp = np.zeros(B)
        else:
            filtered = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
            tok = np.asarray(jax.random.categorical(keys[t], filtered, axis=-1))
            slp = np.asarray(jax.nn.log_softmax(filtered))[np.arange(B), tok]
        lp = np.asarray(raw)[np.arange(B), tok]
        tok = np.where(finished, sampling.pad_id, tok)
        tokens.append(tok), logps.append(np.where(finished, 0, lp)), slogps.append(np.where(finished, 0, slp))
        live.append(~finished)
        if sampling.eos_id is not None:
            finished = finished | (tok == sampling.eos_id)
        seq[:, Pl + t], seq_mask[:, Pl + t] = tok, 1
    return [np.stack(x, 1) for x in (tokens, logps, slogps, live)]


def check_against_reference(gen, ref):
    tokens, logps, slogps, live = ref
    np.testing.assert_array_equal(gen.tokens, tokens)
    np.testing.assert_allclose(gen.logprobs, logps, atol=1e-5)
    np.testing.assert_allclose(gen.sampling_logprobs, slogps, atol=1e-5)
    np.testing.assert_array_equal(gen.mask, live.astype(np.int32))


# ------------------------------------------------------- cache vs recompute


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
@pytest.mark.parametrize("style", STYLES)
def test_cached_generation_matches_full_recompute(style, mode):
    config, params, ids, mask = setup(style)
    sampling = GREEDY_CFG if mode == "greedy" else SAMPLED_CFG
    key = jax.random.key(3)
    gen = generate(params, config, ids, mask, key, sampling)
    assert gen.tokens.shape == (3, N) and gen.tokens.dtype == jnp.int32
    assert gen.logprobs.dtype == jnp.float32 and gen.mask.shape == (3, N)
    check_against_reference(gen, reference(params, config, ids, mask, key, sampling))
    assert np.all(np.asarray(gen.mask) == 1) and not np.any(gen.finished)
    if mode == "sampled":  # tempered and filtered: a different distribution from the raw one
        assert not np.allclose(gen.logprobs, gen.sampling_logprobs)


def rescore_rows_alone(config, params, ids, tokens):
    """Full forward pass over each row's real prompt + completion, unpadded at the front.

    The rows go in one batch, shifted to start at slot 0 and right-padded to one
    width (the causal mask hides what comes after a token, so this is each row
    scored alone). Returns the logits that scored each completion token [B, N, V].
    """
    B, Nt = tokens.shape
    seq = np.zeros((B, P + Nt), np.int32)
    for b, n in enumerate(LENGTHS):
        seq[b, : n + Nt] = np.concatenate([ids[b, P - n :], tokens[b]])
    ones = np.ones_like(seq)
    logits = np.asarray(forward(config)(params, seq, ones, np_positions(ones)))
    return np.stack([logits[b, n - 1 : n - 1 + Nt] for b, n in enumerate(LENGTHS)])


@pytest.mark.parametrize("style", STYLES)
def test_padded_rows_equal_rows_generated_alone(style):
    config, params, ids, mask = setup(style)
    g_batch = generate(params, config, ids, mask, jax.random.key(3), GREEDY_CFG)
    s_batch = generate(params, config, ids, mask, jax.random.key(3), SAMPLED_CFG)
    # One row generated alone, unpadded (its prompt had 3 padding slots in the batch).
    b = 1
    row = ids[b : b + 1, P - LENGTHS[b] :]
    alone = generate(params, config, row, np.ones_like(row), jax.random.key(0), GREEDY_CFG)
    np.testing.assert_array_equal(g_batch.tokens[b], alone.tokens[0])
    np.testing.assert_allclose(g_batch.logprobs[b], alone.logprobs[0], atol=1e-5)
    # Every row: greedy tokens are the argmax of the row scored alone; log-probs agree.
    for gen in (g_batch, s_batch):
        tok = np.asarray(gen.tokens)
        logits = rescore_rows_alone(config, params, ids, tok)
        raw = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), tok[..., None], -1)[..., 0]
        np.testing.assert_allclose(gen.logprobs, raw, atol=1e-5)
        if gen is g_batch:
            np.testing.assert_array_equal(tok, logits.argmax(-1))
        else:
            s = SAMPLED_CFG
            tempered = filter_logits(jnp.asarray(logits) / s.temperature, s.top_k, s.top_p)
            filt = np.take_along_axis(np.asarray(jax.nn.log_softmax(tempered)), tok[..., None], -1)[..., 0]
            np.testing.assert_allclose(gen.sampling_logprobs, filt, atol=1e-5)


@pytest.mark.parametrize("style", STYLES)
def test_full_sequence_helpers_rescore_to_the_generation_logprobs(style):
    """A training forward pass over (sequences, attention_mask, positions) gives ``logprobs``."""
    config, params, ids, mask = setup(style)
    gen = generate(params, config, ids, mask, jax.random.key(5), SAMPLED_CFG)
    B, T = 3, P + N
    assert gen.sequences.shape == gen.attention_mask.shape == gen.completion_mask.shape == (B, T)
    np.testing.assert_array_equal(gen.sequences[:, :P], ids)
    np.testing.assert_array_equal(gen.sequences[:, P:], gen.tokens)
    np.testing.assert_array_equal(gen.attention_mask, np.concatenate([mask, np.asarray(gen.mask)], 1))
    np.testing.assert_array_equal(gen.completion_mask, np.concatenate([0 * mask, np.asarray(gen.mask)], 1))
    np.testing.assert_array_equal(gen.positions, np_positions(np.asarray(gen.attention_mask)))
    np.testing.assert_array_equal(gen.lengths, [N, N, N])
    logits = forward(config)(params, gen.sequences, gen.attention_mask, gen.positions)
    logp = jax.nn.log_softmax(logits[:, :-1])
    token_logp = np.take_along_axis(np.asarray(logp), np.asarray(gen.sequences[:, 1:, None]), -1)[..., 0]
    np.testing.assert_allclose(token_logp[:, P - 1 :], gen.logprobs, atol=1e-5)


def test_scanned_layers_generate_the_same():
    config, params, ids, mask = setup("llama")
    scanned = tiny("llama", scan_layers=True)
    a = generate(params, config, ids, mask, jax.random.key(0), GREEDY_CFG)
    b = generate(stack_layers(params, config.num_layers), scanned, ids, mask, jax.random.key(0), GREEDY_CFG)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_one_new_token():
    config, params, ids, mask = setup("llama")
    one = generate(params, config, ids, mask, jax.random.key(0), SamplingConfig(1, greedy=True))
    more = generate(params, config, ids, mask, jax.random.key(0), GREEDY_CFG)
    assert one.tokens.shape == (3, 1)
    np.testing.assert_array_equal(one.tokens[:, 0], more.tokens[:, 0])
    np.testing.assert_allclose(one.logprobs[:, 0], more.logprobs[:, 0], atol=1e-6)


# ------------------------------------------------------------ top-k, top-p


def test_top_k_1_is_greedy():
    config, params, ids, mask = setup("gpt2")
    greedy = generate(params, config, ids, mask, jax.random.key(0), GREEDY_CFG)
    top1 = generate(params, config, ids, mask, jax.random.key(7), SamplingConfig(N, temperature=3.0, top_k=1))
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)
    np.testing.assert_allclose(top1.logprobs, greedy.logprobs, atol=1e-6)
    np.testing.assert_allclose(top1.sampling_logprobs, 0.0, atol=1e-6)  # a point mass


def test_top_k_generation_never_leaves_the_top_k():
    config, params, ids, mask = setup("llama")
    B, Nk, k, temperature = 96, 3, 3, 20.0
    prompt = np.repeat(ids, B // 3, axis=0)
    pmask = np.repeat(mask, B // 3, axis=0)
    sampling = SamplingConfig(Nk, temperature=temperature, top_k=k)
    gen = generate(params, config, prompt, pmask, jax.random.key(11), sampling)
    logits = np.asarray(forward(config)(params, gen.sequences, gen.attention_mask, gen.positions))[:, P - 1 : -1]
    tok = np.asarray(gen.tokens)
    rank = (logits > np.take_along_axis(logits, tok[..., None], -1)).sum(-1)
    assert rank.max() < k
    assert len(np.unique(rank)) == k  # all of the top k are drawn
    # The high temperature flattens the distribution: unfiltered, most draws would fall outside the top k.
    probs = np.asarray(jax.nn.softmax(logits / temperature))
    assert (1 - np.sort(probs, -1)[..., -k:].sum(-1)).min() > 0.5


def draws(logits, n=4000, key=0):
    return np.asarray(jax.random.categorical(jax.random.key(key), logits, shape=(n,) + logits.shape[:-1]))


def test_filter_logits_top_k():
    logits = jnp.array([0.3, 2.0, -1.0, 1.5, 0.9, -0.2])
    out = np.asarray(filter_logits(logits, top_k=3))
    np.testing.assert_array_equal(np.isfinite(out), [False, True, False, True, True, False])
    np.testing.assert_array_equal(out[np.isfinite(out)], np.float32([2.0, 1.5, 0.9]))  # kept logits are unchanged
    assert set(np.unique(draws(filter_logits(logits / 10.0, top_k=3)))) == {1, 3, 4}
    np.testing.assert_array_equal(filter_logits(logits, top_k=0), logits)  # off
    np.testing.assert_array_equal(filter_logits(logits, top_k=6), logits)


def test_filter_logits_top_p():
    probs = np.array([0.1, 0.5, 0.05, 0.15, 0.2])  # sorted: 0.5 (1), 0.2 (4), 0.15 (3), 0.1 (0), 0.05 (2)
    logits = jnp.log(jnp.asarray(probs))
    cases = [(0.3, {1}), (0.49, {1}), (0.51, {1, 4}), (0.8, {1, 4, 3}), (0.9, {1, 4, 3, 0}), (1.0, set(range(5)))]
    for top_p, nucleus in cases:
        out = np.asarray(filter_logits(logits, top_p=top_p))
        assert set(np.flatnonzero(np.isfinite(out))) == nucleus, top_p
        assert set(np.unique(draws(filter_logits(logits, top_p=top_p)))) == nucleus, top_p
    # Batched rows are filtered independently.
    batch = jnp.stack([logits, logits[::-1]])
    kept = np.isfinite(np.asarray(filter_logits(batch, top_p=0.6)))
    np.testing.assert_array_equal(kept, [[0, 1, 0, 0, 1], [1, 0, 0, 1, 0]])
    # top-k first, then the nucleus of what is left (renormalised): 0.5 / 0.7 > 0.6.
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, top_k=2, top_p=0.6)), [0, 1, 0, 0, 0])


# -------------------------------------------------------------------- eos


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_eos_finishes_a_row(mode):
    config, params, ids, mask = setup("llama")
    pad = 7
    kwargs = dict(greedy=True) if mode == "greedy" else SAMPLED
    free = generate(params, config, ids, mask, jax.random.key(2), GREEDY_CFG if mode == "greedy" else SAMPLED_CFG)
    free_tokens = np.asarray(free.tokens)
    eos = int(free_tokens[0, 1])  # row 0 emits it at step 1 (or earlier): force a finish
    sampling = SamplingConfig(N, eos_id=eos, pad_id=pad, **kwargs)
    gen = generate(params, config, ids, mask, jax.random.key(2), sampling)
    check_against_reference(gen, reference(params, config, ids, mask, jax.random.key(2), sampling))
    tokens, m, lp, slp = (np.asarray(x) for x in (gen.tokens, gen.mask, gen.logprobs, gen.sampling_logprobs))
    for b in range(3):
        hits = np.flatnonzero(free_tokens[b] == eos)
        end = hits[0] + 1 if len(hits) else N  # tokens up to and including the eos
        np.testing.assert_array_equal(tokens[b, :end], free_tokens[b, :end])
        np.testing.assert_allclose(lp[b, :end], np.asarray(free.logprobs)[b, :end], atol=1e-6)
        assert (m[b, :end] == 1).all()
        assert (tokens[b, end:] == pad).all() and (m[b, end:] == 0).all()
        assert (lp[b, end:] == 0).all() and (slp[b, end:] == 0).all()
        assert bool(gen.finished[b]) == bool(len(hits))
        assert gen.lengths[b] == end
    assert gen.finished[0] and gen.lengths[0] <= 2
    assert (np.asarray(gen.completion_mask)[:, P:] == m).all() and (np.asarray(gen.attention_mask)[:, P:] == m).all()


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=-3), "max_new_tokens"),
        (dict(max_new_tokens=4, temperature=0.0), "temperature"),
        (dict(max_new_tokens=4, temperature=-1.0), "temperature"),
        (dict(max_new_tokens=4, top_p=0.0), "top_p"),
        (dict(max_new_tokens=4, top_p=1.5), "top_p"),
        (dict(max_new_tokens=4, top_k=-1), "top_k"),
        (dict(max_new_tokens=4, eos_id=-1), "eos_id"),
        (dict(max_new_tokens=4, pad_id=-1), "pad_id"),
    ],
)
def test_invalid_sampling_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"SamplingConfig.{field}"):
        SamplingConfig(**kwargs)


def test_valid_edge_configs_and_vocab_checks():
    SamplingConfig(4, temperature=0.0, greedy=True)  # temperature is unused when greedy
    SamplingConfig(4, top_p=1.0, top_k=0)
    config, params, ids, mask = setup("gpt2")
    with pytest.raises(ConfigError, match="SamplingConfig.eos_id"):
        generate(params, config, ids, mask, jax.random.key(0), SamplingConfig(2, eos_id=config.vocab_size))
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        generate(params, config, ids, mask, jax.random.key(0), SamplingConfig(64))
    assert isinstance(generate(params, config, ids, mask, jax.random.key(0), GREEDY_CFG), Generation)
