import distrax
import jax
import jax.numpy as jnp
import numpy as np

from rljax.agents.ppo import PPOHParams
from rljax.losses.policy_gradient import PPOBatch, clipped_surrogate, clipped_value_loss, ppo_loss


def test_clipped_surrogate_analytic():
    # ratios 0.5, 1.0, 1.5 with advantages +1, -1, +1 and eps 0.2:
    # min(r A, clip(r) A) = min(0.5, 0.8) = 0.5; min(-1, -1) = -1; min(1.5, 1.2) = 1.2
    ratio = jnp.array([0.5, 1.0, 1.5])
    adv = jnp.array([1.0, -1.0, 1.0])
    loss, aux = clipped_surrogate(jnp.log(ratio), jnp.zeros(3), adv, 0.2)
    np.testing.assert_allclose(loss, -(0.5 - 1.0 + 1.2) / 3, rtol=1e-6)
    np.testing.assert_allclose(aux["clip_fraction"], 2 / 3)
    expected_kl = np.mean((np.array([0.5, 1.0, 1.5]) - 1) - np.log([0.5, 1.0, 1.5]))
    np.testing.assert_allclose(aux["approx_kl"], expected_kl, rtol=1e-6)


def test_clipped_surrogate_gradient_vanishes_outside_the_trust_region():
    adv = jnp.array([1.0])
    grad = jax.grad(lambda lp: clipped_surrogate(lp, jnp.zeros(1), adv, 0.2)[0])
    assert float(grad(jnp.log(jnp.array([1.5])))[0]) == 0.0  # clipped: ratio above 1 + eps with A > 0
    np.testing.assert_allclose(grad(jnp.log(jnp.array([1.1])))[0], -1.1, rtol=1e-6)  # d(-r)/dlog r = -r


def test_clipped_value_loss_analytic():
    # V_old = 0, target = 1, eps = 0.2: V = 0.5 -> max(0.25, (0.2 - 1)^2 = 0.64) = 0.64
    loss = clipped_value_loss(jnp.array([0.5]), jnp.array([0.0]), jnp.array([1.0]), 0.2)
    np.testing.assert_allclose(loss, 0.5 * 0.64, rtol=1e-6)


def test_ppo_loss_combines_terms_with_coefficients():
    logits = jnp.array([[0.3, -0.2], [1.0, 0.0]])
    apply_fn = lambda params, obs: (distrax.Categorical(logits=params["logits"]), params["v"])  # noqa: E731
    params = {"logits": logits, "v": jnp.array([0.1, -0.1])}
    batch = PPOBatch(
        obs=jnp.zeros((2, 1)), action=jnp.array([0, 1]), log_prob=jnp.array([-0.7, -1.0]),
        value=jnp.array([0.0, 0.0]), advantage=jnp.array([1.0, -1.0]), target=jnp.array([0.5, 0.5]),
    )
    hp = PPOHParams(ent_coef=0.1, vf_coef=0.5)
    total, aux = ppo_loss(params, apply_fn, batch, hp, normalize_advantages=False)
    pi = distrax.Categorical(logits=logits)
    pg, _ = clipped_surrogate(pi.log_prob(batch.action), batch.log_prob, batch.advantage, 0.2)
    vl = clipped_value_loss(params["v"], batch.value, batch.target, 0.2)
    np.testing.assert_allclose(total, pg + 0.5 * vl - 0.1 * pi.entropy().mean(), rtol=1e-6)
    np.testing.assert_allclose(aux["value_loss"], vl, rtol=1e-6)
