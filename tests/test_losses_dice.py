"""Dual-RL primitives: conjugates, implicit maximisers, policy weights, gradient projection."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rljax.core.config import ConfigError
from rljax.losses import dice

GRID = np.linspace(0.05, 4.0, 400)  # ratios x > 0


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def numeric_conjugate(name, y, nonnegative=False):
    """sup_x x y - f(x) over a fine grid of x (x >= 0 when nonnegative)."""
    xs = np.linspace(0.0 if nonnegative else -20.0, 60.0, 600_001)
    xs = xs[xs > 0] if name in ("kl", "reverse_kl", "js") else xs
    return np.max(xs * y - np.asarray(dice.f(name, jnp.asarray(xs))))


@pytest.mark.parametrize("name, ys", [
    ("chi2", [-3.0, -1.0, 0.0, 0.7, 2.0]),
    ("kl", [-1.0, 0.0, 1.0, 2.0]),
    ("reverse_kl", [-3.0, -1.0, -0.4]),
    ("tv", [-0.5, -0.2, 0.0, 0.3, 0.5]),
    ("js", [-2.0, -0.5, 0.0, 0.2, 0.3]),
])
def test_conjugate_is_the_sup(name, ys):
    for y in ys:
        np.testing.assert_allclose(dice.conjugate(name, y), numeric_conjugate(name, y), atol=2e-4)
        np.testing.assert_allclose(dice.conjugate_nonnegative(name, y), numeric_conjugate(name, y, True), atol=2e-4)


def test_nonnegative_conjugate_differs_where_the_ratio_would_be_negative():
    # chi2: (f')^-1(y) = y/2 + 1 < 0 for y < -2, so the x >= 0 conjugate is -f(0) = -1 there.
    np.testing.assert_allclose(dice.conjugate("chi2", -4.0), -4.0 + 16.0 / 4.0)
    np.testing.assert_allclose(dice.conjugate_nonnegative("chi2", -4.0), -1.0)
    np.testing.assert_allclose(dice.conjugate_nonnegative("tv", -3.0), -0.5)
    assert np.isinf(dice.conjugate("tv", 0.6)) and np.isinf(dice.conjugate("reverse_kl", 0.1))


@pytest.mark.parametrize("name", ["chi2", "kl", "reverse_kl", "js"])
def test_fenchel_young_equality_at_f_prime(name):
    # f*(f'(x)) = x f'(x) - f(x), and (f')^-1(f'(x)) = x, for every x > 0.
    x = jnp.asarray(GRID)
    y = dice.f_prime(name, x)
    np.testing.assert_allclose(dice.conjugate(name, y), x * y - dice.f(name, x), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dice.f_prime_inverse(name, y), x, rtol=1e-9)
    # The conjugate's derivative is (f')^-1.
    np.testing.assert_allclose(jax.vmap(jax.grad(lambda y: dice.conjugate(name, y)))(y), x, rtol=1e-7)


def test_js_is_the_jensen_shannon_divergence():
    """E_Q[f(P / Q)] with the js generator = KL(P || M) / 2 + KL(Q || M) / 2 on random distributions; at the
    infinite-ratio edge the conjugate is +inf."""
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    m = (p + q) / 2
    js = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))
    np.testing.assert_allclose(np.sum(q * np.asarray(dice.f("js", jnp.asarray(p / q)))), js, rtol=1e-12)
    assert np.isinf(dice.conjugate("js", 0.4)) and np.isinf(dice.optimal_ratio("js", 0.4))


def test_optimal_ratio_maximises_over_nonnegative_ratios():
    for y in (-3.0, -1.0, 0.5, 2.0):
        w = float(dice.optimal_ratio("chi2", y))
        np.testing.assert_allclose(w, max(0.0, y / 2 + 1))
        np.testing.assert_allclose(w * y - float(dice.f("chi2", w)), dice.conjugate_nonnegative("chi2", y))
    np.testing.assert_allclose(dice.optimal_ratio("tv", jnp.array([-1.0, 0.0, 0.4])), [0.0, 1.0, 1.0])


def test_unknown_divergence_and_tv_inverse_are_errors():
    with pytest.raises(ConfigError, match="divergence: expected one of .* got 'hellinger'"):
        dice.conjugate("hellinger", 0.0)
    with pytest.raises(ConfigError, match="total variation's f' is a step"):
        dice.f_prime_inverse("tv", 0.0)
    with pytest.raises(ConfigError, match="fdvl_value_loss: divergence must be"):
        dice.fdvl_value_loss(jnp.zeros(3), 0.5, "kl")


# ---------------------------------------------------------------- implicit maximisers

Q = np.array([0.0, 1.0, 2.0, 5.0])  # Q over the dataset's actions at one state


def argmin_v(loss_fn, init=0.0, steps=4000, lr=0.02, values=Q):
    v = jnp.asarray(init)
    opt = optax.adam(lr)
    state = opt.init(v)

    @jax.jit
    def step(v, state):
        updates, state = opt.update(jax.grad(lambda v: loss_fn(values - v).mean())(v), state)
        return optax.apply_updates(v, updates), state

    for _ in range(steps):
        v, state = step(v, state)
    return float(v)


def expectile(values, tau):
    # The tau-expectile e solves tau E[(x - e)+] = (1 - tau) E[(e - x)+].
    lo, hi = float(values.min()), float(values.max())
    for _ in range(100):
        e = (lo + hi) / 2
        if tau * np.maximum(values - e, 0).mean() > (1 - tau) * np.maximum(e - values, 0).mean():
            lo = e
        else:
            hi = e
    return e


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_expectile_loss_minimiser_is_the_expectile(tau):
    v = argmin_v(lambda d: dice.expectile_loss(d, tau))
    np.testing.assert_allclose(v, expectile(np.asarray(Q), tau), atol=1e-3)
    if tau == 0.5:
        np.testing.assert_allclose(v, float(Q.mean()), atol=1e-3)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_gumbel_loss_minimiser_is_the_soft_max(beta):
    # Without clipping the batch rescaling only changes the step size, not the minimiser.
    v = argmin_v(lambda d: dice.gumbel_loss(d, beta))
    np.testing.assert_allclose(v, beta * np.log(np.mean(np.exp(np.asarray(Q) / beta))), atol=1e-3)


def test_gumbel_loss_clips_and_rescales_by_the_batch_max():
    diff = jnp.array([0.0, 2.0, 30.0])
    loss = dice.gumbel_loss(diff, 1.0, max_clip=5.0)
    z = np.minimum(np.asarray(diff), 5.0)
    scale = z.max()
    np.testing.assert_allclose(loss, np.exp(z - scale) - z * np.exp(-scale) - np.exp(-scale), rtol=1e-12)
    # A batch whose largest z is below -1 is rescaled by exp(1), not exp(-max z).
    low = dice.gumbel_loss(jnp.array([-3.0, -2.0]), 1.0)
    np.testing.assert_allclose(low, np.exp([-2.0, -1.0]) + np.array([3.0, 2.0]) * np.e - np.e, rtol=1e-12)


def test_tv_value_loss_minimiser_is_the_quantile():
    # alpha * 1[Q > V] = 1 - alpha on average: P(Q > V) = (1 - alpha) / alpha = 1/4 for alpha = 0.8,
    # so V sits between the 3rd and 4th of four values: the loss is flat on (2, 5), minimal there.
    losses = {v: float(dice.fdvl_value_loss(Q - v, 0.8, "tv").mean()) for v in (1.5, 2.5, 4.5, 5.5)}
    assert losses[2.5] == pytest.approx(losses[4.5]) and losses[2.5] < losses[1.5] and losses[2.5] < losses[5.5]


def test_chi2_value_loss_minimiser_meets_its_first_order_condition():
    # alpha E[psi'(Q - V)] = 1 - alpha with psi(d) = max(d + d^2/4, 0), psi'(d) = 1 + d/2 for d > 0
    # (Q spread within 4, so no d < -4): E[(1 + (Q - V)/2)+ 1(Q > V)] = (1 - alpha)/alpha = 1/4.
    values, alpha = np.array([0.0, 1.0, 2.0, 3.0]), 0.8
    condition = lambda v: np.mean(np.where(values > v, 1 + (values - v) / 2, 0.0)) - (1 - alpha) / alpha  # noqa: E731
    lo, hi = 0.0, 3.0
    for _ in range(60):  # bisection on the decreasing condition
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if condition(mid) > 0 else (lo, mid)
    v = argmin_v(lambda d: dice.fdvl_value_loss(d, alpha, "chi2"), values=values)
    np.testing.assert_allclose(v, lo, atol=1e-3)
    assert 2.0 < v < 3.0  # above the mean: an upper statistic of Q


def test_fdvl_reverse_kl_is_xql():
    diff = jnp.array([-1.0, 0.5, 3.0])
    np.testing.assert_allclose(dice.fdvl_value_loss(diff, 2.0, "reverse_kl", max_clip=7.0),
                               dice.gumbel_loss(diff, 2.0, max_clip=7.0))


# ---------------------------------------------------------------- policy extraction, gradients


def test_awr_weights_and_weighted_bc():
    w = dice.awr_weights(jnp.array([0.0, 1.0, 10.0]), beta=3.0)
    np.testing.assert_allclose(w, [1.0, np.exp(3.0), 100.0])
    np.testing.assert_allclose(dice.weighted_bc_loss(jnp.array([-1.0, -2.0]), jnp.array([1.0, 3.0])), (1 + 6) / 2)
    # The weights are constants for the policy gradient.
    grad = jax.grad(lambda a: dice.weighted_bc_loss(jnp.array([-1.0, -2.0]), dice.awr_weights(a, 1.0)).sum())
    np.testing.assert_allclose(grad(jnp.array([0.5, 0.1])), 0.0)


def test_projection_is_orthogonal_and_idempotent():
    key = jax.random.PRNGKey(0)
    g = {"w": jax.random.normal(key, (3, 4)), "b": jnp.arange(4.0)}
    n = {"w": jax.random.normal(jax.random.PRNGKey(1), (3, 4)), "b": jnp.ones(4)}
    p = dice.project_orthogonal(g, n)
    np.testing.assert_allclose(dice.tree_dot(p, n), 0.0, atol=1e-10)
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])  # noqa: E731
    np.testing.assert_allclose(flat(dice.project_orthogonal(p, n)), flat(p), atol=1e-12)
    # g = p + c n with c = <g, n> / |n|^2.
    c = dice.tree_dot(g, n) / dice.tree_dot(n, n)
    np.testing.assert_allclose(flat(p) + c * flat(n), flat(g), atol=1e-12)
    # A zero normal leaves g alone.
    np.testing.assert_allclose(flat(dice.project_orthogonal(g, jax.tree.map(jnp.zeros_like, n))), flat(g))
    np.testing.assert_allclose(dice.cosine_similarity(g, jax.tree.map(lambda x: -2 * x, g)), -1.0, rtol=1e-12)
