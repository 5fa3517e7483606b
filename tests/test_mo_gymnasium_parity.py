"""Deep Sea Treasure against MO-Gymnasium's own (mo-gymnasium 1.3.2, in the test extra): the same observations,
reward vectors, terminations and time-limit truncations step by step, and the same known fronts, undiscounted
and discounted, so that returns and metrics compare with morl-baselines' numbers."""

import gymnasium as gym
import jax
import mo_gymnasium  # noqa: F401  (registers MO-Gymnasium's envs with gymnasium)
import numpy as np
import pytest

import envs
from envs.mo import deep_sea_treasure as dst

MO_GYMNASIUM_ID = {"default": "deep-sea-treasure-v0", "concave": "deep-sea-treasure-concave-v0"}
RLJAX_NAME = {"default": "mo/deep-sea-treasure", "concave": "mo/deep-sea-treasure-concave"}
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


def action_sequence(seed: int) -> np.ndarray:
    """Every branch of the dynamics: 100 moves off the grid (a time-limit truncation), the shortest path to
    each treasure (right along the top row, then down its water column), then a random walk that bumps into
    the sea floor and the grid's edges."""
    shortest = [[RIGHT] * col + [DOWN] * row for row, col in dst.TREASURE_CELLS]
    walk = np.random.default_rng(seed).choice(4, size=3000, p=[0.15, 0.35, 0.15, 0.35])
    return np.concatenate([[UP] * 100, *shortest, walk]).astype(np.int32)


def mo_gymnasium_steps(variant: str, actions: np.ndarray):
    """MO-Gymnasium's env (with its registered 100-step time limit) through ``actions``, reset after each
    episode: per step the observation before any reset, the reward vector, terminated and truncated."""
    env = gym.make(MO_GYMNASIUM_ID[variant])
    env.reset(seed=0)
    steps = []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(int(action))
        steps.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            env.reset()
    obs, reward, terminated, truncated = map(np.array, zip(*steps))
    return obs, reward, terminated, truncated


def rljax_steps(variant: str, actions: np.ndarray):
    """The same through rljax's contract env, which resets itself: the observation before the reset is
    ``info["final_observation"]`` on the step that ends an episode."""
    env, params = envs.make(RLJAX_NAME[variant])

    def step(state, action):
        obs, state, reward, terminated, truncated, info = env.step(jax.random.PRNGKey(0), state, action, params)
        ended = terminated | truncated
        return state, (jax.numpy.where(ended, info["final_observation"], obs), reward, terminated, truncated)

    _, state = env.reset(jax.random.PRNGKey(0), params)
    _, outputs = jax.lax.scan(step, state, actions)
    return tuple(np.asarray(x) for x in outputs)


@pytest.mark.parametrize("variant", ["default", "concave"])
def test_steps_equal_mo_gymnasiums(variant):
    actions = action_sequence(seed=0)
    theirs, ours = mo_gymnasium_steps(variant, actions), rljax_steps(variant, actions)
    for name, a, b in zip(("observation", "reward", "terminated", "truncated"), ours, theirs):
        np.testing.assert_array_equal(a, b, err_msg=name)
    _, reward, terminated, truncated = theirs
    # The sequence reaches every branch the comparison is meant to cover.
    assert truncated[99] and truncated.sum() >= 1
    np.testing.assert_allclose(np.unique(reward[terminated, 0]), dst.TREASURES[variant], rtol=1e-6)  # all 10
    assert terminated.sum() > 50


@pytest.mark.parametrize("variant", ["default", "concave"])
@pytest.mark.parametrize("gamma", [1.0, 0.99, 0.9])
def test_known_fronts_equal_mo_gymnasiums(variant, gamma):
    env = gym.make(MO_GYMNASIUM_ID[variant]).unwrapped
    np.testing.assert_allclose(dst.pareto_front(variant, gamma), np.array(env.pareto_front(gamma)), rtol=1e-12)


def test_bad_discount_or_variant_is_named():
    with pytest.raises(ValueError, match=r"gamma: expected a discount in \(0, 1\], got 1.5"):
        dst.pareto_front("default", gamma=1.5)
    with pytest.raises(ValueError, match=r"variant: expected one of \['concave', 'default'\], got 'mirrored'"):
        dst.pareto_front("mirrored")
