"""f-DPG (Go et al., ICML 2023): approximate a target distribution ``p`` by minimising any f-divergence
``D_f(pi || p) = E_p[f(pi / p)]``, as pure functions.

The gradient is ``E_{x ~ pi}[f'(pi(x) / p(x)) grad log pi(x)]``, so f-DPG is a policy gradient on the
*pseudo-reward* ``-f'(pi(x) / p(x))`` of whole sequences, minus a baseline. With ``t = pi / p``:

==============  ===================  ==============================  ======================================
name            D_f(pi || p)         pseudo-reward ``-f'(t)``        ``rljax.losses.dice`` generator
==============  ===================  ==============================  ======================================
``forward_kl``  KL(p || pi) (DPG)    ``p / pi``                      ``"reverse_kl"`` (``f = -log t``)
``reverse_kl``  KL(pi || p) (RLHF)   ``log p - log pi - 1``          ``"kl"`` (``f = t log t``)
``js``          JS(pi, p)            ``log((pi + p) / (2 pi)) / 2``  ``"js"``
``tv``          TV(pi, p)            ``-sign(pi - p) / 2``           ``"tv"``
==============  ===================  ==============================  ======================================

(The dice module names a generator by the divergence ``D_f(P || Q)`` it gives with ``P`` first; f-DPG
names it by the direction between the target and the policy.) ``p = P / Z`` for an unnormalised target
``P``; :func:`log_ratio` takes ``log Z`` from the trainer's running importance-sampling estimate. The
official code (naver/disco) drops JS's factor 1/2 (it minimises 2 JS), a gradient scale only.
Shapes: one value per sampled sequence, ``[B]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rljax.losses import dice

GENERATORS = {"forward_kl": "reverse_kl", "reverse_kl": "kl", "js": "js", "tv": "tv"}


def log_ratio(policy_logps, target_log_scores, log_z):
    """``log t = log pi(x) - log p(x)`` [B], with ``log p = log P - log Z``."""
    return policy_logps - (target_log_scores - log_z)


def pseudo_reward(divergence: str, log_t):
    """``-f'(t)`` [B] of f-DPG's ``divergence`` at the log-ratios ``log t`` [B] (module docstring's table)."""
    if divergence not in GENERATORS:
        raise ValueError(f"pseudo_reward: unknown divergence {divergence!r}; known ones are {list(GENERATORS)}")
    return -dice.f_prime(GENERATORS[divergence], jnp.exp(log_t))


def f_dpg_loss(policy_logps, pseudo_rewards, baseline):
    """The surrogate ``-mean((R - b) log pi(x))`` (scalar) whose gradient is f-DPG's update on samples from
    ``pi`` itself; the pseudo-rewards and the baseline are constants."""
    advantage = jax.lax.stop_gradient(pseudo_rewards - baseline)
    return -jnp.mean(advantage * policy_logps)
