"""LLM unlearning objectives: ULD's logit difference (Ji et al., NeurIPS 2024) and the usual baselines.

ULD trains a small *assistant* with the unlearning objectives reversed, remembering the forget set and
forgetting the retain set, and at inference subtracts its logits from the unchanged target's:

    l = l_target - alpha * l_assistant     (alpha = 0.8 in the official evaluation: ``weight=-0.8``)

where the assistant's logits are first set to 0 on the tokens the target itself finds unlikely (the
relative-top filter of :func:`relative_top_mask`). The assistant's training loss is
``NLL(forget) + 5 * KL(U || p_assistant)`` on retain data (:func:`uniform_kl`).

Baselines: gradient ascent on the forget set (GA, ``-NLL``) and NPO (Zhang et al. 2024,
:func:`npo_loss`), each plus gradient descent on the retain set (GD, ``+NLL``).

Shapes: logits [..., V]; per-sequence NLLs [B].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def relative_top_mask(logits, relative_top: float):
    """True where a token is *filtered*: its log-prob under ``softmax(logits)`` is below
    ``min(max log-prob + log(relative_top), k-th largest log-prob)`` with ``k = int(relative_top * V)``,
    as the official code's ``relative_top_filter`` (so at least ``k`` tokens, and never the top one, pass).
    ``logits`` [..., V] -> [..., V] bool."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    k = max(int(relative_top * logits.shape[-1]), 1)
    kth_best = jax.lax.top_k(logp, k)[0][..., -1]
    threshold = jnp.minimum(logp.max(axis=-1) + jnp.log(relative_top), kth_best)
    return logp < threshold[..., None]


def uld_logits(target_logits, assistant_logits, alpha=0.8, relative_top: float = 1e-2):
    """ULD's combined logits ``target - alpha * assistant`` [..., V], the assistant's logits zeroed on the
    tokens :func:`relative_top_mask` filters out of the target's distribution (``relative_top = 0``: no
    filter)."""
    if relative_top > 0:
        assistant_logits = jnp.where(relative_top_mask(target_logits, relative_top), 0.0, assistant_logits)
    return target_logits - alpha * assistant_logits


def uniform_kl(logits, mask=None):
    """Mean over positions of KL(U || softmax(logits)) = -log V - mean_v log p_v, [..., V] -> scalar.

    Without ``mask`` every position counts, as the official ``UniformLossFunc`` (PyTorch's ``kl_div``
    with ``batchmean`` over the flattened ``B * T`` positions: prompt and padding included); with a
    ``mask`` [...] only its positions.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    per_position = -jnp.log(logits.shape[-1]) - logp.mean(axis=-1)
    if mask is None:
        return per_position.mean()
    mask = mask.astype(per_position.dtype)
    return (per_position * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def npo_loss(nll, ref_nll, beta=0.1):
    """Negative preference optimisation on the forget set: mean of ``-log sigmoid(beta (NLL - NLL_ref)) * 2 / beta``
    with sequence NLLs (summed over the answer tokens) under the model and the frozen original, [B] each."""
    return (-jax.nn.log_sigmoid(beta * (nll - jax.lax.stop_gradient(ref_nll)))).mean() * 2.0 / beta
