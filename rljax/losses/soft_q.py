"""Soft-Q losses: SAC (Haarnoja et al., 2018a/b); later IQ-Learn and MAMQL.

Pure functions; ``aux`` is a flat dict of scalars. Equation numbers refer to
"Soft Actor-Critic Algorithms and Applications" (Haarnoja et al., 2018b).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_td_target(reward, terminated, next_q, next_log_prob, alpha, gamma):
    """y = r + gamma * (1 - terminated) * (min_i Q'_i(s', a') - alpha * log pi(a'|s')),  a' ~ pi(.|s').

    ``next_q``: [num_q, B] target-network values. Truncated transitions are not
    terminal: they bootstrap (s' is the pre-reset observation). The target is
    a constant for the critic (stop-gradient), eq. 3 with eq. 2's soft value.
    """
    soft_value = next_q.min(axis=0) - alpha * next_log_prob
    return jax.lax.stop_gradient(reward + gamma * (1.0 - terminated.astype(reward.dtype)) * soft_value)


def critic_loss(q, target):
    """J_Q = E[1/2 (Q_i(s, a) - y)^2], summed over the ensemble (eq. 5). ``q``: [num_q, B]."""
    loss = 0.5 * ((q - target[None]) ** 2).mean(axis=1).sum()
    return loss, {"q_loss": loss, "q_mean": q.mean()}


def actor_loss(log_prob, q, alpha):
    """J_pi = E_s E_{a~pi}[alpha * log pi(a|s) - min_i Q_i(s, a)] (eq. 7, reparameterised).

    ``q``: [num_q, B] values of the reparameterised actions; alpha is a constant here.
    """
    loss = (jax.lax.stop_gradient(alpha) * log_prob - q.min(axis=0)).mean()
    return loss, {"actor_loss": loss, "entropy": -log_prob.mean()}


def temperature_loss(log_alpha, log_prob, target_entropy):
    """J(alpha) = E_{a~pi}[-alpha * log pi(a|s) - alpha * target_entropy] (eq. 18), alpha = exp(log_alpha)."""
    alpha = jnp.exp(log_alpha)
    loss = -(alpha * jax.lax.stop_gradient(log_prob + target_entropy)).mean()
    return loss, {"alpha": alpha, "alpha_loss": loss}
