"""Dual-RL primitives: f-divergences and their conjugates, implicit maximisers, policy
extraction weights, and gradient projection (Sikchi et al. 2024 "Dual RL"; Garg et al.
2023 "Extreme Q-Learning"; Kostrikov et al. 2022 "IQL"; Mao et al. 2024 "ODICE").

**f-divergences.** ``D_f(P || Q) = E_Q[f(dP/dQ)]`` with ``f`` convex and ``f(1) = 0``:

=============  =====================  ====================  =======================
name           f(x)                   f*(y) (unconstrained)  (f')^{-1}(y) = (f*)'(y)
=============  =====================  ====================  =======================
``chi2``       (x - 1)^2              y + y^2 / 4            y / 2 + 1
``tv``         |x - 1| / 2            y  on |y| <= 1/2       (a subgradient set)
``kl``         x log x                exp(y - 1)             exp(y - 1)
``reverse_kl`` -log x                 -1 - log(-y), y < 0    -1 / y
``js``         x log x / 2            -log(2 - e^{2y}) / 2   e^{2y} / (2 - e^{2y}),
               - (1+x) log((1+x)/2)/2  on y < log(2) / 2      y < log(2) / 2
=============  =====================  ====================  =======================

(``js`` is the Jensen-Shannon divergence ``JS(P, Q) = KL(P || M) / 2 + KL(Q || M) / 2``, ``M = (P + Q) / 2``;
``f'(x) = log(2x / (1 + x)) / 2``, as f-DPG's pseudo-reward uses it.)

Density ratios are non-negative, so the dual problems use the conjugate over
``x >= 0``, ``f*_p(y) = sup_{x >= 0} x y - f(x)``, whose maximiser is
``w*(y) = max(0, (f')^{-1}(y))`` (the optimal ratio, e.g. ODICE's
``max(0, y/2 + 1)`` for chi2). ``f*_p`` equals ``f*`` where ``(f')^{-1}(y) >= 0``
and ``-f(0)`` below (chi2: -1 for y < -2; tv: -1/2 for y < -1/2).

**Implicit maximisers.** Losses of ``diff = Q(s, a) - V(s)`` minimised over ``V``
whose minimiser is a statistic of ``Q`` over dataset actions that tends to the
max: the expectile (IQL), the Gumbel/log-sum-exp (XQL, ``beta log E[exp(Q/beta)]``),
and f-DVL's ``alpha f*_p(diff) - (1 - alpha) diff`` for chi2 and tv in the form
of the official code (see ``fdvl_value_loss``).

All functions are elementwise (or batch-wise where stated) and jit/vmap/grad-able.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rljax.core.config import ConfigError

DIVERGENCES = ("chi2", "tv", "kl", "reverse_kl", "js")


def _check(name: str) -> None:
    if name not in DIVERGENCES:
        raise ConfigError(f"divergence: expected one of {DIVERGENCES}, got {name!r}")


# ---------------------------------------------------------------- f-divergences


def f(name: str, x):
    """The generator ``f(x)`` (``x > 0``; ``x >= 0`` for chi2 and tv)."""
    _check(name)
    if name == "chi2":
        return (x - 1.0) ** 2
    if name == "tv":
        return 0.5 * jnp.abs(x - 1.0)
    if name == "kl":
        return x * jnp.log(x)
    if name == "js":
        return 0.5 * (x * jnp.log(x) - (1.0 + x) * jnp.log((1.0 + x) / 2.0))
    return -jnp.log(x)


def f_prime(name: str, x):
    """``f'(x)`` (tv: the subgradient ``sign(x - 1) / 2``, 0 at 1)."""
    _check(name)
    if name == "chi2":
        return 2.0 * (x - 1.0)
    if name == "tv":
        return 0.5 * jnp.sign(x - 1.0)
    if name == "kl":
        return jnp.log(x) + 1.0
    if name == "js":
        return 0.5 * jnp.log(2.0 * x / (1.0 + x))
    return -1.0 / x


def f_prime_inverse(name: str, y):
    """``(f')^{-1}(y)``, the maximiser of ``x y - f(x)``. tv has none (``f'`` is a step): an error."""
    _check(name)
    if name == "chi2":
        return y / 2.0 + 1.0
    if name == "tv":
        raise ConfigError("f_prime_inverse: total variation's f' is a step function with no inverse")
    if name == "kl":
        return jnp.exp(y - 1.0)
    if name == "js":
        u = jnp.exp(2.0 * y)
        return u / (2.0 - u)
    return -1.0 / y


def conjugate(name: str, y):
    """The Fenchel conjugate ``f*(y) = sup_x x y - f(x)`` (tv: ``y`` on ``|y| <= 1/2``, +inf outside;
    reverse_kl: ``y < 0``, +inf otherwise; js: ``y < log(2) / 2``, +inf otherwise)."""
    _check(name)
    if name == "chi2":
        return y + y**2 / 4.0
    if name == "tv":
        return jnp.where(jnp.abs(y) <= 0.5, y, jnp.inf)
    if name == "kl":
        return jnp.exp(y - 1.0)
    if name == "js":
        inside = y < 0.5 * jnp.log(2.0)
        return jnp.where(inside, -0.5 * jnp.log(2.0 - jnp.exp(2.0 * jnp.where(inside, y, 0.0))), jnp.inf)
    return jnp.where(y < 0, -1.0 - jnp.log(jnp.where(y < 0, -y, 1.0)), jnp.inf)


def optimal_ratio(name: str, y):
    """``w*(y) = argmax_{x >= 0} x y - f(x)``: the optimal density ratio for a dual residual ``y``.

    chi2: ``max(0, y/2 + 1)``; tv: 1 on ``|y| < 1/2`` (any ratio in [0, 1] at -1/2, 0 below; the
    sup is unbounded above 1/2, returned as +inf); kl: ``exp(y - 1)``; reverse_kl: ``-1/y`` (y < 0);
    js: ``e^{2y} / (2 - e^{2y})`` (y < log(2) / 2).
    """
    _check(name)
    if name == "chi2":
        return jnp.maximum(0.0, y / 2.0 + 1.0)
    if name == "tv":
        return jnp.where(y > 0.5, jnp.inf, jnp.where(y < -0.5, 0.0, 1.0))
    if name == "kl":
        return jnp.exp(y - 1.0)
    if name == "js":
        inside = y < 0.5 * jnp.log(2.0)
        return jnp.where(inside, f_prime_inverse(name, jnp.where(inside, y, 0.0)), jnp.inf)
    return jnp.where(y < 0, -1.0 / jnp.where(y < 0, y, -1.0), jnp.inf)


def conjugate_nonnegative(name: str, y):
    """``f*_p(y) = sup_{x >= 0} x y - f(x)`` = ``y w*(y) - f(w*(y))``.

    chi2: ``y + y^2/4`` for ``y >= -2``, else -1 (ODICE's ``y w* - (w* - 1)^2``);
    tv: ``max(y, -1/2)`` on ``y <= 1/2``; kl, reverse_kl and js: as ``conjugate`` (their
    maximisers are positive already).
    """
    _check(name)
    if name == "chi2":
        w = optimal_ratio(name, y)
        return y * w - (w - 1.0) ** 2
    if name == "tv":
        return jnp.where(y <= 0.5, jnp.maximum(y, -0.5), jnp.inf)
    return conjugate(name, y)


# ---------------------------------------------------------------- implicit maximisers


def expectile_loss(diff, expectile: float):
    """IQL's asymmetric square ``|expectile - 1(diff < 0)| diff^2``, ``diff = Q - V``.

    Minimised over ``V`` by the ``expectile`` expectile of ``Q`` (0.5: the mean; -> 1: the max).
    """
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def gumbel_loss(diff, beta, max_clip: float | None = None):
    """XQL's Gumbel regression ``exp(z) - z - 1``, ``z = diff / beta``, ``diff = Q - V``.

    Minimised over ``V`` by ``beta log E[exp(Q / beta)]`` (a soft max over the
    dataset's actions). As in the official XQL code, ``z`` is clipped above at
    ``max_clip`` and the loss is divided by ``exp(max z)`` over the batch (at least
    ``exp(-1)``, a stop-gradient): a per-batch adaptive step size against the
    exponential's outliers. The rescaling acts over axis 0 (the batch).
    """
    z = diff / beta
    if max_clip is not None:
        z = jnp.minimum(z, max_clip)
    scale = jax.lax.stop_gradient(jnp.maximum(z.max(axis=0), -1.0))
    return jnp.exp(z - scale) - z * jnp.exp(-scale) - jnp.exp(-scale)


def fdvl_value_loss(diff, alpha, divergence: str, max_clip: float | None = None):
    """f-DVL's value loss ``alpha f*_p(diff) - (1 - alpha) diff``, ``diff = Q - V``, in the *official
    code's* form (kept for comparison; ``rljax.agents.implicit_value`` implements the paper's
    ``lambda alpha f*_p(diff / alpha) - (1 - lambda) diff`` with the true ``conjugate_nonnegative``).

    chi2: ``f*_p(x) = max(x + x^2/4, 0)``; tv: ``max(x, 0)``; reverse_kl: XQL's Gumbel
    loss with ``beta = alpha`` (the reverse-KL instance of f-DVL *is* XQL). The name is the
    papers' and the code's: their reverse KL is ``KL(d || d^O)``, ``f(x) = x log x``, which is
    ``"kl"`` in this module's f-divergence table (whose ``"reverse_kl"``, ``-log x``, is the
    other direction). With
    ``alpha`` in (1/2, 1] the minimiser over ``V`` is an upper statistic of ``Q``: for tv,
    the value with ``P(Q > V) = (1 - alpha) / alpha``.
    """
    if divergence == "reverse_kl":
        return gumbel_loss(diff, alpha, max_clip)
    if divergence == "chi2":
        return alpha * jnp.maximum(diff + diff**2 / 4.0, 0.0) - (1.0 - alpha) * diff
    if divergence == "tv":
        return alpha * jnp.maximum(diff, 0.0) - (1.0 - alpha) * diff
    raise ConfigError(f"fdvl_value_loss: divergence must be 'chi2', 'tv' or 'reverse_kl', got {divergence!r}")


# ---------------------------------------------------------------- policy extraction


def awr_weights(advantage, beta, max_weight: float = 100.0):
    """Advantage-weighted regression weights ``min(exp(beta A), max_weight)`` (stop-gradient)."""
    return jax.lax.stop_gradient(jnp.minimum(jnp.exp(beta * advantage), max_weight))


def weighted_bc_loss(log_prob, weights):
    """Weighted behaviour cloning ``-E[w log pi(a|s)]`` over dataset pairs (weights are constants)."""
    return -(jax.lax.stop_gradient(weights) * log_prob).mean()


# ---------------------------------------------------------------- gradient geometry


def tree_dot(a: Any, b: Any) -> jax.Array:
    """``<a, b>`` of two pytrees of the same structure, as flat vectors."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def cosine_similarity(a: Any, b: Any, eps: float = 1e-12) -> jax.Array:
    """``<a, b> / (|a| |b|)`` of two pytrees (0 when either is 0)."""
    return tree_dot(a, b) / jnp.maximum(jnp.sqrt(tree_dot(a, a) * tree_dot(b, b)), eps)


def project_orthogonal(g: Any, normal: Any, eps: float = 1e-12) -> Any:
    """``g - <g, n> / |n|^2 n``: ``g`` projected onto the plane orthogonal to ``n`` (pytrees).

    ODICE's orthogonal update uses the backward gradient projected this way against
    the forward one. A zero ``n`` leaves ``g`` unchanged.
    """
    coef = tree_dot(g, normal) / jnp.maximum(tree_dot(normal, normal), eps)
    return jax.tree.map(lambda x, n: x - coef * n, g, normal)
