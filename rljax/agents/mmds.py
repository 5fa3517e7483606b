"""Mirror-descent search (MDS) and magnetic mirror-descent search (MMDS): decision-time planning as a policy
update (Sokota, Farina, Wu, Hu, Wang, Kolter, Brown, ICLR 2024, "The Update-Equivalence Framework for
Decision-Time Planning"; papers/control-rl.md §11).

The principle: a planner is sound when the policy it plays at a decision point equals one (or more) updates of a
last-iterate learning algorithm applied to the blueprint there. MMDS is magnetic mirror descent's update at the
current information state, with action values ``q(a)`` from the blueprint's belief and continuation:

    pi'(a) ∝ [pi_bp(a) rho(a)^(alpha eta) exp(eta q(a))]^(1 / (1 + alpha eta))

with a magnet ``rho`` (uniform by default) and regularisation ``alpha``; ``alpha = 0`` is MDS, ``pi_bp exp(eta q)``,
the update for common-payoff games. Applied at every information state and repeated, it is MMD itself, whose
iterates converge to the ``alpha``-quantal-response equilibrium of a two-player zero-sum game.

``q_fn(policy) -> q [I, A]`` supplies the values (``envs.kuhn.conditional_q`` computes them exactly).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


def mirror_descent_search_update(blueprint, q, *, step_size, regularization=0.0, magnet=None) -> jax.Array:
    """``[..., A]``: the (magnetic) mirror-descent update of ``blueprint`` with action values ``q``; ``magnet``
    defaults to uniform. ``regularization = 0`` gives MDS."""
    log_magnet = jnp.zeros_like(q) if magnet is None else jnp.log(magnet)
    scaled = regularization * step_size
    logits = (jnp.log(blueprint) + scaled * log_magnet + step_size * q) / (1.0 + scaled)
    return jax.nn.softmax(logits, axis=-1)


class SearchResult(NamedTuple):
    policy: jax.Array  # [I, A] after the last update
    metric: jax.Array  # [num_updates + 1] of ``metric_fn`` on the blueprint and after every update


def repeated_search(blueprint, q_fn: Callable, metric_fn: Callable, *, num_updates: int, step_size,
                    regularization=0.0, magnet=None) -> SearchResult:
    """Apply the search update at every information state ``num_updates`` times, each time with the values of the
    current policy, tracking ``metric_fn(policy)`` (e.g. exploitability). ``blueprint`` may be a pytree of
    ``[..., A]`` arrays (one per player, say) with ``q_fn`` returning the same structure; ``magnet``, if given,
    too."""

    def update(policy, q, rho):
        return mirror_descent_search_update(policy, q, step_size=step_size, regularization=regularization, magnet=rho)

    magnets = jax.tree.map(lambda p: jnp.full_like(p, 1.0 / p.shape[-1]), blueprint) if magnet is None else magnet

    def step(policy, _):
        policy = jax.tree.map(update, policy, q_fn(policy), magnets)
        return policy, metric_fn(policy)

    policy, metrics = jax.lax.scan(step, blueprint, None, length=num_updates)
    return SearchResult(policy, jnp.concatenate([metric_fn(blueprint)[None], metrics]))
