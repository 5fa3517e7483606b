"""Import Hugging Face Llama and GPT-2 checkpoints (safetensors) into :mod:`rljax.lm.model`
(:mod:`rljax.lm.hf_export` writes them back).

    load_hf_config(path, **overrides) -> LMConfig
    load_hf_params(path, config, key=None) -> params
    load_hf_model(path, key=None, **overrides) -> (config, params)

``path`` is a local Hugging Face model directory: ``config.json`` plus one
``*.safetensors`` file or a sharded set with ``model.safetensors.index.json``.
Nothing is downloaded and PyTorch is not needed.

Supported ``model_type`` values (see :data:`SUPPORTED_MODEL_TYPES`):

* ``"llama"`` (``LlamaForCausalLM``): default RoPE only (no scaling), SiLU MLP,
  no attention or MLP biases. Torch ``Linear`` weights [out, in] become Flax
  kernels [in, out]; RoPE already uses the rotate-half layout on both sides, so
  q/k need no permutation.
* ``"gpt2"`` (``GPT2LMHeadModel``): tanh-approximated GELU (``gelu_new`` or
  ``gelu_pytorch_tanh``). ``Conv1D`` weights are already [in, out]; the fused
  ``c_attn`` is split into q, k, v. Names may carry a ``transformer.`` prefix.

Both also as sequence classifiers (``LlamaForSequenceClassification``,
``GPT2ForSequenceClassification``: reward models, such as TRL's ``RewardTrainer``
trains): the ``score`` layer [num_labels, hidden] becomes the ``reward`` head,
read at the last attended token (transformers reads the last non-pad token: the
same token under right padding). rljax's reward head has a bias, imported as 0,
which transformers' lacks: the Bradley-Terry loss leaves it at 0 (its gradient
is 0), reward centring trains it.

``overrides`` may set only fields that do not change the architecture:
``dtype``, ``param_dtype``, ``scan_layers``, ``remat``, ``heads``,
``num_reward_outputs``, ``logits_chunk`` and ``attention``. Weights are cast
to ``param_dtype`` and stacked on a leading layer axis when ``scan_layers``. Heads that the checkpoint does
not hold (``value``; ``reward`` in a causal LM) are freshly initialised from ``key``.

Errors: :class:`FileNotFoundError` (directory, ``config.json``, weights),
:class:`UnsupportedCheckpointError` (a model type or option this module cannot
represent) and :class:`CheckpointImportError` (missing, misshapen or
unexpected tensors).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import struct
from collections.abc import Mapping
from typing import Any, Iterable

import jax
import ml_dtypes
import numpy as np

from rljax.lm.model import LMConfig, init_params

SUPPORTED_MODEL_TYPES = ("llama", "gpt2")
OVERRIDABLE = ("dtype", "param_dtype", "scan_layers", "remat", "heads", "num_reward_outputs", "logits_chunk", "attention")
GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")

INDEX_FILE = "model.safetensors.index.json"
_NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
# safetensors dtype tags numpy cannot represent natively (read from the raw bytes instead).
_RAW_DTYPES = {
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
}
# Buffers some checkpoints store that are not parameters.
_IGNORED = {
    "llama": (re.compile(r"^(model\.)?(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq$"),),
    "gpt2": (re.compile(r"^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$"),),
}
_PREFIX = {"llama": "model.", "gpt2": "transformer."}
_HEAD_TENSORS = ("lm_head.weight", "score.weight")  # outside the base model: never prefixed


class CheckpointImportError(ValueError):
    """A checkpoint's tensors do not fit the model its config describes."""


class UnsupportedCheckpointError(CheckpointImportError):
    """A checkpoint uses a model type or an option that :mod:`rljax.lm.model` cannot represent."""


# ---------------------------------------------------------------- config


def _model_dir(path) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Hugging Face model directory not found: {path!r}")
    return path


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.path.basename(path)} not found: {path!r}")
    with open(path) as f:
        return json.load(f)


def _unsupported(model_type: str, what: str) -> UnsupportedCheckpointError:
    return UnsupportedCheckpointError(f"{model_type} checkpoint: {what}")


def _rope_theta(hf: dict) -> float:
    """RoPE base from ``rope_parameters`` (transformers 5) or ``rope_theta`` + ``rope_scaling`` (4.x)."""
    theta = hf.get("rope_theta")
    for field in ("rope_parameters", "rope_scaling"):
        params = hf.get(field)
        if params is None:
            continue
        if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
            raise _unsupported("llama", f"{field}={params!r}: expected one flat dict of RoPE parameters")
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type not in (None, "default"):
            raise _unsupported(
                "llama", f"{field}: rope type {rope_type!r} (RoPE scaling) is not supported, only 'default'"
            )
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            factor = params["partial_rotary_factor"]
            raise _unsupported("llama", f"{field}: partial_rotary_factor={factor} is not supported")
        theta = params.get("rope_theta", theta)
    return float(10000.0 if theta is None else theta)


def _llama_fields(hf: dict) -> dict:
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise _unsupported("llama", f"hidden_act={act!r} is not supported, only 'silu'")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag, False):
            raise _unsupported("llama", f"{flag}=true is not supported (rljax's Llama has no biases)")
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        raise _unsupported("llama", f"partial_rotary_factor={hf['partial_rotary_factor']} is not supported")
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    return dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hidden,
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hidden // heads,
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        style="llama",
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=_rope_theta(hf),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


def _gpt2_fields(hf: dict) -> dict:
    act = hf.get("activation_function", "gelu_new")
    if act not in GPT2_ACTIVATIONS:
        raise _unsupported("gpt2", f"activation_function={act!r} is not supported, only {GPT2_ACTIVATIONS}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if hf.get(flag, False):
            raise _unsupported("gpt2", f"{flag}=true is not supported")
    if not hf.get("scale_attn_weights", True):
        raise _unsupported("gpt2", "scale_attn_weights=false is not supported (rljax scales by 1/sqrt(head_dim))")
    hidden = hf["n_embd"]
    return dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hidden,
        num_layers=hf["n_layer"],
        num_heads=hf["n_head"],
        intermediate_size=hf.get("n_inner") or 4 * hidden,
        max_position_embeddings=hf.get("n_positions", 1024),
        style="gpt2",
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
    )


def _sequence_classifier_fields(hf: dict) -> dict:
    """A ``*ForSequenceClassification`` checkpoint (a reward model, such as TRL's ``RewardTrainer`` saves) has
    no LM head; its ``score`` layer becomes the reward head, one output per label."""
    if not any(name.endswith("ForSequenceClassification") for name in hf.get("architectures") or ()):
        return {}
    num_labels = len(hf["id2label"]) if "id2label" in hf else int(hf.get("num_labels", 2))  # transformers' default
    return {"heads": ("reward",), "num_reward_outputs": num_labels}


def load_hf_config(path, **overrides) -> LMConfig:
    """The :class:`LMConfig` of a local Hugging Face model directory (its ``config.json``).

    ``overrides`` may set the fields in :data:`OVERRIDABLE`; architecture fields come from the
    checkpoint. A sequence classifier's config gets ``heads=("reward",)`` with ``num_reward_outputs``
    = its number of labels.
    """
    bad = sorted(set(overrides) - set(OVERRIDABLE))
    if bad:
        raise TypeError(f"load_hf_config: cannot override {bad}; overridable fields are {OVERRIDABLE}")
    if "heads" in overrides:
        overrides["heads"] = tuple(overrides["heads"])
    hf = _read_json(os.path.join(_model_dir(path), "config.json"))
    model_type = hf.get("model_type")
    if model_type == "llama":
        fields = _llama_fields(hf)
    elif model_type == "gpt2":
        fields = _gpt2_fields(hf)
    else:
        raise UnsupportedCheckpointError(
            f"model_type {model_type!r} in {os.path.join(os.fspath(path), 'config.json')!r} is not supported; "
            f"supported model types: {SUPPORTED_MODEL_TYPES}"
        )
    return LMConfig(**(fields | _sequence_classifier_fields(hf) | overrides))


# ---------------------------------------------------------------- safetensors


def _safetensors_files(path: str) -> list[str]:
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index):
        weight_map = _read_json(index).get("weight_map", {})
        files = [os.path.join(path, name) for name in sorted(set(weight_map.values()))]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"shards listed in {index!r} not found: {missing}")
        if files:
            return files
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        hint = ""
        if glob.glob(os.path.join(path, "*.bin")) or glob.glob(os.path.join(path, "*.pt")):
            hint = " (only PyTorch pickle weights found; re-save with save_pretrained(..., safe_serialization=True))"
        raise FileNotFoundError(f"no *.safetensors weights in {path!r}{hint}")
    return files


def _read_safetensors(file: str) -> dict[str, np.ndarray]:
    """Every tensor of one file as numpy (memory-mapped where numpy lacks the dtype, e.g. bfloat16)."""
    from safetensors import safe_open

    with open(file, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    header.pop("__metadata__", None)
    out = {}
    with safe_open(file, framework="numpy") as f:
        for name in f.keys():
            info = header[name]
            if info["dtype"] in _RAW_DTYPES:
                start, end = info["data_offsets"]
                raw = np.memmap(file, dtype=np.uint8, mode="r", offset=8 + header_len + start, shape=(end - start,))
                out[name] = raw.view(_RAW_DTYPES[info["dtype"]]).reshape(info["shape"])
            else:
                out[name] = f.get_tensor(name)
    return out


def _read_checkpoint(path: str) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for file in _safetensors_files(path):
        for name, array in _read_safetensors(file).items():
            if name in tensors:
                raise CheckpointImportError(f"tensor {name!r} appears in more than one file of {path!r}")
            tensors[name] = array
    return tensors


# ---------------------------------------------------------------- name mapping

# One checkpoint tensor: its name (prefix stripped), its expected shape and how it maps to rljax params:
# ``load(array)`` gives the (rljax path, array) pairs it fills, ``save(get)`` rebuilds it from the params
# (``get(path)`` reads one leaf), which :func:`rljax.lm.hf_export.save_hf_model` uses.
@dataclasses.dataclass(frozen=True)
class _Copy:
    path: tuple[str, ...]

    def load(self, x):
        return [(self.path, x)]

    def save(self, get):
        return get(self.path)


@dataclasses.dataclass(frozen=True)
class _Transposed:  # torch Linear [out, in] <-> Flax kernel [in, out]
    path: tuple[str, ...]

    def load(self, x):
        return [(self.path + ("kernel",), x.T)]

    def save(self, get):
        return get(self.path + ("kernel",)).T


@dataclasses.dataclass(frozen=True)
class _FusedQKV:  # GPT-2's c_attn [..., 3H] <-> q, k, v [..., H] each
    layer: tuple[str, ...]
    name: str

    def paths(self):
        return [self.layer + ("attn", proj, self.name) for proj in ("q_proj", "k_proj", "v_proj")]

    def load(self, x):
        return list(zip(self.paths(), np.split(x, 3, axis=-1)))

    def save(self, get):
        return np.concatenate([get(path) for path in self.paths()], axis=-1)


Entry = tuple[str, tuple[int, ...], Any]


def _to(*path: str):
    return _Copy(path)


def _to_kernel(*path: str):
    return _Transposed(path)


def _llama_entries(c: LMConfig) -> list[Entry]:
    H, F, V = c.hidden_size, c.mlp_size, c.vocab_size
    q, kv = c.num_heads * c.dim_per_head, c.kv_heads * c.dim_per_head
    entries: list[Entry] = [("embed_tokens.weight", (V, H), _to("transformer", "embed", "embedding"))]
    for i in range(c.num_layers):
        p, layer = f"layers.{i}.", ("transformer", f"layers_{i}")
        entries += [
            (p + "input_layernorm.weight", (H,), _to(*layer, "attn_norm", "scale")),
            (p + "self_attn.q_proj.weight", (q, H), _to_kernel(*layer, "attn", "q_proj")),
            (p + "self_attn.k_proj.weight", (kv, H), _to_kernel(*layer, "attn", "k_proj")),
            (p + "self_attn.v_proj.weight", (kv, H), _to_kernel(*layer, "attn", "v_proj")),
            (p + "self_attn.o_proj.weight", (H, q), _to_kernel(*layer, "attn", "o_proj")),
            (p + "post_attention_layernorm.weight", (H,), _to(*layer, "mlp_norm", "scale")),
            (p + "mlp.gate_proj.weight", (F, H), _to_kernel(*layer, "mlp", "gate_proj")),
            (p + "mlp.up_proj.weight", (F, H), _to_kernel(*layer, "mlp", "up_proj")),
            (p + "mlp.down_proj.weight", (H, F), _to_kernel(*layer, "mlp", "down_proj")),
        ]
    entries.append(("norm.weight", (H,), _to("transformer", "final_norm", "scale")))
    return entries


def _gpt2_entries(c: LMConfig) -> list[Entry]:
    H, F, V, P = c.hidden_size, c.mlp_size, c.vocab_size, c.max_position_embeddings
    entries: list[Entry] = [
        ("wte.weight", (V, H), _to("transformer", "embed", "embedding")),
        ("wpe.weight", (P, H), _to("transformer", "position_embed", "embedding")),
    ]
    for i in range(c.num_layers):
        p, layer = f"h.{i}.", ("transformer", f"layers_{i}")
        entries += [
            (p + "ln_1.weight", (H,), _to(*layer, "attn_norm", "scale")),
            (p + "ln_1.bias", (H,), _to(*layer, "attn_norm", "bias")),
            (p + "attn.c_attn.weight", (H, 3 * H), _FusedQKV(layer, "kernel")),  # Conv1D: [in, out]
            (p + "attn.c_attn.bias", (3 * H,), _FusedQKV(layer, "bias")),
            (p + "attn.c_proj.weight", (H, H), _to(*layer, "attn", "o_proj", "kernel")),
            (p + "attn.c_proj.bias", (H,), _to(*layer, "attn", "o_proj", "bias")),
            (p + "ln_2.weight", (H,), _to(*layer, "mlp_norm", "scale")),
            (p + "ln_2.bias", (H,), _to(*layer, "mlp_norm", "bias")),
            (p + "mlp.c_fc.weight", (H, F), _to(*layer, "mlp", "c_fc", "kernel")),
            (p + "mlp.c_fc.bias", (F,), _to(*layer, "mlp", "c_fc", "bias")),
            (p + "mlp.c_proj.weight", (F, H), _to(*layer, "mlp", "c_proj", "kernel")),
            (p + "mlp.c_proj.bias", (H,), _to(*layer, "mlp", "c_proj", "bias")),
        ]
    entries += [
        ("ln_f.weight", (H,), _to("transformer", "final_norm", "scale")),
        ("ln_f.bias", (H,), _to("transformer", "final_norm", "bias")),
    ]
    return entries


def tensor_map(config: LMConfig) -> tuple[str, list[Entry]]:
    """The base model's name prefix (``model.`` / ``transformer.``) and its tensors' entries, for import and
    export alike (the heads, ``lm_head`` and ``score``, are outside the base model and handled apart)."""
    entries = _llama_entries(config) if config.style == "llama" else _gpt2_entries(config)
    return _PREFIX[config.style], entries


def _strip_prefix(tensors: dict[str, np.ndarray], style: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Drop the base-model prefix (``model.`` / ``transformer.``) and buffers that are not parameters.

    Returns the tensors by short name and each short name's name in the checkpoint."""
    prefix, out, original = _PREFIX[style], {}, {}
    for name, array in tensors.items():
        if any(pattern.match(name) for pattern in _IGNORED[style]):
            continue
        short = name[len(prefix) :] if name.startswith(prefix) else name
        if short in out:
            raise CheckpointImportError(f"tensors {original[short]!r} and {name!r} map to the same parameter")
        out[short], original[short] = array, name
    return out, original


def _insert(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _paths(tree: Mapping, prefix=()) -> Iterable[tuple[tuple[str, ...], Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _paths(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _take(tensors: dict, original: dict, name: str, shape: tuple[int, ...], prefix: str) -> np.ndarray:
    if name not in tensors:
        full = prefix + name if prefix and name not in _HEAD_TENSORS else name
        alias = f" (or {name!r} without the prefix)" if full != name else ""
        raise CheckpointImportError(f"tensor {full!r}{alias} missing from the checkpoint")
    array = tensors.pop(name)
    if tuple(array.shape) != tuple(shape):
        raise CheckpointImportError(
            f"tensor {original[name]!r}: expected shape {tuple(shape)}, got {tuple(array.shape)}"
        )
    return array


def _extra_heads(config: LMConfig, names: list[str], key) -> dict:
    """Freshly initialised heads that the checkpoint does not hold (value, reward)."""
    key = jax.random.PRNGKey(0) if key is None else key
    init = jax.jit(lambda k: {name: init_params(config, k)[name] for name in names})  # unused params are DCE'd
    return jax.device_get(init(key))


def load_hf_params(path, config: LMConfig, key: jax.Array | None = None) -> dict:
    """The rljax parameter tree of a local Hugging Face checkpoint, cast to ``config.param_dtype``.

    ``config`` is normally :func:`load_hf_config`'s. Layers are stacked when
    ``config.scan_layers``. A sequence classifier's ``score`` layer becomes the ``reward`` head (with a zero
    bias); ``value``/``reward`` heads that the checkpoint lacks (a causal LM has neither) are initialised
    from ``key`` (default ``PRNGKey(0)``).
    """
    path = _model_dir(path)
    tensors, original = _strip_prefix(_read_checkpoint(path), config.style)
    prefix, entries = tensor_map(config)

    flat: dict[tuple[str, ...], np.ndarray] = {}
    for name, shape, mapping in entries:
        for leaf_path, array in mapping.load(_take(tensors, original, name, shape, prefix)):
            flat[leaf_path] = array
    V, H = config.vocab_size, config.hidden_size
    embed = flat[("transformer", "embed", "embedding")]
    if config.tied:
        if "lm_head.weight" in tensors:  # some tied checkpoints store the (identical) head anyway
            head = _take(tensors, original, "lm_head.weight", (V, H), prefix)
            if not np.array_equal(np.asarray(head, np.float32), np.asarray(embed, np.float32)):
                raise CheckpointImportError(
                    "tensor 'lm_head.weight' differs from the token embedding, but the config ties them "
                    "(tie_word_embeddings=true)"
                )
    elif "lm" in config.heads or "lm_head.weight" in tensors:  # a sequence classifier has none
        head = _take(tensors, original, "lm_head.weight", (V, H), prefix)
        if "lm" in config.heads:
            flat[("lm_head", "kernel")] = head.T
    if "reward" in config.heads and "score.weight" in tensors:
        k = config.num_reward_outputs
        score = _take(tensors, original, "score.weight", (k, H), prefix)
        flat[("reward_head", "kernel")] = score.T
        flat[("reward_head", "bias")] = np.zeros((k,), score.dtype)  # transformers' score layer has no bias
    if tensors:
        raise CheckpointImportError(
            f"unexpected tensors in {path!r} (not used by a {config.style} model): {sorted(original[n] for n in tensors)}"
        )

    dtype = _NP_DTYPES[config.param_dtype]
    params: dict = {}
    for leaf_path, array in flat.items():
        _insert(params, leaf_path, np.ascontiguousarray(np.asarray(array).astype(dtype, copy=False)))
    if config.scan_layers:
        t = params["transformer"]
        layers = [t.pop(f"layers_{i}") for i in range(config.num_layers)]
        t["layers"] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
    extra = [f"{h}_head" for h in config.heads if h != "lm" and f"{h}_head" not in params]
    if extra:
        params.update(_extra_heads(config, extra, key))
    params = jax.tree.map(jax.numpy.asarray, params)
    _check_tree(params, config)
    return params


def _check_tree(params: dict, config: LMConfig) -> None:
    """The imported tree must have exactly the paths, shapes and dtypes of :func:`init_params`'s."""
    expected = jax.eval_shape(lambda k: init_params(config, k), jax.random.PRNGKey(0))
    want = {p: (tuple(v.shape), v.dtype) for p, v in _paths(expected)}
    got = {p: (tuple(v.shape), v.dtype) for p, v in _paths(params)}
    if set(want) != set(got):
        missing = ["/".join(p) for p in sorted(set(want) - set(got))]
        extra = ["/".join(p) for p in sorted(set(got) - set(want))]
        raise CheckpointImportError(
            f"imported parameter tree differs from the model's: missing {missing}, unexpected {extra}"
        )
    for p in sorted(want):
        if want[p] != got[p]:
            raise CheckpointImportError(
                f"parameter {'/'.join(p)}: model expects (shape, dtype) {want[p]}, imported {got[p]}"
            )


def load_hf_model(path, key: jax.Array | None = None, **overrides) -> tuple[LMConfig, dict]:
    """``(config, params)`` of a local Hugging Face model directory; see :func:`load_hf_config`."""
    config = load_hf_config(path, **overrides)
    return config, load_hf_params(path, config, key)


__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "CheckpointImportError",
    "UnsupportedCheckpointError",
    "load_hf_config",
    "load_hf_params",
    "load_hf_model",
]
