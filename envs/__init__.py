"""rljax environments: one contract (gymnax 1.0), one registry, adapters and probes.

    env, params = envs.make("gymnax/CartPole-v1")
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

See ``envs.core`` for the contract and ``envs.names()`` for what is registered.
"""

from envs.core import (
    Box,
    Discrete,
    Environment,
    action_dim,
    is_discrete,
    max_episode_steps,
    observation_shape,
    reward_shape,
)
from envs.registry import make, names, register
from envs import wrappers

__all__ = [
    "Box", "Discrete", "Environment", "action_dim", "is_discrete", "make", "max_episode_steps",
    "names", "observation_shape", "register", "reward_shape", "wrappers",
]
