"""Save rljax LM params as a local Hugging Face checkpoint, the inverse of :mod:`rljax.lm.hf_import`.

    save_hf_model(path, config, params)   # writes path/config.json and path/model.safetensors

A model trained here then loads with ``transformers`` (``AutoModelForCausalLM`` or
``AutoModelForSequenceClassification``), TRL or any tool that reads Hugging Face
checkpoints, and back with :func:`rljax.lm.hf_import.load_hf_model`:

* ``heads=("lm",)``: ``LlamaForCausalLM`` or ``GPT2LMHeadModel`` (tied or untied embeddings).
* ``heads=("reward",)``: ``LlamaForSequenceClassification`` or ``GPT2ForSequenceClassification``
  with one label per reward output. transformers' ``score`` layer has no bias, so the reward
  head's bias must be 0 (it is after import, and Bradley-Terry training leaves it there;
  reward centring does not).

Tensors keep the params' dtype (float32, bfloat16 or float16). What transformers cannot hold is
refused with :class:`HFExportError` naming it: a value head, an LM and a reward head together, a
nonzero reward bias, and a GPT-2-style model with grouped-query attention or a head dim other
than hidden / heads. ``pad_token_id`` / ``eos_token_id`` are written when given: transformers'
sequence classifiers read each row's reward at its last token that is not ``pad_token_id``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from rljax.lm import hf_import
from rljax.lm.model import LMConfig, unstack_layers


class HFExportError(ValueError):
    """The model or params cannot be written as a Hugging Face checkpoint."""


_ARCHITECTURES = {
    ("llama", "lm"): "LlamaForCausalLM",
    ("llama", "reward"): "LlamaForSequenceClassification",
    ("gpt2", "lm"): "GPT2LMHeadModel",
    ("gpt2", "reward"): "GPT2ForSequenceClassification",
}


def _check(config: LMConfig, params) -> str:
    """The single head to export (``"lm"`` or ``"reward"``), or ``HFExportError``."""
    if tuple(config.heads) not in (("lm",), ("reward",)):
        raise HFExportError(f"LMConfig.heads: a Hugging Face checkpoint holds an LM head or a reward head, got "
                            f"{config.heads!r}")
    if config.style == "gpt2" and (config.kv_heads != config.num_heads or config.dim_per_head * config.num_heads
                                   != config.hidden_size):
        raise HFExportError(f"LMConfig: transformers' GPT-2 has neither grouped-query attention nor a separate head "
                            f"dim (num_kv_heads={config.num_kv_heads}, head_dim={config.head_dim})")
    if config.heads == ("reward",):
        bias = np.asarray(params["reward_head"]["bias"], np.float32)
        if np.any(bias != 0):
            raise HFExportError(f"params['reward_head']['bias']: transformers' score layer has no bias, so it must be 0; "
                                f"got {bias.tolist()}")
    return config.heads[0]


def hf_config(config: LMConfig, *, pad_token_id: int | None = None, eos_token_id: int | None = None) -> dict[str, Any]:
    """The ``config.json`` of ``config`` (read back by :func:`rljax.lm.hf_import.load_hf_config`)."""
    head = "reward" if config.heads == ("reward",) else "lm"
    common = {"architectures": [_ARCHITECTURES[config.style, head]], "vocab_size": config.vocab_size,
              "tie_word_embeddings": config.tied, "pad_token_id": pad_token_id, "eos_token_id": eos_token_id}
    if head == "reward":
        common["id2label"] = {str(i): f"LABEL_{i}" for i in range(config.num_reward_outputs)}
    if config.style == "llama":
        return common | {
            "model_type": "llama", "hidden_size": config.hidden_size, "intermediate_size": config.mlp_size,
            "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
            "num_key_value_heads": config.kv_heads, "head_dim": config.dim_per_head,
            "max_position_embeddings": config.max_position_embeddings, "rms_norm_eps": config.norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta}, "hidden_act": "silu",
            "attention_bias": False, "mlp_bias": False,
        }
    return common | {
        "model_type": "gpt2", "n_embd": config.hidden_size, "n_inner": config.mlp_size, "n_layer": config.num_layers,
        "n_head": config.num_heads, "n_positions": config.max_position_embeddings,
        "layer_norm_epsilon": config.norm_eps, "activation_function": "gelu_new",
    }


def hf_tensors(config: LMConfig, params) -> dict[str, np.ndarray]:
    """The checkpoint's tensors by their Hugging Face names."""
    head = _check(config, params)
    params = jax.device_get(params)
    if config.scan_layers:
        params = unstack_layers(params, config.num_layers)

    def get(path):
        leaf = params
        for key in path:
            leaf = leaf[key]
        return np.asarray(leaf)

    prefix, entries = hf_import.tensor_map(config)
    tensors = {prefix + name: mapping.save(get) for name, _, mapping in entries}
    if head == "lm" and not config.tied:
        tensors["lm_head.weight"] = get(("lm_head", "kernel")).T
    if head == "reward":
        tensors["score.weight"] = get(("reward_head", "kernel")).T
    return {name: np.ascontiguousarray(array) for name, array in tensors.items()}


def save_hf_model(path, config: LMConfig, params, *, pad_token_id: int | None = None,
                  eos_token_id: int | None = None) -> None:
    """Write ``path/config.json`` and ``path/model.safetensors`` (the directory is created; files in it are
    replaced). See the module docstring for what can be exported."""
    from safetensors.numpy import save_file  # noqa: PLC0415  (only needed here)

    tensors = hf_tensors(config, params)
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config(config, pad_token_id=pad_token_id, eos_token_id=eos_token_id), f, indent=2)


__all__ = ["HFExportError", "hf_config", "hf_tensors", "save_hf_model"]
