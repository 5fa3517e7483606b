"""ULD's pieces: the unlearning losses against hand values, LoRA as a params transform, a model's first layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.core.config import ConfigError
from rljax.lm import lora
from rljax.lm.model import LanguageModel, LMConfig, init_params
from rljax.losses import unlearning as U


def test_relative_top_mask_keeps_the_likely_tokens_and_at_least_k():
    logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.04, 0.01]))
    # threshold min(log 0.5 + log 0.1, 0th best) = log 0.05: 0.04 and 0.01 are filtered
    np.testing.assert_array_equal(U.relative_top_mask(logits, 0.1), [False, False, False, True, True])
    # relative_top 0.5 on 5 tokens: k = 2, threshold min(log 0.25, log 0.3) = log 0.25 -> keeps the top 2
    np.testing.assert_array_equal(U.relative_top_mask(logits, 0.5), [False, False, True, True, True])
    # with k = int(0.9 * 5) = 4 the k-th best (0.04) bounds the threshold: 4 tokens kept
    np.testing.assert_array_equal(U.relative_top_mask(logits, 0.9), [False, False, False, False, True])


def test_uld_logits_subtract_the_filtered_assistant():
    target = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.04, 0.01]))
    assistant = jnp.array([2.0, -1.0, 0.5, 3.0, 4.0])
    combined = U.uld_logits(target, assistant, alpha=0.8, relative_top=0.1)
    np.testing.assert_allclose(combined, target - 0.8 * jnp.array([2.0, -1.0, 0.5, 0.0, 0.0]), rtol=1e-6)
    np.testing.assert_allclose(U.uld_logits(target, assistant, 0.8, relative_top=0.0), target - 0.8 * assistant, rtol=1e-6)
    # an assistant that is confident on the target's answer removes it from the top
    assert int(jnp.argmax(U.uld_logits(target, jnp.array([6.0, 0, 0, 0, 0]), 0.8))) == 1


def test_uniform_kl_and_npo_hand_values():
    assert float(U.uniform_kl(jnp.zeros((2, 3, 7)))) == pytest.approx(0.0, abs=1e-6)
    logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]]))
    kl_first = np.sum(np.full(3, 1 / 3) * (np.log(1 / 3) - np.log([0.7, 0.2, 0.1])))
    assert float(U.uniform_kl(logits)) == pytest.approx(kl_first / 2, rel=1e-5)  # the mean over both positions
    assert float(U.uniform_kl(logits, mask=jnp.array([1, 0]))) == pytest.approx(kl_first, rel=1e-5)
    nll, ref = jnp.array([2.0, 5.0]), jnp.array([3.0, 3.0])
    expected = np.mean(-np.log(1 / (1 + np.exp(-0.1 * np.array([-1.0, 2.0]))))) * 2 / 0.1
    assert float(U.npo_loss(nll, ref, 0.1)) == pytest.approx(expected, rel=1e-6)
    # descending NPO raises the forget set's NLL, and less so where it is already above the reference
    grad = jax.grad(lambda x: U.npo_loss(x, ref, 0.1))(nll)
    assert float(grad[0]) < float(grad[1]) < 0


CONFIG = LMConfig(vocab_size=23, hidden_size=16, num_layers=3, num_heads=2, max_position_embeddings=8)
IDS = jnp.array([[1, 5, 7, 9, 2], [1, 4, 4, 3, 2]])


def test_lora_merge_is_the_adapted_forward_and_trains_only_the_adapters():
    params = init_params(CONFIG, jax.random.key(0))
    adapters = lora.init(params, rank=4, key=jax.random.key(1))
    assert len(adapters) == 3 * 7  # q, k, v, o, gate, up, down in each of 3 blocks
    merged = lora.merge(params, adapters, alpha=8.0)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), merged, params))  # B = 0
    name = "transformer/layers_1/mlp/up_proj/kernel"
    adapters[name]["b"] = jax.random.normal(jax.random.key(2), adapters[name]["b"].shape)
    merged = lora.merge(params, adapters, alpha=8.0)
    kernel = params["transformer"]["layers_1"]["mlp"]["up_proj"]["kernel"]
    np.testing.assert_allclose(merged["transformer"]["layers_1"]["mlp"]["up_proj"]["kernel"],
                               kernel + 2.0 * adapters[name]["a"] @ adapters[name]["b"], rtol=1e-6)  # alpha / r = 2

    def loss(adapters):
        out = LanguageModel(CONFIG).apply({"params": lora.merge(params, adapters, 8.0)}, IDS)
        return jnp.mean(out.logits ** 2)

    grads = jax.grad(loss)(adapters)
    assert float(jnp.abs(grads[name]["a"]).max()) > 0 and float(jnp.abs(grads[name]["b"]).max()) > 0
    with pytest.raises(ConfigError, match=r"no 2-D kernel under a module named one of \['w_in'\]"):
        lora.init(params, 4, jax.random.key(0), targets=("w_in",))


def test_first_layers_is_the_shallow_model_with_the_shared_head():
    params = init_params(CONFIG, jax.random.key(0))
    small, small_config = lora.first_layers(params, CONFIG, 1)
    assert small_config.num_layers == 1 and set(small["transformer"]) == {"embed", "final_norm", "layers_0"}
    assert small["lm_head"] is params["lm_head"]
    fresh = init_params(small_config, jax.random.key(5))  # the same tree as a 1-layer model's
    assert jax.tree.structure(fresh) == jax.tree.structure(small)
    full = LanguageModel(CONFIG).apply({"params": params}, IDS).logits
    shallow = LanguageModel(small_config).apply({"params": small}, IDS).logits
    assert shallow.shape == full.shape and not np.allclose(shallow, full)
    same, _ = lora.first_layers(params, CONFIG, 3)
    np.testing.assert_allclose(LanguageModel(CONFIG).apply({"params": same}, IDS).logits, full)
    with pytest.raises(ConfigError, match="num_layers must be in 1..3, got 4"):
        lora.first_layers(params, CONFIG, 4)
