"""Transforming and combining rewards (Wang et al., 2024): the LSC utility, its references and the AND-like sum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import lsc_rewards
from envs.text import exact_kl
from rljax.losses import kl_control
from rljax.losses import reward_transforms as RT


def test_log_sigmoid_centered_hand_values_and_saturation():
    r, ref = jnp.array([-2.0, 0.5, 0.5, 6.0]), 0.5
    np.testing.assert_allclose(RT.log_sigmoid_centered(r, ref), -np.log1p(np.exp(-(np.asarray(r, np.float64) - ref))), rtol=1e-5)
    np.testing.assert_allclose(RT.log_sigmoid_centered(0.5, 0.5), np.log(0.5), rtol=1e-6)
    # diminishing returns: the slope is 1 - sigma(r - r_ref), near 1 far below the reference and near 0 far above
    slopes = jax.vmap(jax.grad(lambda x: RT.log_sigmoid_centered(x, ref)))(r)
    np.testing.assert_allclose(slopes, 1 - jax.nn.sigmoid(r - ref), rtol=1e-5)
    assert float(slopes[0]) > 0.9 and float(slopes[-1]) < 0.01


def test_the_lsc_sum_is_log_probability_of_good_in_every_property():
    rewards = jnp.array([[5.0, -2.0], [1.0, 1.0], [0.0, 3.0]])  # [responses, properties]
    reference = jnp.array([0.0, 0.5])
    lsc = RT.combine_rewards(rewards, reference, "lsc_sum")
    np.testing.assert_allclose(jnp.exp(lsc), jax.nn.sigmoid(rewards - reference).prod(axis=-1), rtol=1e-6)
    raw = RT.combine_rewards(rewards, reference, "raw_sum")
    np.testing.assert_allclose(raw, [3.0, 2.0, 3.0])
    # the raw sum prefers one great and one bad property; the LSC sum prefers good in both (an AND)
    assert float(raw[0]) > float(raw[1]) and float(lsc[1]) > float(lsc[0])
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        RT.combine_rewards(rewards, reference, "max")


def test_reference_reward_is_a_quantile_over_samples_per_property():
    samples = np.random.default_rng(0).normal(size=(1000, 2)) + np.array([0.0, 3.0])
    np.testing.assert_allclose(RT.reference_reward(samples, 0.85), np.quantile(samples, 0.85, axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match=r"quantile must lie in \[0, 1\], got 85"):
        RT.reference_reward(samples, 85)


def test_beta_for_kl_finds_the_optimum_with_the_target_kl():
    prior = jax.nn.log_softmax(jax.random.normal(jax.random.key(0), (50,)))
    utility = jax.random.normal(jax.random.key(1), (50,))
    for target in (0.1, 1.0, 2.0):
        beta = lsc_rewards.beta_for_kl(prior, utility, target)
        np.testing.assert_allclose(exact_kl(kl_control.posterior_logp(prior, utility, beta), prior), target, rtol=1e-4)


def test_the_experiments_rewards_are_standardised_and_conflict():
    sequences = np.arange(4096)[:, None] // 8 ** np.arange(3, -1, -1) % 8
    rewards = lsc_rewards.make_rewards(0, 8, sequences, conflict=0.5)
    np.testing.assert_allclose(rewards.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(rewards.std(axis=0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.corrcoef(rewards.T)[0, 1], -0.5, atol=1e-5)
