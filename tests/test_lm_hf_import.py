"""Hugging Face checkpoint import: logits parity with transformers on tiny random models, and errors."""

import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from rljax.lm.hf_import import (
    CheckpointImportError,
    UnsupportedCheckpointError,
    load_hf_config,
    load_hf_model,
    load_hf_params,
)
from rljax.lm.model import LanguageModel, unstack_layers

VOCAB, B, T = 101, 2, 12
TOL = 1e-4  # max |logit difference| in float32


def _randomize(model, seed):
    """Random weights everywhere (HF initialises norms to 1 and biases to 0, which would hide mapping errors)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _llama(tmp_path, tie=False, seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=96, max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=tie,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )  # fmt: skip
    model = _randomize(transformers.LlamaForCausalLM(config).float(), seed)
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


def _gpt2(tmp_path, seed=1):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=32)
    model = _randomize(transformers.GPT2LMHeadModel(config).float(), seed)
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    return path, _llama(path)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    return path, _gpt2(path)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0  # right padding: row 1 has 7 valid tokens
    return ids, mask


def _hf_logits(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float().numpy()


@functools.lru_cache
def _forward(config):
    return jax.jit(LanguageModel(config).apply)


def _rljax_logits(config, params, ids, mask=None):
    mask = jnp.ones((B, T), bool) if mask is None else jnp.asarray(mask.numpy().astype(bool))
    out = _forward(config)({"params": params}, jnp.asarray(ids.numpy(), jnp.int32), mask)
    return np.asarray(out.logits)


def _max_diff(a, b):
    return float(np.max(np.abs(a - b)))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logits_match_transformers(arch, llama_dir, gpt2_dir):
    path, model = llama_dir if arch == "llama" else gpt2_dir
    config, params = load_hf_model(path)
    assert config.style == arch and config.num_layers == 2 and config.vocab_size == VOCAB
    if arch == "llama":
        assert (config.kv_heads, config.rope_theta, config.norm_eps, config.tied) == (2, 500.0, 1e-6, False)
        assert "lm_head" in params
    else:
        assert config.tied and "lm_head" not in params and config.max_position_embeddings == 32
    ids, _ = _inputs()
    ref, got = _hf_logits(model, ids), _rljax_logits(config, params, ids)
    diff = _max_diff(ref, got)
    print(f"{arch}: max |logit diff| = {diff:.3g} (max |logit| {np.abs(ref).max():.3g})")
    assert diff <= TOL


def test_tied_llama(tmp_path):
    model = _llama(tmp_path, tie=True, seed=2)
    config, params = load_hf_model(tmp_path)
    assert config.tied and "lm_head" not in params
    ids, _ = _inputs(1)
    diff = _max_diff(_hf_logits(model, ids), _rljax_logits(config, params, ids))
    print(f"tied llama: max |logit diff| = {diff:.3g}")
    assert diff <= TOL


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_right_padding_matches_transformers(arch, llama_dir, gpt2_dir):
    path, model = llama_dir if arch == "llama" else gpt2_dir
    config, params = load_hf_model(path)
    ids, mask = _inputs(2)
    ref, got = _hf_logits(model, ids, mask), _rljax_logits(config, params, ids, mask)
    valid = mask.numpy().astype(bool)
    diff = _max_diff(ref[valid], got[valid])
    print(f"{arch} right-padded: max |logit diff| on valid positions = {diff:.3g}")
    assert diff <= TOL


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_scan_layers_identical(arch, llama_dir, gpt2_dir):
    path, _ = llama_dir if arch == "llama" else gpt2_dir
    config, params = load_hf_model(path)
    scan_config, scan_params = load_hf_model(path, scan_layers=True)
    assert scan_config.scan_layers and "layers" in scan_params["transformer"]
    assert scan_params["transformer"]["layers"]["attn"]["q_proj"]["kernel"].shape[0] == 2
    jax.tree.map(np.testing.assert_array_equal, unstack_layers(scan_params, 2), params)
    ids, mask = _inputs(3)
    np.testing.assert_allclose(
        _rljax_logits(scan_config, scan_params, ids, mask), _rljax_logits(config, params, ids, mask), rtol=0, atol=1e-6
    )


def test_sharded_bfloat16_checkpoint(tmp_path, llama_dir):
    path, model = llama_dir
    bf16 = transformers.LlamaForCausalLM(model.config)
    bf16.load_state_dict(model.state_dict())
    bf16.to(torch.bfloat16).save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and len(list(tmp_path.glob("*.safetensors"))) > 1
    _, reference = load_hf_model(path, param_dtype="bfloat16")
    config, params = load_hf_model(tmp_path, param_dtype="bfloat16")
    assert config.param_dtype == "bfloat16"
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
    jax.tree.map(np.testing.assert_array_equal, params, reference)


def test_extra_heads_and_overrides(llama_dir):
    path, _ = llama_dir
    config, params = load_hf_model(path, heads=("lm", "value"), remat=True, dtype="float32", logits_chunk=4)
    assert config.heads == ("lm", "value") and config.remat and config.logits_chunk == 4
    assert load_hf_config(path, dtype="bfloat16", attention="cudnn").attention == "cudnn"  # for a GPU
    assert params["value_head"]["kernel"].shape == (64, 1)
    plain_config, plain = load_hf_model(path)
    ids, _ = _inputs()
    np.testing.assert_allclose(_rljax_logits(config, params, ids), _rljax_logits(plain_config, plain, ids), atol=1e-6)
    with pytest.raises(TypeError, match="hidden_size"):
        load_hf_config(path, hidden_size=32)


@pytest.mark.parametrize("arch, num_labels", [("llama", 1), ("gpt2", 3)])
def test_sequence_classifier_imports_as_a_reward_model(tmp_path, arch, num_labels):
    # A reward model as TRL's RewardTrainer saves one: no LM head; its score layer is rljax's reward head.
    if arch == "llama":
        hf_config = transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, max_position_embeddings=64, num_labels=num_labels, pad_token_id=0,
        )  # fmt: skip
        model = transformers.LlamaForSequenceClassification(hf_config)
    else:
        hf_config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=32,
                                            num_labels=num_labels, pad_token_id=0)
        model = transformers.GPT2ForSequenceClassification(hf_config)
    model = _randomize(model.float(), seed=3)
    model.save_pretrained(tmp_path, safe_serialization=True)
    config, params = load_hf_model(tmp_path)
    assert config.heads == ("reward",) and config.num_reward_outputs == num_labels and "lm_head" not in params
    ids, mask = _inputs(2)
    ids = ids.clamp(min=1).masked_fill(mask == 0, 0)  # transformers finds each row's last token by the pad id
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits.float().numpy()  # [B, num_labels]
    out = _forward(config)({"params": params}, jnp.asarray(ids.numpy(), jnp.int32), jnp.asarray(mask.numpy() > 0))
    diff = _max_diff(ref, np.asarray(out.rewards).reshape(B, num_labels))
    print(f"{arch} sequence classifier: max |reward diff| = {diff:.3g}")
    assert diff <= TOL
    if arch == "llama":  # untied: no LM head to import
        with pytest.raises(CheckpointImportError, match="tensor 'lm_head.weight' missing"):
            load_hf_model(tmp_path, heads=("lm", "reward"))


# ---------------------------------------------------------------- errors


def _write_config(path, **fields):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(fields))


def test_unsupported_model_type(tmp_path):
    _write_config(tmp_path / "x", model_type="mistral_xyz", hidden_size=64)
    with pytest.raises(UnsupportedCheckpointError, match="mistral_xyz") as err:
        load_hf_config(tmp_path / "x")
    assert "llama" in str(err.value) and "gpt2" in str(err.value)
    transformers.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=1).save_pretrained(tmp_path / "bert")
    with pytest.raises(UnsupportedCheckpointError, match="'bert'"):
        load_hf_model(tmp_path / "bert")


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "llama3"),
        ({"rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}}, "linear"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"attention_bias": True}, "attention_bias"),
    ],
)
def test_unsupported_llama_options(tmp_path, fields, match):
    base = dict(model_type="llama", vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=96)  # fmt: skip
    _write_config(tmp_path, **{**base, **fields})
    with pytest.raises(UnsupportedCheckpointError, match=match):
        load_hf_config(tmp_path)


def test_llama_legacy_rope_fields(tmp_path):
    base = dict(model_type="llama", vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=96, rope_theta=1234.0, rope_scaling=None, head_dim=None)  # fmt: skip
    _write_config(tmp_path, **base)
    config = load_hf_config(tmp_path)
    assert config.rope_theta == 1234.0 and config.dim_per_head == 16 and config.kv_heads == 4


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"activation_function": "relu"}, "activation_function"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn"),
    ],
)
def test_unsupported_gpt2_options(tmp_path, fields, match):
    _write_config(tmp_path, model_type="gpt2", vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, **fields)
    with pytest.raises(UnsupportedCheckpointError, match=match):
        load_hf_config(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_hf_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_config(tmp_path)
    _write_config(tmp_path, model_type="gpt2", vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4)
    with pytest.raises(FileNotFoundError, match="safetensors") as err:
        load_hf_model(tmp_path)
    assert str(tmp_path) in str(err.value)


def _edited_copy(src, dst, edit):
    """A copy of checkpoint ``src`` whose tensors are ``edit(tensors)``."""
    shutil.copytree(src, dst)
    tensors = safetensors.numpy.load_file(str(dst / "model.safetensors"))
    edit(tensors)
    safetensors.numpy.save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_wrong_shape(tmp_path, llama_dir):
    name = "model.layers.1.self_attn.k_proj.weight"

    def edit(t):
        t[name] = t[name][:16]

    path = _edited_copy(llama_dir[0], tmp_path / "ckpt", edit)
    with pytest.raises(CheckpointImportError, match=r"'model\.layers\.1\.self_attn\.k_proj\.weight'") as err:
        load_hf_model(path)
    assert "(32, 64)" in str(err.value) and "(16, 64)" in str(err.value)


def test_missing_tensor(tmp_path, gpt2_dir):
    path = _edited_copy(gpt2_dir[0], tmp_path / "ckpt", lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"))
    with pytest.raises(CheckpointImportError, match=r"h\.1\.mlp\.c_fc\.bias"):
        load_hf_model(path)


def test_gpt2_names_without_prefix(tmp_path, gpt2_dir):
    """Original OpenAI GPT-2 checkpoints name tensors ``h.0.…``, ``wte.weight`` (no ``transformer.``)."""

    def edit(t):
        for name in list(t):
            t[name.removeprefix("transformer.")] = t.pop(name)

    path = _edited_copy(gpt2_dir[0], tmp_path / "ckpt", edit)
    jax.tree.map(np.testing.assert_array_equal, load_hf_model(path)[1], load_hf_model(gpt2_dir[0])[1])


def test_unexpected_tensors(tmp_path, gpt2_dir):
    def edit(t):
        t["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))  # buffer: ignored
        t["transformer.h.0.adapter.weight"] = np.zeros((4, 4), np.float32)

    path = _edited_copy(gpt2_dir[0], tmp_path / "ckpt", edit)
    with pytest.raises(CheckpointImportError, match="unexpected") as err:
        load_hf_model(path)
    assert "adapter" in str(err.value) and "attn.bias" not in str(err.value)


def test_tied_head_that_differs(tmp_path, gpt2_dir):
    def edit(t):
        t["lm_head.weight"] = t["transformer.wte.weight"] + 1.0

    path = _edited_copy(gpt2_dir[0], tmp_path / "ckpt", edit)
    with pytest.raises(CheckpointImportError, match="lm_head.weight"):
        load_hf_model(path)


def test_load_hf_params_with_given_config(llama_dir):
    path, _ = llama_dir
    config = load_hf_config(path)
    params = load_hf_params(path, config)
    assert params["transformer"]["layers_0"]["attn"]["k_proj"]["kernel"].shape == (64, 32)


# ---------------------------------------------------------------- export (rljax.lm.hf_export)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_exported_checkpoint_loads_in_transformers_and_back(tmp_path, arch, llama_dir, gpt2_dir):
    from rljax.lm.hf_export import save_hf_model

    path, model = llama_dir if arch == "llama" else gpt2_dir
    config, params = load_hf_model(path, scan_layers=True)  # stacked layers are unstacked on the way out
    save_hf_model(tmp_path, config, params)
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).float().eval()
    assert type(exported) is type(model)
    ids, _ = _inputs(3)
    np.testing.assert_array_equal(_hf_logits(exported, ids), _hf_logits(model, ids))  # the same weights, bit for bit
    again_config, again = load_hf_model(tmp_path, scan_layers=True)
    assert again_config == config
    jax.tree.map(np.testing.assert_array_equal, again, params)


def test_a_model_trained_here_gives_its_logits_in_transformers(tmp_path):
    # The direction a user needs: params made here, read by transformers (the round trip above, from weights with
    # random norms and biases, pins every tensor's mapping).
    from rljax.lm.hf_export import save_hf_model
    from rljax.lm.model import init_params, llama_config

    config = llama_config(vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                          max_position_embeddings=64, rope_theta=500.0, norm_eps=1e-6)
    params = init_params(config, jax.random.key(0))
    save_hf_model(tmp_path, config, params)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).float().eval()
    ids, mask = _inputs(4)
    diff = _max_diff(_hf_logits(hf, ids, mask)[mask.numpy() > 0], _rljax_logits(config, params, ids, mask)[mask.numpy() > 0])
    print(f"rljax llama exported: max |logit diff| = {diff:.3g}")
    assert diff <= TOL


def test_exported_reward_model_loads_as_a_sequence_classifier(tmp_path):
    from rljax.lm.hf_export import save_hf_model

    torch.manual_seed(5)
    hf_config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=96, max_position_embeddings=64, num_labels=2, pad_token_id=0,
    )  # fmt: skip
    model = _randomize(transformers.LlamaForSequenceClassification(hf_config).float(), seed=5)
    model.save_pretrained(tmp_path / "in", safe_serialization=True)
    config, params = load_hf_model(tmp_path / "in")
    save_hf_model(tmp_path / "out", config, params, pad_token_id=0)
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").float().eval()
    ids, mask = _inputs(2)
    ids = ids.clamp(min=1).masked_fill(mask == 0, 0)
    with torch.no_grad():
        np.testing.assert_array_equal(exported(input_ids=ids, attention_mask=mask).logits.numpy(),
                                      model(input_ids=ids, attention_mask=mask).logits.numpy())


def test_what_transformers_cannot_hold_is_refused(llama_dir, tmp_path):
    from rljax.lm.hf_export import HFExportError, save_hf_model
    from rljax.lm.model import gpt2_config, init_params

    path, _ = llama_dir
    config, params = load_hf_model(path, heads=("lm", "value"))
    with pytest.raises(HFExportError, match=r"LMConfig.heads: a Hugging Face checkpoint holds an LM head or a reward"):
        save_hf_model(tmp_path, config, params)
    config, params = load_hf_model(path, heads=("reward",))
    params["reward_head"]["bias"] = params["reward_head"]["bias"] + 0.5
    with pytest.raises(HFExportError, match=r"reward_head'\]\['bias'\]: transformers' score layer has no bias"):
        save_hf_model(tmp_path, config, params)
    grouped = gpt2_config(vocab_size=VOCAB, hidden_size=64, num_layers=1, num_heads=4, num_kv_heads=2)
    with pytest.raises(HFExportError, match="GPT-2 has neither grouped-query attention"):
        save_hf_model(tmp_path, grouped, init_params(grouped, jax.random.key(0)))
    assert not (tmp_path / "config.json").exists()
