"""Decoder-only transformer in Flax linen, with LM, value and reward heads.

Two architectures share one module:

* ``"llama"``: RoPE (rotate-half layout, as Hugging Face's Llama), RMSNorm,
  SwiGLU MLP, grouped-query attention, no biases, untied LM head by default.
* ``"gpt2"``: learned absolute positions, LayerNorm, GELU (tanh approximation,
  GPT-2's ``gelu_new``) MLP of width 4H, biased projections, tied LM head.

Shapes: B batch, T tokens in this call, S key/value slots (T without a cache,
the cache length with one), H hidden, N query heads, K key/value heads, D head
dim, V vocab, L layers.

One forward function serves training and generation: keys and values of the
current tokens are written into an optional :class:`KVCache` at ``cache_index``
and each query attends to the valid slots at or before its own slot. Without a
cache the slots are the positions of this call, which gives the causal mask.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from rljax.core.config import ConfigError, require, require_one_of

STYLES = ("llama", "gpt2")
HEADS = ("lm", "value", "reward")
# jax.nn.dot_product_attention's implementations: "xla" materialises the [B, N, T, S] scores (any backend);
# "cudnn" is cuDNN's fused (flash) attention, NVIDIA GPUs only, bf16 or fp16, head dim a multiple of 8.
ATTENTION = ("xla", "cudnn")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """Static architecture of a decoder LM (hashable; fixed at trace time)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int | None = None  # None: as many as query heads (no grouping)
    head_dim: int | None = None  # None: hidden_size // num_heads
    intermediate_size: int | None = None  # None: 4H (gpt2) or Llama's 8H/3 rounded up to 64
    max_position_embeddings: int = 2048
    style: str = "llama"
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_embeddings: bool | None = None  # None: tied for gpt2, untied for llama
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: bool = False  # recompute each block's activations in the backward pass
    scan_layers: bool = False  # one scanned block (params stacked on a leading L axis)
    heads: tuple[str, ...] = ("lm",)
    num_reward_outputs: int = 1  # k > 1: multi-objective reward head, rewards [B, k]
    # Trainers' log-probs: 0 unembeds every scored position at once ([B, T, V] float32 logits);
    # N > 0 unembeds N positions of every row at a time and recomputes them in the backward
    # pass (chunked_token_logps), so only [B, N, V] logits are ever held.
    logits_chunk: int = 0
    attention: str = "xla"  # one of ATTENTION

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_position_embeddings"):
            require(getattr(self, name) > 0, f"LMConfig.{name}: expected a positive int, got {getattr(self, name)!r}")
        require_one_of(self, "style", STYLES)
        require_one_of(self, "dtype", DTYPES)
        require_one_of(self, "param_dtype", DTYPES)
        require_one_of(self, "attention", ATTENTION)
        require(
            self.attention != "cudnn" or self.dtype in ("bfloat16", "float16"),
            f"LMConfig.attention: 'cudnn' computes in 'bfloat16' or 'float16', got dtype={self.dtype!r}",
        )
        unknown = [h for h in self.heads if h not in HEADS]
        require(not unknown and self.heads, f"LMConfig.heads: expected a non-empty subset of {HEADS}, got {self.heads!r}")
        require(
            self.num_heads % self.kv_heads == 0,
            f"LMConfig.num_kv_heads: expected a divisor of num_heads={self.num_heads}, got {self.kv_heads}",
        )
        if self.head_dim is None:
            require(
                self.hidden_size % self.num_heads == 0,
                f"LMConfig.hidden_size: expected a multiple of num_heads={self.num_heads}, got {self.hidden_size}",
            )
        require(self.dim_per_head % 2 == 0 or self.style == "gpt2", f"LMConfig.head_dim: RoPE needs an even head dim, got {self.dim_per_head}")
        require(self.num_reward_outputs > 0, f"LMConfig.num_reward_outputs: expected >= 1, got {self.num_reward_outputs}")
        require(self.logits_chunk >= 0, f"LMConfig.logits_chunk: expected 0 (no chunking) or a positive int, got {self.logits_chunk!r}")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def mlp_size(self) -> int:
        if self.intermediate_size:
            return self.intermediate_size
        if self.style == "gpt2":
            return 4 * self.hidden_size
        return -(-int(8 * self.hidden_size / 3) // 64) * 64

    @property
    def tied(self) -> bool:
        return self.style == "gpt2" if self.tie_embeddings is None else self.tie_embeddings

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count (for FLOP estimates): 6 * params * tokens per training step."""
        H, F, D = self.hidden_size, self.mlp_size, self.dim_per_head
        attn = H * D * (self.num_heads * 2 + self.kv_heads * 2)
        mlp = (3 if self.style == "llama" else 2) * H * F
        total = self.num_layers * (attn + mlp)
        if include_embeddings:
            total += self.vocab_size * H * (1 if self.tied else 2)
            if self.style == "gpt2":
                total += self.max_position_embeddings * H
        return total


def llama_config(vocab_size=512, hidden_size=256, num_layers=4, num_heads=4, **kwargs) -> LMConfig:
    """A Llama-style :class:`LMConfig` (RoPE, RMSNorm, SwiGLU); ``kwargs`` set the other fields."""
    return LMConfig(vocab_size, hidden_size, num_layers, num_heads, style="llama", **kwargs)


def gpt2_config(vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12, **kwargs) -> LMConfig:
    """GPT-2 small is the default (124M parameters)."""
    kwargs.setdefault("max_position_embeddings", 1024)
    return LMConfig(vocab_size, hidden_size, num_layers, num_heads, style="gpt2", **kwargs)


@flax.struct.dataclass
class KVCache:
    """Keys and values of every layer: ``k``, ``v`` [L, B, S, K, D]."""

    k: jax.Array
    v: jax.Array

    @classmethod
    def init(cls, config: LMConfig, batch_size: int, max_length: int) -> "KVCache":
        shape = (config.num_layers, batch_size, max_length, config.kv_heads, config.dim_per_head)
        zeros = jnp.zeros(shape, DTYPES[config.dtype])
        return cls(k=zeros, v=zeros)


@flax.struct.dataclass
class LMOutput:
    """``hidden`` [B, T, H] (after the final norm: the unembedding's input);
    ``logits`` [B, T, V]; ``values`` [B, T]; ``rewards`` [B] or [B, k] read at the
    last attended token; ``cache`` the updated cache. Heads not built are None."""

    hidden: jax.Array
    logits: jax.Array | None = None
    values: jax.Array | None = None
    rewards: jax.Array | None = None
    cache: KVCache | None = None


def rotate_half(x):
    """``[..., d] -> [..., d]``: ``(x1, x2) -> (-x2, x1)``, RoPE in Hugging Face's rotate-half layout."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x, positions, theta: float):
    """RoPE in the rotate-half layout. ``x`` [B, T, N, D], ``positions`` [B, T]."""
    dim = x.shape[-1]
    inv_freq = 1.0 / theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    out = x.astype(jnp.float32) * jnp.cos(angles) + rotate_half(x.astype(jnp.float32)) * jnp.sin(angles)
    return out.astype(x.dtype)


def _dense(config: LMConfig, features: int, name: str, use_bias: bool):
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=DTYPES[config.dtype],
        param_dtype=DTYPES[config.param_dtype],
        kernel_init=nn.initializers.normal(0.02),
        name=name,
    )


def _norm(config: LMConfig, name: str):
    kwargs = dict(epsilon=config.norm_eps, dtype=DTYPES[config.dtype], param_dtype=DTYPES[config.param_dtype], name=name)
    return nn.RMSNorm(**kwargs) if config.style == "llama" else nn.LayerNorm(**kwargs)


class Attention(nn.Module):
    """Multi-head self-attention under the caller's (causal and padding) ``mask``, with an optional KV cache.

    Grouped-query: ``num_kv_heads`` K/V heads. Llama style: no biases, RoPE on q and k; GPT-2 style: biases,
    no RoPE. Returns ``(out [B, T, H], layer_cache)``.
    """

    config: LMConfig

    @nn.compact
    def __call__(self, x, positions, mask, layer_cache, cache_index):
        """``x`` [B, T, H]; ``mask`` [B, 1, T, S] bool; ``layer_cache`` (k, v) [B, S, K, D] or None."""
        c = self.config
        bias = c.style == "gpt2"
        B, T, H = x.shape
        x = x.reshape(B * T, H)  # 2-D matmuls: XLA:CPU's backward is ~1.6x faster than with [B, T, H]
        q = _dense(c, c.num_heads * c.dim_per_head, "q_proj", bias)(x).reshape(B, T, c.num_heads, c.dim_per_head)
        k = _dense(c, c.kv_heads * c.dim_per_head, "k_proj", bias)(x).reshape(B, T, c.kv_heads, c.dim_per_head)
        v = _dense(c, c.kv_heads * c.dim_per_head, "v_proj", bias)(x).reshape(B, T, c.kv_heads, c.dim_per_head)
        if c.style == "llama":
            q, k = apply_rope(q, positions, c.rope_theta), apply_rope(k, positions, c.rope_theta)
        if layer_cache is not None:
            cache_k, cache_v = layer_cache
            k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, cache_index, 0, 0))
            v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, cache_index, 0, 0))
            layer_cache = (k, v)
        # Grouped-query attention: jax.nn.dot_product_attention shares each K/V head
        # across num_heads // num_kv_heads query heads.
        if c.attention == "cudnn":
            require_attention_backend(c)
            out = cudnn_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask, causal=layer_cache is None)
        else:
            out = jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=mask)
        out = _dense(c, c.hidden_size, "o_proj", bias)(out.reshape(B * T, -1))
        return out.reshape(B, T, H), layer_cache


def require_attention_backend(config: LMConfig) -> None:
    """Raise :class:`ConfigError` naming ``LMConfig.attention`` when this process cannot run it ("cudnn"
    off an NVIDIA GPU): at trace time, and before a CLI run writes anything."""
    backend = jax.default_backend()
    require(
        config.attention != "cudnn" or backend == "gpu",
        f"LMConfig.attention: 'cudnn' runs on NVIDIA GPUs only, this process's backend is {backend!r}; use 'xla'",
    )


def cudnn_attention(q, k, v, mask, causal: bool):
    """cuDNN's fused attention (``LMConfig.attention="cudnn"``): ``q`` [B, T, N, D], ``k``, ``v`` [B, S, K, D],
    ``mask`` [B, 1, T, S] bool -> [B, T, N, D], equal to the XLA path up to rounding.

    cuDNN takes the mask as an additive bias; ``causal`` (a call without a KV cache, where query i is key
    slot i and the mask already holds the causal triangle) also lets it skip the tiles above the diagonal.
    """
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation="cudnn")


class MLP(nn.Module):
    """The block's feed-forward net, ``[..., H] -> [..., H]``: SwiGLU (Llama style) or GELU (GPT-2 style)."""

    config: LMConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # 2-D matmuls (see Attention)
        if c.style == "llama":  # SwiGLU: down(silu(gate(x)) * up(x))
            gate = _dense(c, c.mlp_size, "gate_proj", False)(x)
            up = _dense(c, c.mlp_size, "up_proj", False)(x)
            out = _dense(c, c.hidden_size, "down_proj", False)(nn.silu(gate) * up)
        else:
            hidden = nn.gelu(_dense(c, c.mlp_size, "c_fc", True)(x), approximate=True)
            out = _dense(c, c.hidden_size, "c_proj", True)(hidden)
        return out.reshape(shape)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    config: LMConfig

    @nn.compact
    def __call__(self, x, layer_cache, positions, mask, cache_index):
        attn, layer_cache = Attention(self.config, name="attn")(
            _norm(self.config, "attn_norm")(x), positions, mask, layer_cache, cache_index
        )
        x = x + attn
        x = x + MLP(self.config, name="mlp")(_norm(self.config, "mlp_norm")(x))
        return x, layer_cache


class Transformer(nn.Module):
    """Embeddings, L blocks and the final norm: ``(input_ids [B, T], ...) -> hidden [B, T, H]``."""

    config: LMConfig

    def setup(self):
        c = self.config
        self.embed = nn.Embed(
            c.vocab_size, c.hidden_size, embedding_init=nn.initializers.normal(0.02),
            dtype=DTYPES[c.dtype], param_dtype=DTYPES[c.param_dtype], name="embed",
        )  # fmt: skip
        if c.style == "gpt2":
            self.position_embed = nn.Embed(
                c.max_position_embeddings, c.hidden_size, embedding_init=nn.initializers.normal(0.01),
                dtype=DTYPES[c.dtype], param_dtype=DTYPES[c.param_dtype], name="position_embed",
            )  # fmt: skip
        block = nn.remat(Block) if c.remat else Block
        if c.scan_layers:
            self.layers = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
                length=c.num_layers,
            )(c, name="layers")
        else:
            self.layers = [block(c, name=f"layers_{i}") for i in range(c.num_layers)]
        self.final_norm = _norm(c, "final_norm")

    def __call__(self, input_ids, positions, mask, cache: KVCache | None, cache_index):
        c = self.config
        x = self.embed(input_ids)
        if c.style == "gpt2":
            x = x + self.position_embed(positions)
        layer_caches = None if cache is None else (cache.k, cache.v)
        if c.scan_layers:
            x, layer_caches = self.layers(x, layer_caches, positions, mask, cache_index)
        else:
            new_k, new_v = [], []
            for i, layer in enumerate(self.layers):
                layer_cache = None if cache is None else (cache.k[i], cache.v[i])
                x, layer_cache = layer(x, layer_cache, positions, mask, cache_index)
                if cache is not None:
                    new_k.append(layer_cache[0])
                    new_v.append(layer_cache[1])
            layer_caches = None if cache is None else (jnp.stack(new_k), jnp.stack(new_v))
        new_cache = None if cache is None else KVCache(k=layer_caches[0], v=layer_caches[1])
        return self.final_norm(x), new_cache

    def unembed(self, hidden):
        return self.embed.attend(hidden)


def last_token_index(attention_mask):
    """Index of the last attended token of each row [B] (works for left and right padding)."""
    T = attention_mask.shape[-1]
    return T - 1 - jnp.argmax(attention_mask[:, ::-1].astype(jnp.int32), axis=-1)


class LanguageModel(nn.Module):
    """Transformer plus the heads named in ``config.heads``.

    ``apply(params, input_ids [B, T], attention_mask [B, T] or [B, S] with a
    cache, positions [B, T] = None, cache = None, cache_index = 0) -> LMOutput``.

    * ``lm``: logits [B, T, V] (tied to the embedding or a separate ``lm_head``).
    * ``value``: per-token values [B, T] (a linear head on the hidden state).
    * ``reward``: scalar reward [B] (or [B, k] for k objectives) read at the last
      attended token of each row. With a cache that is the row's last attended
      slot, which must be one of this call's tokens: NaN in the rows where it
      is not (an earlier call's token, or a future slot left attended).

    Positions default to ``cache_index + arange(T)``: right padding, or a single
    unpadded row. Left-padded generation passes positions explicitly.
    ``logits_from`` (static): logits only for positions ``logits_from..T-1``
    (``[B, T - logits_from, V]``); trainers skip the prompt positions that no
    row scores, as TRL computes log-probs only where there are labels.
    ``compute_logits`` (static): False leaves ``logits`` None (the trainers' chunked
    log-probs unembed ``hidden`` themselves: :func:`chunked_token_logps`).
    """

    config: LMConfig

    @nn.compact
    def __call__(
        self, input_ids, attention_mask=None, positions=None, cache: KVCache | None = None, cache_index=0,
        logits_from: int = 0,
        compute_logits: bool = True,
    ):
        c = self.config
        B, T = input_ids.shape
        S = T if cache is None else cache.k.shape[2]
        if attention_mask is None:
            attention_mask = jnp.ones((B, S), jnp.bool_)
        if attention_mask.shape != (B, S):
            raise ConfigError(f"attention_mask: expected shape {(B, S)} (batch, key slots), got {attention_mask.shape}")
        query_slots = cache_index + jnp.arange(T)
        if positions is None:
            positions = jnp.broadcast_to(query_slots, (B, T))
        causal = jnp.arange(S)[None, :] <= query_slots[:, None]  # [T, S]
        mask = (causal[None] & attention_mask.astype(jnp.bool_)[:, None, :])[:, None]  # [B, 1, T, S]

        transformer = Transformer(c, name="transformer")
        hidden, cache = transformer(input_ids, positions, mask, cache, cache_index)
        out = {"hidden": hidden, "cache": cache}
        if "lm" in c.heads and compute_logits:
            h = hidden[:, logits_from:]  # positions before it never predict a scored token: skip their unembedding
            logits = transformer.unembed(h) if c.tied else _dense(c, c.vocab_size, "lm_head", False)(h)
            out["logits"] = logits.astype(jnp.float32)
        if "value" in c.heads:
            out["values"] = _dense(c, 1, "value_head", True)(hidden)[..., 0].astype(jnp.float32)
        if "reward" in c.heads:
            last = last_token_index(attention_mask) - cache_index  # [B] this call's position of the last slot
            in_call = (last >= 0) & (last < T)
            h = hidden[jnp.arange(B), jnp.clip(last, 0, T - 1)]
            rewards = _dense(c, c.num_reward_outputs, "reward_head", True)(h).astype(jnp.float32)
            rewards = jnp.where(in_call[:, None], rewards, jnp.nan)  # [B, k]
            out["rewards"] = rewards[:, 0] if c.num_reward_outputs == 1 else rewards
        return LMOutput(**out)


def unembedding(params, config: LMConfig) -> jax.Array:
    """The LM head's weight ``[H, V]``: the embedding transposed when tied, else ``lm_head``'s kernel."""
    if config.tied:
        return params["transformer"]["embed"]["embedding"].T
    return params["lm_head"]["kernel"]


def chunked_token_logps(hidden, weight, input_ids, chunk_size: int, dtype: str = "float32"):
    """``token_logps(hidden @ weight, input_ids)`` -> ``[B, T-1]`` without holding the ``[B, T-1, V]`` logits.

    ``hidden`` [B, T, H] (the final norm's output at the positions scored), ``weight`` [H, V]
    (:func:`unembedding`), ``input_ids`` [B, T]; ``dtype``: the model's compute dtype, in which
    the unembedding runs as in :class:`LanguageModel` (log-softmax in float32). The T-1
    predicting positions go through ``chunk_size`` at a time, every row at once (so a batch
    sharded over devices stays sharded): each chunk's ``[B, chunk_size, V]`` logits are reduced
    to log-probs and dropped, and recomputed in the backward pass (``jax.checkpoint``), as
    fused linear cross-entropy kernels do. Costs one more unembedding matmul per
    differentiated position; saves the logits' memory, which for a large vocabulary
    dominates a training step's.
    """
    B, T, H = hidden.shape
    if input_ids.shape != (B, T) or weight.ndim != 2 or weight.shape[0] != H:
        raise ValueError(
            f"chunked_token_logps: expected hidden [B, T, H], input_ids [B, T] and weight [H, V]; got hidden "
            f"{hidden.shape}, input_ids {input_ids.shape}, weight {weight.shape}"
        )
    n = T - 1
    num_chunks = -(-n // chunk_size)
    pad = num_chunks * chunk_size - n  # padded positions score token 0 and are dropped below
    h = jnp.pad(hidden[:, :-1], ((0, 0), (0, pad), (0, 0))).reshape(B, num_chunks, chunk_size, H)
    targets = jnp.pad(input_ids[:, 1:], ((0, 0), (0, pad))).reshape(B, num_chunks, chunk_size)
    compute = DTYPES[dtype]
    weight = weight.astype(compute)  # once, not per chunk

    @jax.checkpoint
    def chunk_logps(h_chunk, target_chunk):  # [B, chunk_size, H], [B, chunk_size] -> [B, chunk_size]
        logits = jnp.dot(h_chunk.astype(compute), weight).astype(jnp.float32)
        picked = jnp.take_along_axis(logits, target_chunk[..., None], axis=-1)[..., 0]
        return picked - jax.nn.logsumexp(logits, axis=-1)

    logps = jax.lax.map(lambda xs: chunk_logps(*xs), (h.swapaxes(0, 1), targets.swapaxes(0, 1)))
    return logps.swapaxes(0, 1).reshape(B, num_chunks * chunk_size)[:, :n]


def init_params(config: LMConfig, key: jax.Array, seq_len: int = 8):
    """Random parameters (normal(0.02) kernels, as GPT-2 and Llama initialise)."""
    ids = jnp.zeros((1, min(seq_len, config.max_position_embeddings)), jnp.int32)
    return LanguageModel(config).init(key, ids)["params"]


def count_params(params) -> int:
    """Number of scalars in a params pytree."""
    return sum(x.size for x in jax.tree.leaves(params))


def stack_layers(params, num_layers: int):
    """Unscanned ``layers_0..layers_{L-1}`` -> scanned ``layers`` (leading L axis)."""
    t = dict(params["transformer"])
    per_layer: Sequence = [t.pop(f"layers_{i}") for i in range(num_layers)]
    t["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
    return {**params, "transformer": t}


def unstack_layers(params, num_layers: int):
    """Scanned ``layers`` -> ``layers_0..layers_{L-1}``."""
    t = dict(params["transformer"])
    stacked = t.pop("layers")
    for i in range(num_layers):
        t[f"layers_{i}"] = jax.tree.map(lambda x: x[i], stacked)
    return {**params, "transformer": t}
