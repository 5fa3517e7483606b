"""A 2-D point mass that must reach a goal: a small continuous-control task with a clear optimum.

    env, params = envs.make("toy/pointmass")
    env, params = envs.make("toy/pointmass", start_perturbation=0.3)   # off-distribution starts

State and observation: the position ``p`` in the square ``[-arena, arena]^2``. Action
``a`` in ``[-1, 1]^2``; the move is ``step_size * a / max(1, |a|)`` (the action projected
onto the unit disk, so every direction has the same top speed), and the position is
clipped to the arena (walls). Reward ``-|p' - goal| / step_size``: minus the distance to the
goal after the move, in steps at full speed (so one step's progress is worth about 1 and an
episode's return is in the tens: a scale at which the chi2 DICE weights of ODICE separate
good from bad actions). The episode terminates when ``|p' - goal| <= goal_radius`` and is truncated
after ``max_steps_in_episode`` steps (not on the step that reaches the goal, so the two
flags are never both set).

Optimal behaviour: every reward is minus the current distance, and the distance can fall
by at most ``step_size`` per step, so moving straight at the goal at full speed
(``a = (goal - p) / |goal - p|``) minimises every term of the return at once. From a
start at distance ``d`` it reaches the goal after ``n = ceil((d - goal_radius) / step_size)``
steps with return ``-sum_{k=1..n} max(d - k * step_size, 0) / step_size`` (``optimal_return``; the
last term is the distance at arrival, inside the goal radius, clipped at the goal
itself; this needs ``goal_radius >= step_size``, true of the defaults, so the last move
never overshoots). Walls never bind on that path (the square is convex).

Start states: uniform on the square ``start +- start_spread``. With
``start_perturbation = c > 0`` the start is then moved by ``c`` perpendicular to the
start-to-goal line, to either side with probability 1/2: the same distance from the goal
line on every episode, a fixed, stated shift away from where data collected from the
unperturbed starts begins (used as the out-of-distribution starts of the ODICE
experiment).

A point mass rather than a 10x10 grid: ODICE's policy is a continuous Gaussian fitted by
weighted regression, and "a start state off the data" is a continuous notion (a distance
from the data's support) rather than an unvisited cell.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Box, Environment
from envs.registry import register


@struct.dataclass
class PointMassState:
    """One env's state: the position (also the observation) and the steps taken this episode."""

    pos: jax.Array  # [2] float32
    time: jax.Array  # int32, steps taken in this episode


@struct.dataclass
class PointMassParams:
    """Env params (a pytree, so they can vary per env): time limit, move size, arena, goal and start
    distribution; ``envs.make("toy/pointmass", **kwargs)`` overrides any of them. See the module docstring."""

    max_steps_in_episode: int = 50
    step_size: float = 0.1  # largest move per step
    arena: float = 1.0  # positions live in [-arena, arena]^2
    goal_x: float = 0.5
    goal_y: float = 0.5
    goal_radius: float = 0.1
    start_x: float = -0.5
    start_y: float = -0.5
    start_spread: float = 0.05  # starts uniform on (start_x, start_y) +- start_spread
    start_perturbation: float = 0.0  # shift perpendicular to the start-goal line (either side)


def _goal(params: PointMassParams) -> jax.Array:
    return jnp.array([params.goal_x, params.goal_y], jnp.float32)


class PointMass(Environment):
    """See the module docstring."""

    @property
    def name(self) -> str:
        return "toy/pointmass"

    @property
    def default_params(self) -> PointMassParams:
        return PointMassParams()

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params=None):
        return Box(low=-1.0, high=1.0, shape=(2,), dtype=jnp.float32)

    def observation_space(self, params=None):
        arena = (params or self.default_params).arena
        return Box(low=-arena, high=arena, shape=(2,), dtype=jnp.float32)

    def distance(self, pos: jax.Array, params: PointMassParams) -> jax.Array:
        """``|pos - goal|`` (any leading axes)."""
        return jnp.linalg.norm(pos - _goal(params), axis=-1)

    def reset_env(self, key, params: PointMassParams):
        spread_key, side_key = jax.random.split(key)
        start = jnp.array([params.start_x, params.start_y], jnp.float32)
        pos = start + jax.random.uniform(spread_key, (2,), minval=-params.start_spread, maxval=params.start_spread)
        line = _goal(params) - start
        normal = jnp.array([line[1], -line[0]]) / jnp.maximum(jnp.linalg.norm(line), 1e-12)
        side = jnp.where(jax.random.bernoulli(side_key), 1.0, -1.0)
        pos = jnp.clip(pos + side * params.start_perturbation * normal, -params.arena, params.arena)
        return pos, PointMassState(pos=pos, time=jnp.zeros((), jnp.int32))

    def step_env(self, key, state: PointMassState, action, params: PointMassParams):
        action = jnp.asarray(action, jnp.float32).reshape(2)
        move = action / jnp.maximum(1.0, jnp.linalg.norm(action))
        pos = jnp.clip(state.pos + params.step_size * move, -params.arena, params.arena)
        distance = self.distance(pos, params)
        next_state = PointMassState(pos=pos, time=state.time + 1)
        terminated = distance <= params.goal_radius
        return pos, next_state, -distance / params.step_size, terminated, {}

    def is_truncated(self, state: PointMassState, params: PointMassParams) -> jax.Array:
        # A step that reaches the goal is terminal, not truncated, even on the last allowed step.
        at_goal = self.distance(state.pos, params) <= params.goal_radius
        return (state.time >= params.max_steps_in_episode) & ~at_goal

    def optimal_action(self, pos: jax.Array, params: PointMassParams) -> jax.Array:
        """Full speed straight at the goal: ``(goal - pos) / |goal - pos|`` (any leading axes)."""
        direction = _goal(params) - pos
        return direction / jnp.maximum(jnp.linalg.norm(direction, axis=-1, keepdims=True), 1e-12)

    def optimal_return(self, pos, params: PointMassParams) -> np.ndarray:
        """The optimal policy's undiscounted return from ``pos`` (numpy; any leading axes), within the time limit."""
        d = np.linalg.norm(np.asarray(pos, np.float64) - np.array([params.goal_x, params.goal_y]), axis=-1)
        k = np.arange(1, params.max_steps_in_episode + 1)
        after = np.maximum(d[..., None] - k * params.step_size, 0.0)  # distance after step k
        # Steps taken: until the distance is within the goal radius (then the episode ends).
        reached = d[..., None] - (k - 1) * params.step_size > params.goal_radius  # step k is taken
        return -(after * reached).sum(axis=-1) / params.step_size


def _make(**kwargs):
    env = PointMass()
    params = env.default_params.replace(**kwargs) if kwargs else env.default_params
    return env, params


register("toy/pointmass", _make)
