"""SAC: losses against hand-computed values, the continuous probe, replay buffer sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from rljax.agents import sac
from rljax.core import replay
from rljax.core.config import ConfigError
from rljax.core.networks import MLP, QEnsemble, SquashedGaussianActor
from rljax.losses import soft_q


def test_soft_td_target_bootstraps_on_truncation_only():
    reward = jnp.array([1.0, 1.0])
    terminated = jnp.array([True, False])  # the second was truncated or continues: both bootstrap
    next_q = jnp.array([[5.0, 5.0], [4.0, 6.0]])  # two critics: min is 4 and 5
    next_log_prob = jnp.array([-1.0, -2.0])
    y = soft_q.soft_td_target(reward, terminated, next_q, next_log_prob, alpha=0.5, gamma=0.9)
    np.testing.assert_allclose(y, [1.0, 1.0 + 0.9 * (5.0 + 0.5 * 2.0)], rtol=1e-6)


def test_actor_and_temperature_losses():
    log_prob = jnp.array([-1.0, -3.0])
    q = jnp.array([[2.0, 1.0], [3.0, 0.0]])  # min over critics: 2, 0
    loss, aux = soft_q.actor_loss(log_prob, q, alpha=0.2)
    np.testing.assert_allclose(loss, np.mean([0.2 * -1.0 - 2.0, 0.2 * -3.0 - 0.0]), rtol=1e-6)
    np.testing.assert_allclose(aux["entropy"], 2.0)
    # J(alpha) = -alpha * mean(log_prob + target); d/dlog_alpha = -alpha * mean(log_prob + target)
    target = -1.0
    loss, _ = soft_q.temperature_loss(jnp.log(0.5), log_prob, target)
    np.testing.assert_allclose(loss, -0.5 * np.mean(log_prob + target), rtol=1e-6)
    grad = jax.grad(lambda la: soft_q.temperature_loss(la, log_prob, target)[0])(jnp.log(0.5))
    assert float(grad) > 0  # entropy 2 > target 1: alpha should fall


def test_squashed_gaussian_log_prob_has_the_tanh_correction():
    actor = SquashedGaussianActor(action_dim=2, hidden_sizes=(8,))
    params = actor.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    pi = actor.apply(params, jnp.ones((1, 3)))
    action, log_prob = pi.sample_and_log_prob(seed=jax.random.PRNGKey(1))
    assert np.all(np.abs(action) < 1)
    u = jnp.arctanh(action)
    base = pi.distribution.log_prob(u)
    np.testing.assert_allclose(log_prob, base - jnp.log(1 - action**2).sum(-1), rtol=1e-4, atol=1e-4)


def test_q_ensemble_members_differ():
    critic = QEnsemble(num=2, hidden_sizes=(8,))
    params = critic.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)), jnp.zeros((1, 1)))
    q = critic.apply(params, jnp.ones((5, 3)), jnp.ones((5, 1)))
    assert q.shape == (2, 5) and not np.allclose(q[0], q[1])


def test_mlp_initializer_error_names_the_field():
    with pytest.raises(ConfigError, match=r"MLP.initializer: expected one of \('orthogonal', 'torch'\), got 'xavier'"):
        MLP((4,), 1, initializer="xavier").init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))


def test_replay_uniform_and_weighted_sampling():
    state = replay.init({"x": jnp.zeros(())}, segment_capacity=4, num_segments=3)
    state = replay.add(state, {"x": jnp.arange(3.0)})
    state = replay.add(state, {"x": jnp.arange(3.0, 6.0)})  # ring of 4: keeps 2, 3, 4, 5
    np.testing.assert_array_equal(sorted(np.asarray(state.data["x"][0])), [2, 3, 4, 5])
    state = replay.new_segment(state)
    state = replay.add(state, {"x": jnp.full((2,), 100.0)})
    items, segments = replay.sample(state, jax.random.PRNGKey(0), 6000)
    x = np.asarray(items["x"])
    assert set(np.unique(x)) == {2, 3, 4, 5, 100}  # never an empty slot
    np.testing.assert_allclose((x == 100).mean(), 2 / 6, atol=0.02)  # uniform over the 6 items
    items, _ = replay.sample(state, jax.random.PRNGKey(1), 6000, segment_weights=jnp.array([0.1, 0.9, 0.5]))
    np.testing.assert_allclose((np.asarray(items["x"]) == 100).mean(), 0.9, atol=0.02)  # empty segment 2 ignored
    state = replay.new_segment(replay.new_segment(state))  # wraps around: segment 0 is emptied
    assert int(state.current) == 0 and int(state.size[0]) == 0 and int(state.size[1]) == 2


def test_replay_refuses_a_batch_larger_than_a_segment():
    state = replay.init({"x": jnp.zeros(())}, segment_capacity=4)
    with pytest.raises(ConfigError, match="batch of 6 items exceeds segment_capacity = 4"):
        replay.add(state, {"x": jnp.arange(6.0)})


def test_sac_rejects_discrete_envs():
    with pytest.raises(ConfigError, match="discrete"):
        sac.make_train(sac.SACConfig(env="gymnax/CartPole-v1"))


def test_sac_learns_the_continuous_probe():
    config = sac.SACConfig(
        env="probe/continuous-action", num_envs=4, total_timesteps=4 * 1500, learning_starts=400,
        buffer_size=6000, batch_size=64, hidden_sizes=(32, 32), eval_episodes=4,
    )
    hparams = sac.SACHParams(actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, init_alpha=0.1)
    trainer = sac.make_train(config)
    state, _ = jax.jit(trainer)(jax.random.PRNGKey(0), hparams)
    env, _ = envs.make("probe/continuous-action")
    obs = jnp.array([[-1.0], [1.0]])
    critic = QEnsemble(2, config.hidden_sizes)
    actions = jnp.array([[-0.5], [0.5]])  # the optimal actions
    q = critic.apply(state.learner.critic_params, obs, actions)
    np.testing.assert_allclose(q, jnp.broadcast_to(env.analytic_q(obs, actions), q.shape), atol=0.05)
    off = jnp.array([[0.5], [-0.5]])  # a distance of 1 from the optimum: reward 0
    np.testing.assert_allclose(critic.apply(state.learner.critic_params, obs, off), 0.0, atol=0.1)
    mean_action = jnp.tanh(SquashedGaussianActor(1, config.hidden_sizes).apply(state.learner.actor_params, obs).distribution.mean())
    np.testing.assert_allclose(mean_action, actions, atol=0.1)


@pytest.mark.slow
def test_sac_solves_pendulum_in_20k_steps():
    config, hparams = sac.PRESETS["gymnax/Pendulum-v1"]
    assert config.total_timesteps <= 20_000
    trainer = sac.make_train(config)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    from rljax.core.config import broadcast_hparams
    states, _ = jax.jit(jax.vmap(trainer))(keys, broadcast_hparams(hparams, 4))
    returns = jax.jit(jax.vmap(trainer.evaluate))(states, keys)["return"]
    assert float(returns.mean()) >= -200, np.asarray(returns).mean(axis=1)
