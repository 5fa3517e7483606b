"""Imitation losses: adversarial discriminators (DAC, AILBoost), IQ-Learn, behaviour cloning.

Pure functions of network outputs; each returns ``(loss, aux)`` with ``aux`` a
flat dict of scalars, except ``gradient_penalty`` (a scalar).

Discriminators, with ``D(s, a)`` a real-valued network output:

* DAC / GAIL (Kostrikov et al. 2019): binary cross-entropy with expert = 1,
  learner = 0, i.e. ``E_E[softplus(-D)] + E_pi[softplus(D)]``.
* AILBoost (Chang et al. 2024, eq. 4): the variational form of the reverse KL
  ``KL(d^pi || d^E) = sup_D 1 - E_E[exp(-D)] - E_pi[D]``. The loss
  ``E_E[exp(-D)] + E_pi[D]`` is minimised by ``D* = log(d^E / d^pi)``, where it
  equals ``1 - KL``: so ``1 - loss`` is the divergence estimate (a lower bound
  that tightens as D trains), and ``D`` itself is the weak learner's reward.

IQ-Learn (Garg et al. 2021), the chi-squared objective as a loss to minimise,
with ``r = Q(s, a) - gamma * (1 - terminated) * V(s')`` the implicit reward::

    loss = -E_E[r] + value_term + E_reg[r^2] / (4 alpha)

``-E_E[r] + E_E[r^2]/(4 alpha) = -E_E[phi(r)]`` with ``phi(x) = x - x^2/(4 alpha)``,
the concave chi-squared ``phi`` of the paper. The value term replaces the
initial-state term ``(1 - gamma) E_{s0}[V(s0)]`` ("v0") by the telescoped
``E[V(s) - gamma (1 - terminated) V(s')]`` over expert states ("expert",
offline) or expert and learner states ("all", online); the regulariser runs
over expert states ("expert") or all ("all", online). With value term
"expert" the gamma V(s') parts cancel and the first two terms are
``E_E[V(s) - Q(s, a)]``, i.e. alpha times the softmax policy's negative log-likelihood.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rljax.core.config import ConfigError

VALUE_TERMS = ("expert", "all", "v0")
REGULARIZE_ON = ("expert", "all")


def dac_discriminator_loss(expert_logits, policy_logits):
    """Binary cross-entropy, expert labelled 1 and learner 0. Logits ``[B_E]`` and ``[B_pi]``."""
    expert_term = jax.nn.softplus(-expert_logits).mean()
    policy_term = jax.nn.softplus(policy_logits).mean()
    loss = expert_term + policy_term
    accuracy = 0.5 * ((expert_logits > 0).mean() + (policy_logits < 0).mean())
    return loss, {"disc_loss": loss, "disc_accuracy": accuracy,
                  "disc_expert": expert_logits.mean(), "disc_policy": policy_logits.mean()}


def reverse_kl_discriminator_loss(expert_d, policy_d):
    """AILBoost's ``E_E[exp(-D)] + E_pi[D]``; ``aux["kl_estimate"] = 1 - loss``. ``D``: ``[B_E]``, ``[B_pi]``."""
    loss = jnp.exp(-expert_d).mean() + policy_d.mean()
    return loss, {"disc_loss": loss, "kl_estimate": 1.0 - loss,
                  "disc_expert": expert_d.mean(), "disc_policy": policy_d.mean()}


def gradient_penalty(discriminator: Callable[[jax.Array], jax.Array], expert_x, policy_x, key, target_norm=1.0):
    """``E[(||grad_x D(x~)|| - target_norm)^2]`` at ``x~ = u x_E + (1 - u) x_pi``, ``u ~ U(0, 1)`` per row.

    ``discriminator`` maps one input row ``[d]`` to a scalar; ``expert_x`` and
    ``policy_x`` are ``[B, d]`` (state-action rows concatenated). Gulrajani et al.
    (2017); DAC and AILBoost add 10 times this to the discriminator loss.
    """
    u = jax.random.uniform(key, (expert_x.shape[0], 1), dtype=expert_x.dtype)
    mixed = u * expert_x + (1.0 - u) * policy_x
    grads = jax.vmap(jax.grad(discriminator))(mixed)
    norms = jnp.sqrt((grads**2).sum(axis=-1) + 1e-12)  # the epsilon keeps the gradient finite at 0
    return ((norms - target_norm) ** 2).mean()


def _masked_mean(x, mask):
    mask = mask.astype(x.dtype)
    return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def iq_learn_loss(q, v, next_v, terminated, is_expert, *, gamma, alpha=0.5, value_term="expert",
                  regularize_on="expert", initial_v=None):
    """The chi-squared IQ-Learn loss (see the module docstring); minimise it over Q.

    ``q``: ``[B]`` Q(s, a) at the batch's actions; ``v``, ``next_v``: ``[B]`` soft
    values V(s), V(s') of the same critic (no stop-gradient: the objective is a
    function of Q alone); ``terminated``, ``is_expert``: ``[B]`` bools;
    ``initial_v``: ``[B0]`` V(s0) for ``value_term="v0"``.
    """
    if value_term not in VALUE_TERMS:
        raise ConfigError(f"iq_learn_loss: value_term must be one of {VALUE_TERMS}, got {value_term!r}")
    if regularize_on not in REGULARIZE_ON:
        raise ConfigError(f"iq_learn_loss: regularize_on must be one of {REGULARIZE_ON}, got {regularize_on!r}")
    if value_term == "v0" and initial_v is None:
        raise ConfigError("iq_learn_loss: value_term='v0' needs initial_v, V at initial states")
    everyone = jnp.ones_like(is_expert, dtype=bool)
    discounted_next_v = gamma * (1.0 - terminated.astype(q.dtype)) * next_v
    reward = q - discounted_next_v
    expert_term = -_masked_mean(reward, is_expert)
    if value_term == "v0":
        value = (1.0 - gamma) * initial_v.mean()
    else:
        value = _masked_mean(v - discounted_next_v, is_expert if value_term == "expert" else everyone)
    chi2 = _masked_mean(reward**2, is_expert if regularize_on == "expert" else everyone) / (4.0 * alpha)
    loss = expert_term + value + chi2
    return loss, {"iq_loss": loss, "expert_reward": -expert_term, "value_term": value, "chi2_term": chi2,
                  "q_mean": _masked_mean(q, is_expert)}


def bc_loss(log_prob, entropy=None, entropy_coef=0.0):
    """Behaviour cloning: ``-E[log pi(a_E|s_E)] - entropy_coef * E[H(pi(.|s_E))]`` (``imitation``'s BC)."""
    nll = -log_prob.mean()
    loss = nll if entropy is None else nll - entropy_coef * entropy.mean()
    return loss, {"bc_loss": loss, "bc_nll": nll}
