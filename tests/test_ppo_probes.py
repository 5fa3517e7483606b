"""PPO on every probe environment: the learned values match the analytic ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from rljax.agents import ppo
from rljax.core.config import ConfigError
from rljax.core.networks import ActorCritic

# probe -> (observations to check, gamma)
PROBES = {
    "probe/constant-reward": ([[0.0]], 0.99),
    "probe/reward-from-observation": ([[-1.0], [1.0]], 0.99),
    "probe/discounting": ([[0.0], [1.0]], 0.9),
    "probe/reward-from-action": ([[0.0]], 0.99),
    "probe/reward-from-observation-and-action": ([[0.0], [1.0]], 0.99),
    "probe/truncation": ([[0.0]], 0.5),
}


def train_on_probe(name, gamma):
    config = ppo.PPOConfig(
        env=name, num_envs=16, num_steps=16, total_timesteps=16 * 16 * 150, update_epochs=4,
        num_minibatches=4, hidden_sizes=(32, 32), anneal_lr=True, eval_episodes=4,
    )
    hparams = ppo.PPOHParams(learning_rate=3e-3, gamma=gamma, ent_coef=0.0)
    trainer = ppo.make_train(config)
    state, _ = jax.jit(trainer)(jax.random.PRNGKey(0), hparams)
    env, params = envs.make(name)
    network = ActorCritic(action_dim=2, discrete=True, hidden_sizes=config.hidden_sizes)
    return env, network, state


@pytest.mark.parametrize("name", sorted(PROBES))
def test_learned_values_match_analytic(name):
    observations, gamma = PROBES[name]
    env, network, state = train_on_probe(name, gamma)
    obs = jnp.asarray(observations)
    pi, value = network.apply(state.params, obs)
    expected = env.analytic_value(obs, gamma)
    np.testing.assert_allclose(value, expected, atol=0.05)
    if "action" in name:  # the value is the optimal one only if the policy is optimal
        best = obs[:, 0].astype(jnp.int32) if "observation" in name else jnp.ones(len(obs), jnp.int32)
        assert np.all(np.asarray(pi.probs[jnp.arange(len(obs)), best]) > 0.95)


def test_ppo_refuses_vector_rewards():
    with pytest.raises(ConfigError, match="ScalarizeReward"):
        ppo.make_train(ppo.PPOConfig(env="probe/vector-reward", num_envs=2, num_steps=4, total_timesteps=8, num_minibatches=1))
