"""On-policy MDPO: the surrogate by hand, the exact KL that ppo_loss hands it, the mirror-descent step's
closed-form solution, the annealed step size inside the trainer, and config errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rljax.agents import mdpo, ppo
from rljax.core.config import ConfigError
from rljax.losses.policy_gradient import PPOBatch, mirror_descent_surrogate, ppo_loss

TINY = mdpo.MDPOConfig(ppo=ppo.PPOConfig(num_envs=4, num_steps=8, num_minibatches=1, total_timesteps=4 * 8 * 5,
                                         update_epochs=3, eval_episodes=2))


def test_surrogate_is_minus_ratio_advantage_plus_kl_over_step_size_by_hand():
    log_prob = jnp.log(jnp.array([0.5, 0.2, 0.9]))
    old_log_prob = jnp.log(jnp.array([0.25, 0.4, 0.9]))
    advantage = jnp.array([1.0, -2.0, 3.0])
    kl = jnp.array([0.1, 0.3, 0.2])
    loss, aux = mirror_descent_surrogate(log_prob, old_log_prob, advantage, kl, 0.5)
    # ratios 2, 0.5, 1: mean(r A) = (2 - 1 + 3) / 3; mean(kl) / t = 0.2 / 0.5
    assert float(loss) == pytest.approx(-(4.0 / 3.0 - 0.4), rel=1e-6)
    assert float(aux["kl"]) == pytest.approx(0.2, rel=1e-6)


def actor_critic(config=TINY):
    env, env_params = ppo.make_env(config.ppo)
    network = ppo.make_network(config.ppo, env, env_params)
    return network, network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))


def random_batch(key, n=32):
    k = jax.random.split(key, 3)
    return PPOBatch(jax.random.normal(k[0], (n, 4)), jax.random.randint(k[1], (n,), 0, 2), -0.7 * jnp.ones(n),
                    jnp.zeros(n), jax.random.normal(k[2], (n,)), jnp.ones(n))


def test_ppo_loss_hands_the_surrogate_the_exact_kl_from_pi_to_the_old_policy():
    network, params = actor_critic()
    old_params = jax.tree.map(lambda x: x + 0.3 * jnp.sign(x), params)
    batch = random_batch(jax.random.PRNGKey(1))
    seen = {}

    def spy(log_prob, old_log_prob, advantage, hp, progress, kl):
        seen["kl"] = kl
        return jnp.zeros(()), {}

    ppo_loss(params, network.apply, batch, mdpo.MDPOHParams(), surrogate=spy, old_params=old_params)
    p = jax.nn.softmax(network.apply(params, batch.obs)[0].logits)
    q = jax.nn.softmax(network.apply(old_params, batch.obs)[0].logits)
    by_hand = (p * (jnp.log(p) - jnp.log(q))).sum(-1)  # KL(pi || pi_old): pi first, as MDPO's KL(s; pi, pi_k)
    np.testing.assert_allclose(np.asarray(seen["kl"]), np.asarray(by_hand), rtol=1e-4, atol=1e-7)
    assert float(by_hand.min()) > 1e-4  # the two policies differ

    ppo_loss(params, network.apply, batch, mdpo.MDPOHParams(), surrogate=spy, old_params=params)
    np.testing.assert_allclose(np.asarray(seen["kl"]), 0.0, atol=1e-6)


def test_the_kl_regularised_step_converges_to_the_mirror_descent_update_pi_k_exp_tA():
    # One state, uniform pi_k over 5 actions enumerated once each: E_{a~pi_k}[r A] = sum_a pi(a) A(a) exactly,
    # so maximising it minus KL(pi || pi_k) / t has the closed form pi ∝ pi_k exp(t A) (exponentiated gradient).
    advantage = jnp.array([1.0, -0.5, 0.3, 2.0, -1.0])
    old_log_prob = jnp.full(5, -jnp.log(5.0))
    for t in (0.5, 2.0):
        def loss(logits):
            log_pi = jax.nn.log_softmax(logits)
            kl = jnp.sum(jnp.exp(log_pi) * (log_pi - old_log_prob))
            return mirror_descent_surrogate(log_pi, old_log_prob, advantage, jnp.full(5, kl), t)[0]

        logits, opt = jnp.zeros(5), optax.adam(0.05)
        state = opt.init(logits)
        for _ in range(2000):
            updates, state = opt.update(jax.grad(loss)(logits), state)
            logits = optax.apply_updates(logits, updates)
        np.testing.assert_allclose(np.asarray(jax.nn.softmax(logits)), np.asarray(jax.nn.softmax(t * advantage)),
                                   atol=2e-3)


def test_trainer_anneals_the_step_size_and_keeps_the_kl_nonnegative():
    trainer = mdpo.make_train(TINY)
    _, metrics = jax.jit(trainer)(jax.random.PRNGKey(0), mdpo.MDPOHParams(step_size=2.0))
    K = TINY.ppo.num_updates
    np.testing.assert_allclose(np.asarray(metrics["step_size"]), 2.0 * (1 - np.arange(K) / K), rtol=1e-6)
    assert float(np.min(metrics["kl"])) >= 0.0 and float(np.max(metrics["kl"])) > 0.0  # the policy moves

    fixed = mdpo.make_train(dataclasses.replace(TINY, anneal_step_size=False))
    _, metrics = jax.jit(fixed)(jax.random.PRNGKey(0), mdpo.MDPOHParams(step_size=2.0))
    np.testing.assert_allclose(np.asarray(metrics["step_size"]), 2.0)


def test_a_larger_step_size_moves_the_policy_further_per_update():
    # Enough steps at a large enough learning rate for the KL term to bind (at 1e-2 x 10 steps: about 1.5e-4
    # at t = 0.01 against 2.5e-2 at t = 1).
    config = dataclasses.replace(TINY, ppo=dataclasses.replace(TINY.ppo, update_epochs=10))
    trainer = jax.jit(mdpo.make_train(config))
    kls = [float(np.mean(trainer(jax.random.PRNGKey(0), mdpo.MDPOHParams(step_size=t, learning_rate=1e-2))[1]["kl"]))
           for t in (0.01, 1.0)]
    assert kls[1] > 10 * kls[0]


def test_mdpo_takes_full_batch_steps_and_the_surrogate_needs_the_kl():
    with pytest.raises(ConfigError, match="num_minibatches.*expected 1, got 4"):
        mdpo.MDPOConfig(ppo=ppo.PPOConfig(update_epochs=10, num_minibatches=4))
    with pytest.raises(ConfigError, match="step_size"):
        mdpo.make_train(TINY).init(jax.random.PRNGKey(0), mdpo.MDPOHParams(step_size=0.0))
    network, params = actor_critic()
    with pytest.raises(ValueError, match="needs the exact KL"):
        ppo_loss(params, network.apply, random_batch(jax.random.PRNGKey(2)), mdpo.MDPOHParams(),
                 surrogate=mdpo.make_surrogate(TINY))
