"""LoRA adapters as a params transform, and a model's first layers as a smaller model.

LoRA (Hu et al., 2022) adds ``scale * A @ B`` to a frozen kernel ``W`` [in, out] with ``A`` [in, r],
``B`` [r, out] and ``scale = alpha / r``; ``x (W + scale A B) = x W + scale (x A) B``, so merging the
adapters into the params before the forward pass gives the adapted model exactly, and the gradient of
anything computed from :func:`merge` with respect to the adapters is LoRA's. Initialisation as PEFT's
default: ``A`` Kaiming-uniform, ``B = 0``, so the adapted model starts equal to the base one.

    adapters = init(params, rank=16, key=key)
    logits = LanguageModel(config).apply({"params": merge(params, adapters, alpha=32)}, ids)

:func:`first_layers` keeps the embedding, the first ``k`` blocks, the final norm and the head: ULD's
assistant is the target's first layers plus LoRA (papers/preference-lm.md §1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from rljax.core.config import require
from rljax.lm.model import LMConfig

# The linear layers of an attention block and a SwiGLU / GELU MLP that PEFT's LoRA targets on Llama.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _kernels(params, targets):
    """``{path: kernel}`` for every 2-D ``kernel`` whose parent module's name is in ``targets``."""
    found = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = tuple(getattr(p, "key", str(p)) for p in path)
        if names[-1] == "kernel" and len(names) >= 2 and names[-2] in targets and jnp.ndim(leaf) == 2:
            found[names] = leaf
    return found


def init(params, rank: int, key, targets=DEFAULT_TARGETS) -> dict[str, dict[str, jax.Array]]:
    """Adapters ``{"a/b/kernel path": {"a": [in, r], "b": [r, out]}}`` for the targeted kernels of ``params``."""
    kernels = _kernels(params, targets)
    require(rank > 0, f"lora.init: rank must be positive, got {rank}")
    require(bool(kernels), f"lora.init: no 2-D kernel under a module named one of {list(targets)}")
    adapters = {}
    for i, (names, kernel) in enumerate(sorted(kernels.items())):
        fan_in = kernel.shape[0]
        bound = 1.0 / jnp.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)), as nn.Linear and PEFT
        a = jax.random.uniform(jax.random.fold_in(key, i), (fan_in, rank), jnp.float32, -bound, bound)
        adapters["/".join(names)] = {"a": a.astype(kernel.dtype), "b": jnp.zeros((rank, kernel.shape[1]), kernel.dtype)}
    return adapters


def merge(params, adapters, alpha: float):
    """``params`` with ``W + (alpha / r) A B`` in place of each adapted kernel ``W``."""
    def adapt(path, leaf):
        adapter = adapters.get("/".join(getattr(p, "key", str(p)) for p in path))
        if adapter is None:
            return leaf
        rank = adapter["a"].shape[1]
        return leaf + (alpha / rank) * (adapter["a"] @ adapter["b"]).astype(leaf.dtype)

    missing = set(adapters) - {"/".join(n) for n in _kernels(params, {k.split("/")[-2] for k in adapters})}
    require(not missing, f"lora.merge: adapters for kernels that params do not have: {sorted(missing)}")
    return jax.tree_util.tree_map_with_path(adapt, params)


def first_layers(params: Any, config: LMConfig, num_layers: int) -> tuple[Any, LMConfig]:
    """The embedding, blocks ``0 .. num_layers - 1``, final norm and heads of ``params`` (unstacked layers),
    with the matching config: a shallower model sharing the first layers and the head."""
    require(not config.scan_layers, "first_layers: expects unstacked layers (LMConfig.scan_layers = False)")
    require(0 < num_layers <= config.num_layers,
            f"first_layers: num_layers must be in 1..{config.num_layers}, got {num_layers}")
    transformer = {k: v for k, v in params["transformer"].items()
                   if not k.startswith("layers_") or int(k.removeprefix("layers_")) < num_layers}
    return params | {"transformer": transformer}, dataclasses.replace(config, num_layers=num_layers)
