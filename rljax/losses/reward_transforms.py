"""Transforming and combining Bradley-Terry rewards (Wang et al., ICML 2024), as pure functions.

A Bradley-Terry reward ``r(x, y)`` is known only up to a prompt-dependent shift, and any monotone map of it
ranks responses the same. Reading ``sigma(r(x, y) - r_ref(x))`` as the probability that ``y`` is *good*
(better than a reference response), the aligned policy should be the base policy conditioned on being
good, ``pi(y | x) ∝ pi_0(y | x) P(good | x, y)^(1 / beta)``: the optimum of RL with a KL penalty of weight
``beta`` (:mod:`rljax.losses.kl_control`) on the **log-sigmoid-centred** (LSC) utility

    u(x, y) = log sigma(r(x, y) - r_ref(x)).

It saturates near 0 for responses already well above the reference (little to gain from pushing them
further, so less reward hacking) and is steep below it. For several properties judged independently,
``sum_k log sigma(r_k - r_ref,k) = log P(good in every property)``: the sum of transformed rewards is a
logical AND, where the raw sum lets one large reward pay for a failure in another.

``r_ref(x)`` is a quantile of the base policy's rewards for the prompt (the paper: about the 85th
percentile of samples from the SFT policy; :func:`reference_reward`).
Shapes: rewards ``[..., K]`` for ``K`` properties, references ``[K]`` or broadcastable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

AGGREGATIONS = ("raw_sum", "lsc_sum")


def log_sigmoid_centered(rewards, reference_rewards):
    """The LSC utility ``log sigma(r - r_ref)`` (elementwise, <= 0)."""
    return jax.nn.log_sigmoid(jnp.asarray(rewards) - jnp.asarray(reference_rewards))


def reference_reward(base_rewards, quantile: float = 0.85):
    """``r_ref``: the ``quantile`` of rewards of responses sampled from the base policy, over the sample axis
    (``base_rewards`` [N, ...] -> [...]), per property when there are several."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"reference_reward: quantile must lie in [0, 1], got {quantile}")
    return jnp.quantile(jnp.asarray(base_rewards), quantile, axis=0)


def combine_rewards(rewards, reference_rewards, aggregation: str):
    """One utility [...] from ``K`` property rewards [..., K]: ``"raw_sum"`` adds them as they are (the usual
    baseline; the references do not matter), ``"lsc_sum"`` adds their LSC transforms (log P(all good))."""
    if aggregation == "raw_sum":
        return jnp.sum(jnp.asarray(rewards), axis=-1)
    if aggregation == "lsc_sum":
        return jnp.sum(log_sigmoid_centered(rewards, reference_rewards), axis=-1)
    raise ValueError(f"combine_rewards: unknown aggregation {aggregation!r}; known ones are {list(AGGREGATIONS)}")
