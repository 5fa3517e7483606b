"""Random delivery-style gridworlds with linear rewards, as exact tabular MDPs (Knox et al., TMLR 2024).

Knox et al.'s delivery domain rewards each step by ``w . phi`` over six features; their
code's true weights are ``[-1, 50, -50, 1, -1, -2]`` for (time, goal, sheep, coin,
mild terrain, worse terrain). This module draws random layouts of that kind (our
layouts, not the paper's):

* ``size x size`` cells, 4 actions (0 up, 1 right, 2 down, 3 left); moving off the grid
  leaves the agent in place.
* Each layout places ``CELL_COUNTS`` cells of each special type at random; the rest
  are blank. Goal and sheep cells are terminal (absorbing, no further reward).
* The step from a non-terminal ``s`` by ``a`` to ``s'`` has features ``phi(s, a)`` =
  ``[1, goal(s'), sheep(s'), coin(s'), mud(s'), brick(s')]``: a time cost on every step,
  then the type of the cell entered. Coins are not consumed (time + coin = 0 on a coin
  cell), so no cycle has positive reward under the true weights.

    mdp = random_delivery_mdp(key)                    # DeliveryMDP of arrays; vmappable over keys
    r = rewards(mdp, jnp.asarray(TRUE_WEIGHTS))      # [S, A]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

FEATURES = ("time", "goal", "sheep", "coin", "mud", "brick")
TRUE_WEIGHTS = (-1.0, 50.0, -50.0, 1.0, -1.0, -2.0)
CELL_TYPES = ("blank", "goal", "sheep", "coin", "mud", "brick")
CELL_COUNTS = {"goal": 1, "sheep": 2, "coin": 3, "mud": 4, "brick": 3}
MOVES = jnp.array([(-1, 0), (0, 1), (1, 0), (0, -1)])  # up, right, down, left as (row, column) steps
NUM_ACTIONS = 4


@struct.dataclass
class DeliveryMDP:
    """``next_state [S, A]`` int32, ``features [S, A, K]`` (zero at terminal states), ``terminal [S]`` bool,
    ``cells [S]`` int32 (index into ``CELL_TYPES``), S = size * size in row-major order."""

    next_state: jax.Array
    features: jax.Array
    terminal: jax.Array
    cells: jax.Array


def random_delivery_mdp(key: jax.Array, size: int = 5) -> DeliveryMDP:
    """A layout with ``CELL_COUNTS`` special cells placed uniformly at random (needs size * size >= 13)."""
    num_special = sum(CELL_COUNTS.values())
    if size * size < num_special:
        raise ValueError(f"random_delivery_mdp: size = {size} has {size * size} cells, fewer than the "
                         f"{num_special} special cells of CELL_COUNTS")
    layout = jnp.concatenate([jnp.full(count, CELL_TYPES.index(name), jnp.int32)
                              for name, count in CELL_COUNTS.items()])
    layout = jnp.concatenate([layout, jnp.zeros(size * size - num_special, jnp.int32)])
    cells = jax.random.permutation(key, layout)

    rows, cols = jnp.divmod(jnp.arange(size * size), size)
    next_rc = jnp.stack([rows, cols], -1)[:, None, :] + MOVES[None]  # [S, A, 2]
    inside = ((next_rc >= 0) & (next_rc < size)).all(-1)
    moved = next_rc[..., 0] * size + next_rc[..., 1]
    terminal = (cells == CELL_TYPES.index("goal")) | (cells == CELL_TYPES.index("sheep"))
    stay = jnp.arange(size * size)[:, None]
    next_state = jnp.where(inside & ~terminal[:, None], moved, stay).astype(jnp.int32)

    entered = jax.nn.one_hot(cells[next_state], len(CELL_TYPES))[..., 1:]  # drop "blank"
    features = jnp.concatenate([jnp.ones(next_state.shape + (1,)), entered], -1)
    features = jnp.where(terminal[:, None, None], 0.0, features)
    return DeliveryMDP(next_state=next_state, features=features, terminal=terminal, cells=cells)


def rewards(mdp: DeliveryMDP, weights: jax.Array) -> jax.Array:
    """``r(s, a) = w . phi(s, a)``: ``[S, A]``."""
    return mdp.features @ weights


def random_segments(key: jax.Array, mdp: DeliveryMDP, num: int, length: int) -> tuple[jax.Array, jax.Array]:
    """``num`` segments of ``length`` uniformly random actions from uniformly random non-terminal starts:
    ``(states [num, length], actions [num, length])``, the states s_0 .. s_{T-1} at which each action is
    taken (a segment that enters a terminal state stays there, scoring 0 after)."""
    start_key, action_key = jax.random.split(key)
    starts = jax.random.choice(start_key, mdp.terminal.shape[0], (num,), p=(~mdp.terminal) / (~mdp.terminal).sum())
    actions = jax.random.randint(action_key, (num, length), 0, NUM_ACTIONS)

    def walk(state, action):
        return mdp.next_state[state, action], state

    _, states = jax.lax.scan(walk, starts, actions.T)
    return states.T, actions
