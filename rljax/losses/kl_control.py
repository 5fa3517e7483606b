"""RL with a KL penalty as Bayesian inference (Korbak, Perez & Buckley, EMNLP Findings 2022), as pure functions.

The KL-regularised objective of RLHF,

    J(pi) = E_{x ~ pi}[r(x)] - beta KL(pi || pi_0),

equals ``-beta KL(pi || pi*) + beta log Z`` with the posterior

    pi*(x) = pi_0(x) exp(r(x) / beta) / Z,    Z = sum_x pi_0(x) exp(r(x) / beta):

maximising J is variational inference of ``pi*`` (prior ``pi_0``, evidence ``exp(r / beta)``), and its one
maximiser is ``pi*`` itself. With ``beta = 0`` the maximiser is a point mass on ``argmax r``: the
distribution collapse the KL term prevents. A policy gradient on J samples from ``pi`` and scores each
sequence with the KL-penalised reward ``r(x) - beta (log pi(x) - log pi_0(x))`` (the penalty's gradient
term ``E_pi[grad log pi] = 0`` drops out), which is what :func:`kl_penalized_rewards` gives.

Shapes: per-token log-probs and ``completion_mask`` are [B, T]; rewards [B]. The exact functions work on a
whole enumerable space: log-probs and rewards [S] (``envs.text.SequenceSpace``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sequence_log_ratio(logps, ref_logps, completion_mask):
    """``log pi(x) - log pi_0(x)`` [B], summed over the completion tokens; its mean over samples from ``pi``
    estimates KL(pi || pi_0)."""
    return ((logps - ref_logps) * completion_mask).sum(axis=-1)


def kl_penalized_rewards(rewards, logps, ref_logps, completion_mask, beta):
    """The rewards of RL with a KL penalty, ``r(x) - beta (log pi(x) - log pi_0(x))`` [B], on sequences sampled
    from ``pi``; the log-probs are constants (no gradient flows through the reward)."""
    log_ratio = sequence_log_ratio(jax.lax.stop_gradient(logps), jax.lax.stop_gradient(ref_logps), completion_mask)
    return jnp.asarray(rewards) - beta * log_ratio


def posterior_logp(prior_logp, rewards, beta):
    """``log pi*`` [S] over a whole space: ``log pi_0 + r / beta``, normalised (beta > 0)."""
    logits = prior_logp + rewards / beta
    return logits - jax.nn.logsumexp(logits)


def log_partition(prior_logp, rewards, beta):
    """``log Z = log sum_x pi_0(x) exp(r(x) / beta)`` (scalar)."""
    return jax.nn.logsumexp(prior_logp + rewards / beta)


def kl_regularised_objective(logp, prior_logp, rewards, beta):
    """``J(pi) = E_pi[r] - beta KL(pi || pi_0)`` (scalar), exact over the space (``logp``, ``prior_logp``,
    ``rewards``: [S]); it equals ``-beta KL(pi || pi*) + beta log Z``."""
    probs = jnp.exp(logp)
    kl = jnp.sum(jnp.where(probs > 0, probs * (logp - prior_logp), 0.0))
    return jnp.sum(probs * rewards) - beta * kl
