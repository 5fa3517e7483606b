"""f-DPG (Go et al., 2023): pseudo-rewards in closed form, the surrogate's exact gradient is the divergence's,
and the online trainer estimates Z and approaches its target."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.text import SequenceSpace, exact_kl, prompted_rows, random_mlp_reward
from rljax.core.config import ConfigError
from rljax.lm import f_dpg
from rljax.lm import train as lm_train
from rljax.lm.model import LMConfig, init_params
from rljax.losses import dice
from rljax.losses import f_dpg as F


def test_pseudo_rewards_in_closed_form():
    log_pi, log_p = jnp.log(jnp.array([0.1, 0.4, 0.3])), jnp.log(jnp.array([0.3, 0.2, 0.3]))
    pi, p = jnp.exp(log_pi), jnp.exp(log_p)
    log_t = F.log_ratio(log_pi, log_p + 2.0, 2.0)  # unnormalised scores log P = log p + log Z
    np.testing.assert_allclose(log_t, log_pi - log_p, rtol=1e-6)
    np.testing.assert_allclose(F.pseudo_reward("forward_kl", log_t), p / pi, rtol=1e-5)
    np.testing.assert_allclose(F.pseudo_reward("reverse_kl", log_t), log_p - log_pi - 1.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(F.pseudo_reward("js", log_t), 0.5 * jnp.log((pi + p) / (2 * pi)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(F.pseudo_reward("tv", log_t), [0.5, -0.5, 0.0], atol=1e-6)  # -sign(pi - p) / 2
    with pytest.raises(ValueError, match="unknown divergence 'hellinger'"):
        F.pseudo_reward("hellinger", log_t)


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "js", "tv"])
def test_surrogate_gradient_is_the_divergence_gradient(divergence):
    """With the exact expectation over a softmax policy's outcomes, the surrogate's gradient is
    grad D_f(pi || p) = grad E_p[f(pi / p)] (any constant baseline adds nothing)."""
    logits = jax.random.normal(jax.random.key(0), (6,))
    log_p = jax.nn.log_softmax(jax.random.normal(jax.random.key(1), (6,)))

    def divergence_value(logits):
        pi = jax.nn.softmax(logits)
        return jnp.sum(jnp.exp(log_p) * dice.f(F.GENERATORS[divergence], pi / jnp.exp(log_p)))

    def surrogate(logits):
        log_pi = jax.nn.log_softmax(logits)
        weights = jax.lax.stop_gradient(jnp.exp(log_pi))  # E_pi as an exact weighted sum
        rewards = F.pseudo_reward(divergence, jax.lax.stop_gradient(log_pi) - log_p)
        return -jnp.sum(weights * jax.lax.stop_gradient(rewards - 0.3) * log_pi)

    np.testing.assert_allclose(jax.grad(surrogate)(logits), jax.grad(divergence_value)(logits), rtol=1e-4, atol=1e-6)


V, L = 4, 3
SPACE = SequenceSpace(V, L)
MODEL = LMConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=L + 1)
ROWS = prompted_rows(SPACE, 0)
REWARD = random_mlp_reward(0, V)  # a bag-of-tokens reward: RoPE models see relative positions only


def logp_of(params):
    return lm_train.sequence_logps(params, MODEL, *ROWS)[0]


def target_logp(ref, beta):
    logits = logp_of(ref) + REWARD(SPACE.sequences) / beta
    return logits - jax.nn.logsumexp(logits)


@pytest.mark.parametrize("divergence", ["forward_kl", "js"])  # reverse KL's pseudo-reward and gradient: tests above
def test_trainer_estimates_z_and_approaches_the_target(divergence):
    beta = 0.2
    config = f_dpg.FDPGConfig(model=MODEL, length=L, divergence=divergence, num_updates=100, batch_size=32,
                              baseline_window=128)
    ref = init_params(MODEL, jax.random.key(0))
    trainer = f_dpg.make_train(config, np.array([0]), lambda c: REWARD(c) / beta, init_params=ref)
    state, metrics = jax.jit(trainer)(jax.random.key(1), f_dpg.FDPGHParams(learning_rate=3e-3))
    # Z = sum_x pi_ref(x) exp(r(x) / beta), exact over the 64 sequences; the running estimate is unbiased
    log_z = float(jax.nn.logsumexp(logp_of(ref) + REWARD(SPACE.sequences) / beta))
    assert float(metrics["log_z"][-1]) == pytest.approx(log_z, abs=0.05)
    start = float(exact_kl(target_logp(ref, beta), logp_of(ref)))
    end = float(exact_kl(target_logp(ref, beta), logp_of(state.params)))
    assert start > 0.3 and end < 0.1 * start, (start, end)
    # the baseline is the mean pseudo-reward of the previous updates (none before the first)
    assert float(metrics["baseline"][0]) == 0.0
    np.testing.assert_allclose(metrics["baseline"][4], metrics["pseudo_reward"][:4].mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["baseline"][10], metrics["pseudo_reward"][6:10].mean(), rtol=1e-5)


def test_bad_settings_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match="divergence"):
        f_dpg.FDPGConfig(model=MODEL, length=L, divergence="kl")
    with pytest.raises(ConfigError, match="baseline_window: expected a multiple of batch_size = 64, got 100"):
        f_dpg.FDPGConfig(model=MODEL, length=L, baseline_window=100)
    with pytest.raises(ConfigError, match=r"prompt_ids: token ids must lie in \[0, vocab_size = 4\)"):
        f_dpg.make_train(f_dpg.FDPGConfig(model=MODEL, length=L), np.array([7]), lambda c: c.sum(-1))
    with pytest.raises(ConfigError, match="learning_rate"):
        f_dpg.make_train(f_dpg.FDPGConfig(model=MODEL, length=L), np.array([0]), lambda c: c.sum(-1)).init(
            jax.random.key(0), f_dpg.FDPGHParams(learning_rate=0.0))
