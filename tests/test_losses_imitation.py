"""Imitation losses: discriminators (DAC, AILBoost's reverse KL), gradient penalty, IQ-Learn, BC."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rljax.core.config import ConfigError
from rljax.losses import imitation



def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_dac_loss_by_hand():
    loss, aux = imitation.dac_discriminator_loss(jnp.array([0.0, 2.0]), jnp.array([0.0, -1.0]))
    expected = (softplus(0.0) + softplus(-2.0)) / 2 + (softplus(0.0) + softplus(-1.0)) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # Expert logits > 0 count as right, learner logits < 0 as right: 1 of 2, then 1 of 2.
    np.testing.assert_allclose(aux["disc_accuracy"], 0.5)


def test_reverse_kl_loss_by_hand():
    loss, aux = imitation.reverse_kl_discriminator_loss(jnp.array([0.0, math.log(2.0)]), jnp.array([1.0, -1.0]))
    np.testing.assert_allclose(loss, (1.0 + 0.5) / 2 + 0.0, rtol=1e-6)
    np.testing.assert_allclose(aux["kl_estimate"], 0.25, rtol=1e-6)


# Two distributions on three points, as exact samples: p_E = (1/2, 1/4, 1/4), p_mix = (1/4, 1/4, 1/2).
P_E, P_MIX = np.array([0.5, 0.25, 0.25]), np.array([0.25, 0.25, 0.5])
EXPERT_POINTS, MIXTURE_POINTS = jnp.array([0, 0, 1, 2]), jnp.array([0, 1, 2, 2])


def _minimise(loss_fn, steps=3000):
    d = jnp.zeros(3)
    opt = optax.adam(0.05)
    state = opt.init(d)

    @jax.jit
    def step(d, state):
        grads = jax.grad(lambda d: loss_fn(d)[0])(d)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(d, updates), state

    for _ in range(steps):
        d, state = step(d, state)
    return d


@pytest.mark.parametrize("loss_name", ["reverse_kl", "dac"])
def test_optimal_discriminator_is_the_log_density_ratio(loss_name):
    # Both losses are minimised pointwise by D*(x) = log(p_E(x) / p_mix(x)).
    fn = {"reverse_kl": imitation.reverse_kl_discriminator_loss, "dac": imitation.dac_discriminator_loss}[loss_name]
    d = _minimise(lambda d: fn(d[EXPERT_POINTS], d[MIXTURE_POINTS]))
    np.testing.assert_allclose(d, np.log(P_E / P_MIX), atol=2e-3)


def test_reverse_kl_loss_at_optimum_is_one_minus_kl():
    d = _minimise(lambda d: imitation.reverse_kl_discriminator_loss(d[EXPERT_POINTS], d[MIXTURE_POINTS]))
    _, aux = imitation.reverse_kl_discriminator_loss(d[EXPERT_POINTS], d[MIXTURE_POINTS])
    kl = float((P_MIX * np.log(P_MIX / P_E)).sum())  # KL(d^mix || d^E) = 0.1733
    np.testing.assert_allclose(aux["kl_estimate"], kl, atol=1e-5)
    # Any other D gives a lower bound.
    _, worse = imitation.reverse_kl_discriminator_loss(d[EXPERT_POINTS] + 0.3, d[MIXTURE_POINTS] + 0.3)
    assert worse["kl_estimate"] < kl - 1e-3


def test_gradient_penalty_linear_and_quadratic():
    key = jax.random.PRNGKey(0)
    expert, policy = jax.random.normal(key, (16, 2)), jax.random.normal(jax.random.PRNGKey(1), (16, 2))
    # Linear D(x) = w.x: the gradient is w everywhere, so the penalty is (|w| - 1)^2 = (5 - 1)^2.
    gp = imitation.gradient_penalty(lambda x: jnp.dot(jnp.array([3.0, 4.0]), x), expert, policy, key)
    np.testing.assert_allclose(gp, 16.0, rtol=1e-5)
    # D(x) = |x|^2 / 2 has gradient x; with expert == policy the interpolate is the point itself.
    gp = imitation.gradient_penalty(lambda x: 0.5 * jnp.sum(x**2), expert, expert, key)
    np.testing.assert_allclose(gp, np.mean((np.linalg.norm(expert, axis=1) - 1.0) ** 2), rtol=1e-5)


def test_gradient_penalty_interpolates_between_the_batches():
    # D(x) = |x|^2 / 2 with expert 0 and policy at distance 4: interpolates u * 0 + (1 - u) * 4 have
    # gradient norm 4 (1 - u), u ~ U(0, 1), so E[(4(1 - u) - 1)^2] = 16/3 - 4 + 1 = 7/3.
    expert, policy = jnp.zeros((200_000, 1)), jnp.full((200_000, 1), 4.0)
    gp = imitation.gradient_penalty(lambda x: 0.5 * jnp.sum(x**2), expert, policy, jax.random.PRNGKey(3))
    np.testing.assert_allclose(gp, 7.0 / 3.0, rtol=0.01)  # about 4 standard errors


IQ_BATCH = dict(q=jnp.array([1.0, 2.0]), v=jnp.array([1.5, 2.5]), next_v=jnp.array([1.0, 1.0]),
                terminated=jnp.array([False, True]), is_expert=jnp.array([True, False]))


@pytest.mark.parametrize("value_term, regularize_on, expected", [
    # r = q - 0.9 (1 - done) V' = (0.1, 2.0); only row 0 is expert.
    ("expert", "expert", -0.1 + (1.5 - 0.9) + 0.1**2 / 2),
    ("all", "all", -0.1 + ((1.5 - 0.9) + 2.5) / 2 + (0.1**2 + 2.0**2) / 2 / 2),
    ("v0", "expert", -0.1 + (1 - 0.9) * 2.0 + 0.1**2 / 2),
])
def test_iq_learn_loss_by_hand(value_term, regularize_on, expected):
    loss, aux = imitation.iq_learn_loss(
        **IQ_BATCH, gamma=0.9, alpha=0.5, value_term=value_term, regularize_on=regularize_on,
        initial_v=jnp.array([2.0]),
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(aux["expert_reward"], 0.1, rtol=1e-5)


def test_offline_iq_learn_is_softmax_nll_plus_chi2():
    # With value_term="expert" the gamma V' terms cancel: -E[r] + E[V - gamma V'] = E[V - Q] = -temp E[log pi(a|s)].
    key = jax.random.PRNGKey(0)
    temp, gamma, alpha = 0.7, 0.95, 0.5
    q_all, next_q_all = jax.random.normal(key, (8, 3)), jax.random.normal(jax.random.PRNGKey(1), (8, 3))
    actions = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
    v = temp * jax.nn.logsumexp(q_all / temp, axis=1)
    next_v = temp * jax.nn.logsumexp(next_q_all / temp, axis=1)
    q = q_all[jnp.arange(8), actions]
    done = jnp.zeros(8, bool)
    loss, aux = imitation.iq_learn_loss(q, v, next_v, done, jnp.ones(8, bool), gamma=gamma, alpha=alpha)
    nll = -jax.nn.log_softmax(q_all / temp, axis=1)[jnp.arange(8), actions].mean()
    chi2 = ((q - gamma * next_v) ** 2).mean() / (4 * alpha)
    np.testing.assert_allclose(loss, temp * nll + chi2, rtol=1e-5)
    np.testing.assert_allclose(aux["chi2_term"], chi2, rtol=1e-5)


def test_iq_learn_loss_rejects_bad_options():
    with pytest.raises(ConfigError, match="value_term must be one of .* got 'bogus'"):
        imitation.iq_learn_loss(**IQ_BATCH, gamma=0.9, value_term="bogus")
    with pytest.raises(ConfigError, match="regularize_on must be one of"):
        imitation.iq_learn_loss(**IQ_BATCH, gamma=0.9, regularize_on="policy")
    with pytest.raises(ConfigError, match="needs initial_v"):
        imitation.iq_learn_loss(**IQ_BATCH, gamma=0.9, value_term="v0")


def test_bc_loss():
    loss, aux = imitation.bc_loss(jnp.array([-1.0, -3.0]))
    np.testing.assert_allclose(loss, 2.0)
    loss, aux = imitation.bc_loss(jnp.array([-1.0, -3.0]), entropy=jnp.array([1.0, 3.0]), entropy_coef=0.1)
    np.testing.assert_allclose(loss, 2.0 - 0.2)
    np.testing.assert_allclose(aux["bc_nll"], 2.0)
