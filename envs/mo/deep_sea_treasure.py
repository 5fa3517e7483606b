"""Deep Sea Treasure (Vamplew et al. 2011), as MO-Gymnasium's ``deep-sea-treasure-v0``.

An 11 x 11 grid; the submarine starts at the top-left corner (row 0, column 0)
and moves up, down, left or right (actions 0-3). Cells valued -10 are the sea
floor (moves into them, or off the grid, leave the submarine where it is);
positive cells are treasures, which end the episode. The reward is the vector
``[treasure value (0 elsewhere), -1 per step]``; the observation is the
position ``(row, column)`` as float32.

Two maps, with the same layout (treasure ``i`` is ``TREASURE_STEPS[i]`` moves away):

* ``mo/deep-sea-treasure``: MO-Gymnasium's ``deep-sea-treasure-v0`` map, treasures
  0.7 .. 23.7 (Yang et al. 2019), a nearly convex front: linear scalarisation
  reaches 9 of its 10 points (all but 20.3 at 14 steps);
* ``mo/deep-sea-treasure-concave``: ``deep-sea-treasure-concave-v0``, Vamplew et
  al.'s original treasures 1 .. 124, a concave front: linear scalarisation reaches
  only its two ends (the test case for MORL methods beyond weight sweeps).

``pareto_front(variant, gamma=1.0)`` gives the known front (10 points) of returns
``[treasure, time]``, undiscounted ``[treasure, -steps]`` by default or discounted as
morl-baselines evaluates them. The time limit (``max_steps_in_episode``,
default 100) truncates episodes that find no treasure.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Box, Discrete, Environment

TREASURE_CELLS = ((1, 0), (2, 1), (3, 2), (4, 3), (4, 4), (4, 5), (7, 6), (7, 7), (9, 8), (10, 9))
TREASURE_STEPS = (1, 3, 5, 7, 8, 9, 13, 14, 17, 19)  # Manhattan distance from (0, 0): the shortest path
TREASURES = {
    "default": (0.7, 8.2, 11.5, 14.0, 15.1, 16.1, 19.6, 20.3, 22.4, 23.7),
    "concave": (1.0, 2.0, 3.0, 5.0, 8.0, 16.0, 24.0, 50.0, 74.0, 124.0),
}
SEA_FLOOR = -10.0
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], np.int32)  # up, down, left, right


def check_variant(variant: str) -> None:
    if variant not in TREASURES:
        raise ValueError(f"variant: expected one of {sorted(TREASURES)}, got {variant!r}")


def make_map(variant: str) -> np.ndarray:
    """The ``[11, 11]`` map: 0 water, -10 sea floor (every cell below a treasure), treasures."""
    check_variant(variant)
    grid = np.zeros((11, 11), np.float32)
    for (row, col), value in zip(TREASURE_CELLS, TREASURES[variant]):
        grid[row, col] = value
        grid[row + 1:, col] = SEA_FLOOR
    return grid


def pareto_front(variant: str = "default", gamma: float = 1.0) -> np.ndarray:
    """``[10, 2]`` returns ``[treasure, time]`` of the shortest path to each treasure, discounted by ``gamma``
    as MO-Gymnasium's ``pareto_front(gamma)``: a treasure found at step ``n`` is worth ``gamma^(n-1)`` times its
    value, and the time objective is ``-(1 + gamma + ... + gamma^(n-1))``. ``gamma=1``: ``[treasure, -steps]``."""
    check_variant(variant)
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma: expected a discount in (0, 1], got {gamma}")
    steps = np.array(TREASURE_STEPS, np.float64)
    time = -steps if gamma == 1.0 else -(1.0 - gamma**steps) / (1.0 - gamma)
    return np.stack([np.array(TREASURES[variant]) * gamma ** (steps - 1), time], axis=1)


@struct.dataclass
class DSTState:
    """One env's state: the submarine's cell and ``time``, the steps taken this episode."""

    position: jax.Array  # [2] int32 (row, column)
    time: jax.Array


@struct.dataclass
class DSTParams:
    """Env params: the time limit that truncates episodes which find no treasure."""

    max_steps_in_episode: int = 100


class DeepSeaTreasure(Environment):
    """Deep Sea Treasure (see the module docstring): 4 actions, obs ``[2]`` (row, column), reward ``[2]``
    ``(treasure, -1)``. ``variant``: ``"default"`` (MO-Gymnasium's map) or ``"concave"`` (Vamplew et al.'s)."""

    def __init__(self, variant: str = "default"):
        check_variant(variant)
        self.variant = variant
        self.grid = jnp.asarray(make_map(variant))

    @property
    def name(self) -> str:
        return "mo/deep-sea-treasure" + ("" if self.variant == "default" else f"-{self.variant}")

    @property
    def default_params(self) -> DSTParams:
        return DSTParams()

    @property
    def reward_shape(self) -> tuple[int, ...]:
        return (2,)

    def reset_env(self, key, params):
        state = DSTState(position=jnp.zeros((2,), jnp.int32), time=jnp.zeros((), jnp.int32))
        return state.position.astype(jnp.float32), state

    def step_env(self, key, state, action, params):
        target = state.position + jnp.asarray(MOVES)[action]
        inside = jnp.all((target >= 0) & (target < 11))
        clipped = jnp.clip(target, 0, 10)
        valid = inside & (self.grid[clipped[0], clipped[1]] != SEA_FLOOR)
        position = jnp.where(valid, clipped, state.position)
        treasure = jnp.maximum(self.grid[position[0], position[1]], 0.0)
        reward = jnp.stack([treasure, -jnp.ones((), jnp.float32)])
        next_state = DSTState(position=position, time=state.time + 1)
        return position.astype(jnp.float32), next_state, reward, treasure > 0, {}

    def action_space(self, params=None):
        return Discrete(4)

    def observation_space(self, params=None):
        return Box(low=0.0, high=10.0, shape=(2,), dtype=jnp.float32)

    @property
    def num_actions(self) -> int:
        return 4
