"""Preference models for learning a reward from segment comparisons (Knox et al., TMLR 2024).

A segment ``sigma = (s_0, a_0, s_1, ..., a_{T-1}, s_T)`` is scored one of two ways under a reward r:

* **partial return**: ``sum_t gamma^t r(s_t, a_t)``;
* **regret** (deterministic transitions): ``V*(s_0) - [sum_t gamma^t r(s_t, a_t) + gamma^T V*(s_T)]``, which
  telescopes to ``-sum_t gamma^t A*(s_t, a_t)`` with ``A* = Q* - V*`` (the paper's form for stochastic
  transitions).

The paper's tasks are episodic and undiscounted (gamma = 1). ``P(sigma_1 > sigma_2)`` is logistic in
``PR(sigma_1) - PR(sigma_2)`` for partial return and in ``regret(sigma_2) - regret(sigma_1)`` for regret.
Both logits are therefore a discounted sum of per-step scores, r for partial return and A* for regret,
differenced over the two segments: ``preference_logit(scores_1, scores_2, gamma)``. Learning fits r by cross-entropy on the labels
(``preference_loss``); under the regret model A* depends on r through Q* (``rljax.core.tabular.optimal_q``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

PREFERENCE_MODELS = ("partial_return", "regret")


def optimal_advantages(q: jax.Array) -> jax.Array:
    """``A*(s, a) = Q*(s, a) - max_a' Q*(s, a')``: ``[S, A]`` (<= 0, 0 at optimal actions)."""
    return q - q.max(-1, keepdims=True)


def segment_scores(table: jax.Array, states: jax.Array, actions: jax.Array) -> jax.Array:
    """``table[s_t, a_t]`` along segments: ``table [S, A]``, ``states`` / ``actions`` ``[..., T]`` -> ``[..., T]``."""
    return table[states, actions]


def discounted_sum(step_scores: jax.Array, gamma: float = 1.0) -> jax.Array:
    """``sum_t gamma^t x_t`` over the last axis ``[..., T]``."""
    return (step_scores * gamma ** jnp.arange(step_scores.shape[-1])).sum(-1)


def regret(step_advantages: jax.Array, gamma: float = 1.0) -> jax.Array:
    """``-sum_t gamma^t A*(s_t, a_t)`` over the last axis (>= 0; 0 exactly for optimal segments)."""
    return -discounted_sum(step_advantages, gamma)


def preference_logit(scores_1: jax.Array, scores_2: jax.Array, gamma: float = 1.0) -> jax.Array:
    """log-odds that segment 1 is preferred: ``sum_t gamma^t (scores_1 - scores_2)`` (scores: r or A*)."""
    return discounted_sum(scores_1, gamma) - discounted_sum(scores_2, gamma)


def preference_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Cross-entropy of ``labels`` (1: segment 1 preferred, 0: segment 2; or a probability) under
    ``sigmoid(logits)``; a ``weights``-weighted mean (e.g. 0 for pairs outside a subset) or a plain mean."""
    losses = optax.sigmoid_binary_cross_entropy(logits, labels)
    if weights is None:
        return losses.mean()
    return (weights * losses).sum() / weights.sum()


def step_scores(model: str, rewards: jax.Array, q: jax.Array | None) -> jax.Array:
    """The per-(s, a) score table ``[S, A]`` of ``model``: r for partial return, A* (from ``q`` = Q*) for regret."""
    if model == "partial_return":
        return rewards
    if model == "regret":
        if q is None:
            raise ValueError("step_scores: the regret model needs q = Q* of the reward")
        return optimal_advantages(q)
    raise ValueError(f"step_scores: model must be one of {PREFERENCE_MODELS}, got {model!r}")
