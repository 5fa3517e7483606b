"""RL with a KL penalty as Bayesian inference (Korbak et al., 2022): the objective's identity with the posterior,
the KL-penalised reward's policy gradient, and the GRPO trainer's ``kl_penalty="reward"`` reaching the posterior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.text import SequenceSpace, exact_kl, prompted_rows, random_mlp_reward
from rljax.core.config import ConfigError
from rljax.lm import grpo
from rljax.lm import train as lm_train
from rljax.lm.model import LMConfig, init_params
from rljax.losses import kl_control as K

S = 12
PRIOR = jax.nn.log_softmax(jax.random.normal(jax.random.key(0), (S,)))
REWARD = jax.random.normal(jax.random.key(1), (S,))


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_objective_is_minus_beta_kl_to_the_posterior_plus_beta_log_z(beta):
    posterior = K.posterior_logp(PRIOR, REWARD, beta)
    np.testing.assert_allclose(jax.nn.logsumexp(posterior), 0.0, atol=1e-6)
    log_z = K.log_partition(PRIOR, REWARD, beta)
    for seed in range(3):
        policy = jax.nn.log_softmax(2.0 * jax.random.normal(jax.random.key(10 + seed), (S,)))
        np.testing.assert_allclose(K.kl_regularised_objective(policy, PRIOR, REWARD, beta),
                                   -beta * exact_kl(policy, posterior) + beta * log_z, rtol=1e-5, atol=1e-5)
        assert K.kl_regularised_objective(policy, PRIOR, REWARD, beta) < beta * log_z  # the posterior's value
    np.testing.assert_allclose(K.kl_regularised_objective(posterior, PRIOR, REWARD, beta), beta * log_z, rtol=1e-5)


def test_small_beta_concentrates_the_posterior_on_the_best_sequence():
    """Without the penalty the optimum is a point mass: the distribution collapse the KL term prevents."""
    best = int(jnp.argmax(REWARD))
    assert float(jnp.exp(K.posterior_logp(PRIOR, REWARD, 1e-3))[best]) > 0.999
    assert float(jnp.exp(K.posterior_logp(PRIOR, REWARD, 1e3))[best]) == pytest.approx(float(jnp.exp(PRIOR[best])), rel=1e-2)


def test_kl_penalized_rewards_hand_values():
    logps = jnp.array([[-1.0, -2.0, -0.5], [-0.3, -0.2, -9.0]])
    ref = jnp.array([[-1.5, -1.0, -0.5], [-0.1, -0.4, -1.0]])
    mask = jnp.array([[1, 1, 1], [1, 1, 0]])  # the second sequence ended after two tokens
    log_ratio = K.sequence_log_ratio(logps, ref, mask)
    np.testing.assert_allclose(log_ratio, [0.5 - 1.0 + 0.0, -0.2 + 0.2], atol=1e-6)
    np.testing.assert_allclose(K.kl_penalized_rewards(jnp.array([1.0, 2.0]), logps, ref, mask, 0.5),
                               [1.0 + 0.25, 2.0], atol=1e-6)
    # the reward is a constant: no gradient through the log-probs
    grad = jax.grad(lambda lp: K.kl_penalized_rewards(jnp.array([1.0, 2.0]), lp, ref, mask, 0.5).sum())(logps)
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("beta", [0.2, 1.0])
def test_the_penalised_reward_is_the_objectives_policy_gradient(beta):
    """E_pi[(r - beta log(pi / pi_0)) grad log pi] = grad J(pi), exactly over the outcomes of a softmax policy."""
    logits = jax.random.normal(jax.random.key(2), (S,))
    objective_grad = jax.grad(lambda z: K.kl_regularised_objective(jax.nn.log_softmax(z), PRIOR, REWARD, beta))(logits)
    logp = jax.nn.log_softmax(logits)
    shaped = K.kl_penalized_rewards(REWARD, logp[:, None], PRIOR[:, None], jnp.ones((S, 1)), beta)
    score = jax.jacobian(jax.nn.log_softmax)(logits)  # [S outcomes, S logits]
    np.testing.assert_allclose(jnp.exp(logp) @ (shaped[:, None] * score), objective_grad, rtol=1e-4, atol=1e-6)
    # dropping the penalty's log-ratio (keeping only r) misses the gradient
    assert float(jnp.abs(jnp.exp(logp) @ (REWARD[:, None] * score) - objective_grad).max()) > 1e-2


V, L = 4, 3
SPACE = SequenceSpace(V, L)
RAW = random_mlp_reward(0, V)
VALUES = RAW(SPACE.sequences)
GOLD = jnp.asarray((VALUES - VALUES.mean()) / VALUES.std())
MODEL = LMConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=L + 1)
ROWS = prompted_rows(SPACE, 0)
POWERS = jnp.asarray(V ** np.arange(L - 1, -1, -1))
BETA = 0.5


def gold_reward(prompt_ids, completion_ids, completion_mask):
    return GOLD[(completion_ids * POWERS).sum(-1)]


def make(prior, **fields):
    config = grpo.GRPOConfig(**({"model": MODEL, "max_completion_length": L, "num_updates": 150, "num_generations": 32,
                                 "prompts_per_update": 1, "scale_rewards": "none", "loss_type": "dr_grpo",
                                 "max_grad_norm": 0.0, "kl_reference": True, "kl_penalty": "reward"} | fields))
    return grpo.make_train(config, np.zeros((1, 1), np.int32), np.ones((1, 1), np.int32), gold_reward, init_params=prior)


def kl_to_posterior(params, prior):
    logp_of = lambda p: lm_train.sequence_logps(p, MODEL, *ROWS)[0]  # noqa: E731
    return float(exact_kl(logp_of(params), K.posterior_logp(logp_of(prior), GOLD, BETA)))


@pytest.mark.parametrize("num_iterations", [1, 2])
def test_grpo_with_the_kl_in_the_reward_approaches_the_posterior(num_iterations):
    """REINFORCE on r - beta log(pi / pi_0) moves the policy to pi* = pi_0 exp(r / beta) / Z (both paths: the
    loss's own log-probs on one iteration, a constant copy on two)."""
    prior = init_params(MODEL, jax.random.key(3))
    start = kl_to_posterior(prior, prior)
    hp = grpo.GRPOHParams(learning_rate=1e-2, beta=BETA)
    state, metrics = jax.jit(make(prior, num_iterations=num_iterations))(jax.random.key(4), hp)
    assert kl_to_posterior(state.params, prior) < 0.1 * start  # measured start 0.75
    if num_iterations == 1:  # the first update's policy is pi_0 (with two, the metric averages both iterations)
        assert float(metrics["kl"][0]) == pytest.approx(0.0, abs=1e-5)
    assert float(metrics["kl"][-20:].mean()) > 0.1
    if num_iterations == 1:  # r alone overshoots the posterior
        unregularised, _ = jax.jit(make(prior, kl_reference=False))(jax.random.key(4), grpo.GRPOHParams(learning_rate=1e-2))
        assert kl_to_posterior(unregularised.params, prior) > 5 * kl_to_posterior(state.params, prior)


def test_kl_penalty_is_checked():
    with pytest.raises(ConfigError, match="kl_penalty"):
        grpo.GRPOConfig(model=MODEL, max_completion_length=L, kl_penalty="advantage")
