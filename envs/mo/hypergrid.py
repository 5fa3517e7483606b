"""The hypergrid of Multi-Objective GFlowNets (Jain et al., ICML 2023), as in the authors' hypergrid script.

A ``D``-dimensional grid of side ``H``: states are integer positions ``s`` in
``{0..H-1}^D``; every episode starts at the origin. Actions ``0..D-1``
increment coordinate ``i``; action ``D`` stops. As in the hypergrid of Bengio
et al. (2021) used by the MOGFN script (``GridEnv.step``: ``done = s.max() >=
H - 1 or a == ndim``), an episode also ends when a coordinate *reaches* the
edge ``H - 1``. So:

* interior states (every coordinate ``< H-1``) end only by ``stop``;
* edge states (exactly one coordinate ``== H-1``) are forced terminal;
* states with two or more coordinates at the edge are unreachable.

The terminal objects ``x`` are the states with at most one coordinate at the
edge (``terminal_states``; ``H^D - (states with >= 2 edge coordinates)``,
``H^2 - 1`` for ``D = 2``). In the DAG, the parents of a state are ``s - e_i``
for ``s_i > 0`` that are *not* edge states (an edge state has no children);
the terminal "copy" of an interior state has one parent (the stop action).

Position ``s`` maps to ``x = -1 + 2 s / (H-1)`` in ``[-1, 1]^D``. The three
objectives (all maximised, each roughly in ``[0, 1]``) are the script's, on
``x`` in ``[-1, 1]^2`` (so ``D = 2``):

* Branin (domain ``[-5, 10] x [0, 15]``):
  ``u = 15 (x_0/2 + 1/2) - 5``, ``v = 15 (x_1/2 + 1/2)``,
  ``branin = 1 - ((v - 5.1 u^2/(4 pi^2) + 5 u/pi - 6)^2 + 10 (1 - 1/(8 pi)) cos u + 10) / 308.13``;
* Currin (domain ``[0, 1]^2``): ``u = x_0/2 + 1/2``, ``v = x_1/2 + 1/2``,
  ``currin = (1 - exp(-1/(2 v + 1e-10))) (2300 u^3 + 1900 u^2 + 2092 u + 60)
  / (100 u^3 + 500 u^2 + 4 u + 20) / 13.77``;
* Shubert (on ``x`` directly): ``y = prod_{j=0,1} sum_{i=1}^{5} i cos((i+1) x_j + 10 i)``,
  ``shubert = (y + 12.58133095975989) / (12.85231572911876 + 12.58133095975989)``.

The script's Shubert has ``+ 10 i`` inside the cosine where the textbook
function has ``+ i``; we keep the script's (its normalising constants belong
to it). 308.13 and 13.77 are the maxima of Branin and Currin on their domains.

    env, params = make(side=16)
    env.terminal_states()            # [n, D] int32, the exact support
    env.objectives(positions)        # [..., 3] rewards r(x)
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Box, Discrete, Environment
from rljax.core.config import ConfigError

BRANIN_MAX, CURRIN_MAX = 308.13, 13.77
SHUBERT_MIN, SHUBERT_MAX = -12.58133095975989, 12.85231572911876


def branin(x):
    """Normalised Branin on ``x [..., 2]`` in ``[-1, 1]^2`` (the MOGFN hypergrid script's)."""
    u = 15.0 * (x[..., 0] / 2 + 0.5) - 5.0
    v = 15.0 * (x[..., 1] / 2 + 0.5)
    t1 = v - 5.1 / (4 * math.pi**2) * u**2 + 5 / math.pi * u - 6
    t2 = 10 * (1 - 1 / (8 * math.pi)) * jnp.cos(u)
    return 1.0 - (t1**2 + t2 + 10) / BRANIN_MAX


def currin(x):
    """Normalised Currin exponential on ``x [..., 2]`` in ``[-1, 1]^2``."""
    u = x[..., 0] / 2 + 0.5
    v = x[..., 1] / 2 + 0.5
    factor = 1 - jnp.exp(-1 / (2 * v + 1e-10))
    numer = 2300 * u**3 + 1900 * u**2 + 2092 * u + 60
    denom = 100 * u**3 + 500 * u**2 + 4 * u + 20
    return factor * numer / denom / CURRIN_MAX


def shubert(x):
    """Normalised Shubert (the script's variant, ``+ 10 i`` in the cosine) on ``x [..., 2]``."""
    i = jnp.arange(1, 6, dtype=x.dtype)
    sums = (i * jnp.cos((i + 1) * x[..., :2, None] + 10 * i)).sum(-1)  # [..., 2]
    y = sums[..., 0] * sums[..., 1]
    return (y - SHUBERT_MIN) / (SHUBERT_MAX - SHUBERT_MIN)


OBJECTIVES = {"branin": branin, "currin": currin, "shubert": shubert}


@struct.dataclass
class HypergridState:
    """One env's state: the grid position ``s`` and ``time``, the actions taken this episode."""

    position: jax.Array  # [D] int32
    time: jax.Array


@struct.dataclass
class HypergridParams:
    """Env params: a time limit that never binds (episodes end within ``max_trajectory_length`` actions)."""

    max_steps_in_episode: int = 10_000  # never binding: every episode ends within max_trajectory_length steps


class Hypergrid(Environment):
    """``D``-dimensional grid of side ``H`` with vector rewards ``r(x)`` given at termination."""

    def __init__(self, ndim: int = 2, side: int = 32, objectives=("branin", "currin", "shubert")):
        if not isinstance(ndim, int) or ndim < 1:
            raise ConfigError(f"ndim: expected a positive integer, got {ndim!r}")
        if not isinstance(side, int) or side < 2:
            raise ConfigError(f"side: expected an integer >= 2, got {side!r}")
        objectives = tuple(objectives)
        unknown = [o for o in objectives if o not in OBJECTIVES]
        if unknown:
            raise ConfigError(f"objectives: expected a subset of {sorted(OBJECTIVES)}, got {list(objectives)}")
        if objectives and ndim != 2:
            raise ConfigError(f"ndim: Branin, Currin and Shubert are functions of 2 coordinates; expected 2, got {ndim} "
                              f"(pass objectives=() for a reward-free grid of any dimension)")
        self.ndim, self.side, self.objective_names = ndim, side, objectives

    # ------------------------------------------------------------ the DAG (pure, batched over leading axes)

    @property
    def num_actions(self) -> int:
        return self.ndim + 1  # increments, then stop

    @property
    def stop_action(self) -> int:
        return self.ndim

    @property
    def max_trajectory_length(self) -> int:
        """Most actions in an episode: ``D (H-2)`` increments to the far interior corner, then one more."""
        return self.ndim * (self.side - 2) + 1

    def is_edge(self, position):
        """Forced terminal: some coordinate has reached ``H - 1``."""
        return (position >= self.side - 1).any(-1)

    def transition(self, position, action):
        """``(next_position, done)``: increment coordinate ``action`` (< D) or stop (== D)."""
        increment = jax.nn.one_hot(action, self.ndim + 1, dtype=position.dtype)[..., : self.ndim]
        nxt = position + increment
        return nxt, (action == self.stop_action) | self.is_edge(nxt)

    def num_parents(self, position, stopped):
        """Parents of the state reached by a transition: 1 after stop; else the non-edge ``s - e_i`` with ``s_i > 0``."""
        onehot = jnp.eye(self.ndim, dtype=position.dtype)
        parents = position[..., None, :] - onehot  # [..., D (which i), D]
        valid = (position > 0) & ~self.is_edge(parents)
        return jnp.where(stopped, 1, valid.sum(-1))

    def coordinates(self, position):
        """``x = -1 + 2 s / (H-1)`` in ``[-1, 1]^D``."""
        return -1.0 + 2.0 * jnp.asarray(position, jnp.float32) / (self.side - 1)

    def objectives(self, position):
        """``r(x)``: ``[..., k]`` objective values (all maximised) of positions ``[..., D]``."""
        x = self.coordinates(position)
        return jnp.stack([OBJECTIVES[name](x) for name in self.objective_names], axis=-1)

    def observe(self, position):
        """One-hot per coordinate (the script's ``obs_type='one-hot'``): ``[..., D * H]`` float32."""
        return jax.nn.one_hot(position, self.side, dtype=jnp.float32).reshape(position.shape[:-1] + (-1,))

    # ------------------------------------------------------------ exact enumeration

    def all_states(self) -> np.ndarray:
        """``[H^D, D]`` every grid position, lexicographic (last coordinate fastest)."""
        return np.array(list(itertools.product(range(self.side), repeat=self.ndim)), np.int32).reshape(-1, self.ndim)

    def terminal_states(self) -> np.ndarray:
        """``[n, D]`` the exact set of terminal objects: positions with at most one coordinate at the edge."""
        states = self.all_states()
        return states[(states == self.side - 1).sum(1) <= 1]

    def state_index(self, position):
        """Index into ``all_states()`` (row-major)."""
        strides = self.side ** np.arange(self.ndim - 1, -1, -1)
        return (jnp.asarray(position) * strides).sum(-1)

    # ------------------------------------------------------------ the gymnax contract

    @property
    def name(self) -> str:
        return f"mo/hypergrid-{self.ndim}x{self.side}"

    @property
    def default_params(self) -> HypergridParams:
        return HypergridParams()

    @property
    def reward_shape(self) -> tuple[int, ...]:
        return (len(self.objective_names),)

    def max_episode_steps(self, params) -> int:
        return self.max_trajectory_length

    def reset_env(self, key, params):
        state = HypergridState(position=jnp.zeros((self.ndim,), jnp.int32), time=jnp.zeros((), jnp.int32))
        return self.observe(state.position), state

    def step_env(self, key, state, action, params):
        position, done = self.transition(state.position, action)
        reward = jnp.where(done, self.objectives(position), 0.0)
        next_state = HypergridState(position=position, time=state.time + 1)
        return self.observe(position), next_state, reward, done, {}

    def action_space(self, params=None):
        return Discrete(self.ndim + 1)

    def observation_space(self, params=None):
        return Box(low=0.0, high=1.0, shape=(self.ndim * self.side,), dtype=jnp.float32)


def make(ndim: int = 2, side: int = 32, objectives=("branin", "currin", "shubert"), **params):
    """``(env, params)`` like ``envs.make``; not registered (use this module directly)."""
    return Hypergrid(ndim, side, objectives), HypergridParams(**params)
