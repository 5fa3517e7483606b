"""The decoder LM: heads on known inputs, padding, remat/bf16 variants, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.core.config import ConfigError
from rljax.lm.model import LanguageModel, LMConfig, count_params, init_params, last_token_index

HEADS = ("lm", "value", "reward")


def model(**kw):
    kw = {"heads": HEADS, "max_position_embeddings": 16, **kw}
    return LMConfig(kw.pop("vocab_size", 37), kw.pop("hidden_size", 32), kw.pop("num_layers", 2), kw.pop("num_heads", 4), **kw)


IDS = jax.random.randint(jax.random.key(1), (3, 9), 0, 37)
MASK = jnp.array([[1] * 9, [1] * 6 + [0] * 3, [1] * 2 + [0] * 7])


@pytest.mark.parametrize("style", ["llama", "gpt2"])
def test_heads_read_the_right_positions(style):
    config = model(style=style, num_reward_outputs=1)
    params = init_params(config, jax.random.key(0))
    out = LanguageModel(config).apply({"params": params}, IDS, MASK)
    assert out.logits.shape == (3, 9, 37) and out.values.shape == (3, 9) and out.rewards.shape == (3,)
    # value head: a linear map of each token's final hidden state
    v = params["value_head"]
    np.testing.assert_allclose(out.values, out.hidden @ v["kernel"][:, 0] + v["bias"][0], rtol=1e-5, atol=1e-6)
    # reward head: the same kind of map, read at the last attended token (positions 8, 5, 1)
    r = params["reward_head"]
    last = out.hidden[jnp.arange(3), jnp.array([8, 5, 1])]
    np.testing.assert_allclose(out.rewards, last @ r["kernel"][:, 0] + r["bias"][0], rtol=1e-5, atol=1e-6)
    # untied llama: logits come from lm_head; tied gpt2: from the embedding
    unembed = params["lm_head"]["kernel"] if style == "llama" else params["transformer"]["embed"]["embedding"].T
    np.testing.assert_allclose(out.logits, out.hidden @ unembed, rtol=1e-4, atol=1e-5)


def test_padding_content_never_changes_the_valid_outputs():
    config = model()
    params = init_params(config, jax.random.key(0))
    junk = jnp.where(MASK == 1, IDS, (IDS + 11) % 37)
    a = LanguageModel(config).apply({"params": params}, IDS, MASK)
    b = LanguageModel(config).apply({"params": params}, junk, MASK)
    valid = MASK[..., None] == 1
    np.testing.assert_allclose(jnp.where(valid, a.logits, 0), jnp.where(valid, b.logits, 0), atol=1e-5)
    np.testing.assert_allclose(a.rewards, b.rewards, atol=1e-5)


def test_reward_read_with_a_cache_equals_the_full_call():
    """Two calls through a cache (positions 0..3, then 4..8) read each row's reward at its last attended slot,
    as one full call does; a row whose last slot is not among the call's tokens gets NaN, not another token's."""
    from rljax.lm.model import KVCache

    config = model(num_reward_outputs=2)
    params = init_params(config, jax.random.key(0))
    lm = LanguageModel(config)
    full = lm.apply({"params": params}, IDS, MASK).rewards
    seen = jnp.where(jnp.arange(9) < 4, MASK, 0)  # the slots written so far
    first = lm.apply({"params": params}, IDS[:, :4], seen, cache=KVCache.init(config, 3, 9))
    second = lm.apply({"params": params}, IDS[:, 4:], MASK, cache=first.cache, cache_index=4)
    np.testing.assert_allclose(second.rewards[:2], full[:2], rtol=1e-5, atol=1e-6)  # last slots 8 and 5
    assert np.isnan(second.rewards[2]).all()  # its last slot, 1, was in the first call
    np.testing.assert_allclose(first.rewards[2], full[2], rtol=1e-5, atol=1e-6)  # ... which read it


def test_last_token_index_left_and_right_padding():
    mask = jnp.array([[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 3, 0]


def test_multi_objective_reward_head():
    config = model(num_reward_outputs=3, heads=("reward",))
    params = init_params(config, jax.random.key(0))
    out = LanguageModel(config).apply({"params": params}, IDS, MASK)
    assert out.rewards.shape == (3, 3) and out.logits is None and out.values is None
    # Objective j is the j-th column of one linear map of the hidden state at each row's last attended token.
    r = params["reward_head"]
    assert r["kernel"].shape == (32, 3)
    last = out.hidden[jnp.arange(3), jnp.array([8, 5, 1])]
    np.testing.assert_allclose(out.rewards, last @ r["kernel"] + r["bias"], rtol=1e-5, atol=1e-6)
    assert np.ptp(np.asarray(out.rewards), axis=1).min() > 0  # the k objectives are different functions


def test_remat_and_gqa_and_bf16_variants():
    # Each forward and gradient jitted whole: op by op they took twice as long (22 s against 16 s for the test).
    def logits(config):
        return jax.jit(lambda p: LanguageModel(config).apply({"params": p}, IDS, MASK).logits)

    def grads(config):
        return jax.jit(jax.grad(lambda p: LanguageModel(config).apply({"params": p}, IDS, MASK).logits.sum()))

    base, remat = model(num_kv_heads=2), model(num_kv_heads=2, remat=True)
    params = init_params(base, jax.random.key(0))
    np.testing.assert_allclose(logits(base)(params), logits(remat)(params), atol=1e-6)
    diffs = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), grads(remat)(params), grads(base)(params))
    assert max(jax.tree.leaves(diffs)) < 1e-4
    bf16 = model(num_kv_heads=2, dtype="bfloat16", param_dtype="bfloat16")
    p16 = init_params(bf16, jax.random.key(0))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(p16))
    out16 = logits(bf16)(p16)
    assert out16.dtype == jnp.float32  # logits are upcast for the losses
    np.testing.assert_allclose(out16, logits(base)(jax.tree.map(lambda x: x.astype(jnp.float32), p16)), atol=0.05)


def test_parameter_count_matches_the_formula():
    config = LMConfig(50, 64, 3, 4, num_kv_heads=2, intermediate_size=96)  # lm head only
    params = init_params(config, jax.random.key(0))
    norms = (2 * 3 + 1) * 64  # RMSNorm scales: two per block and the final one
    assert count_params(params) == config.num_params() + norms


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(style="mamba"), "style: expected one of"),
        (dict(num_kv_heads=3), "num_kv_heads: expected a divisor of num_heads=4"),
        (dict(heads=("lm", "critic")), "heads: expected a non-empty subset"),
        (dict(dtype="float64"), "dtype: expected one of"),
        (dict(hidden_size=30), "hidden_size: expected a multiple of num_heads=4"),
        (dict(logits_chunk=-1), r"logits_chunk: expected 0 \(no chunking\) or a positive int, got -1"),
        (dict(attention="flash"), r"attention: expected one of \('xla', 'cudnn'\), got 'flash'"),
        (dict(attention="cudnn"), r"attention: 'cudnn' computes in 'bfloat16' or 'float16', got dtype='float32'"),
    ],
)
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        model(**kwargs)


def test_attention_mask_shape_is_checked():
    config = model()
    params = init_params(config, jax.random.key(0))
    with pytest.raises(ConfigError, match=r"attention_mask: expected shape \(3, 9\)"):
        LanguageModel(config).apply({"params": params}, IDS, MASK[:, :5])


def test_cudnn_attention_off_a_gpu_is_refused_naming_the_field():
    params = init_params(model(), jax.random.key(0))
    with pytest.raises(ConfigError, match=r"LMConfig.attention: 'cudnn' runs on NVIDIA GPUs only, .* backend is 'cpu'"):
        LanguageModel(model(attention="cudnn", dtype="bfloat16")).apply({"params": params}, IDS, MASK)


def test_cudnn_attention_path_equals_xla_with_and_without_a_cache(request):
    """``attention="cudnn"`` hands jax.nn.dot_product_attention the caller's mask, plus ``is_causal`` in calls
    without a KV cache only (where query i is key slot i). Checked on CPU with XLA standing in for cuDNN: a
    padded full call and two calls through a cache give the XLA path's logits; a causal flag in the cached
    calls would cut the second call's queries off the first call's keys."""
    from rljax.lm.model import KVCache

    xla, cudnn = (model(num_kv_heads=2, dtype="bfloat16", attention=attention) for attention in ("xla", "cudnn"))
    params = init_params(xla, jax.random.key(0))
    full = LanguageModel(xla).apply({"params": params}, IDS, MASK).logits
    calls = request.getfixturevalue("xla_for_cudnn")  # from here on, XLA stands in for cuDNN
    lm = LanguageModel(cudnn)
    np.testing.assert_allclose(lm.apply({"params": params}, IDS, MASK).logits, full, rtol=1e-2, atol=1e-2)
    assert calls == [("cudnn", True, 9, 9)] * 2  # one call per layer
    calls.clear()
    seen = jnp.where(jnp.arange(9) < 4, MASK, 0)
    first = lm.apply({"params": params}, IDS[:, :4], seen, cache=KVCache.init(cudnn, 3, 9))
    second = lm.apply({"params": params}, IDS[:, 4:], MASK, cache=first.cache, cache_index=4)
    valid = MASK[:, 4:, None] == 1
    np.testing.assert_allclose(first.logits[:, :2], full[:, :2], rtol=1e-2, atol=1e-2)  # every row attends 0..1
    np.testing.assert_allclose(jnp.where(valid, second.logits, 0), jnp.where(valid, full[:, 4:], 0),
                               rtol=1e-2, atol=1e-2)
    assert calls == [("cudnn", False, 4, 9)] * 2 + [("cudnn", False, 5, 9)] * 2
