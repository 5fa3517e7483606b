"""Gems: a small general-sum gridworld for multi-agent IRL, with an exact tabular view.

The MAMQL paper (Haynam et al. 2025, arXiv 2503.04679) evaluates on a gridworld
called "Gems". We could only read its abstract and third-party summaries, not
the environment's specification, so this is our own version of the idea the
summaries describe (agents collecting gems they value differently, a general-sum
game), not a reproduction of the paper's layout:

* ``size x size`` grid (default 5 x 5), two agents starting in opposite corners
  (``agent_0`` at (0, 0), ``agent_1`` at (4, 4)), three gems at fixed cells.
* Actions (per agent): 0 stay, 1 up, 2 right, 3 down, 4 left; moves off the grid
  leave the agent in place. Agents may share a cell; they move simultaneously.
* A gem is picked up (and disappears) when an agent ends its move on its cell.
  Agent ``i`` gets ``gem_values[i][g]`` for picking gem ``g``; if ``k`` agents reach
  it on the same step each gets ``1/k`` of its own value. Picking a gem someone
  else wanted takes it away from them: the game is neither zero-sum nor
  common-interest. Default values: ``agent_0`` (1.0, 0.5, -0.5) and ``agent_1``
  (-0.5, 1.0, 0.5) for gems at (0, 4), (2, 2), (4, 0): each has a favourite gem
  and the centre gem is contested.
* The episode terminates when every gem is gone and is truncated after
  ``max_steps_in_episode`` steps (default 20).

Observation of agent ``i`` (float32, ``[num_agents * size^2 + num_gems]``): the one-hot
cell of agent ``i``, then the one-hot cells of the other agents in order, then the
gem-present flags.

Tabular view (``tabular()``): joint states are (gem-present mask, every agent's cell),
``2^G * (size^2)^N`` of them (5000 by default), indexed by ``state_index``. The game
is deterministic, so transitions are a next-state table ``next_state[s, a_1, ..., a_N]``
(``transition_tensor()`` builds the dense ``P[s, a_1, ..., a_N, s']`` for small
layouts) with rewards ``rewards[i, s, a_1, ..., a_N]``. States with no gems are
absorbing and terminal. The tabular view is the discounted infinite-horizon game: it
has no clock, so it ignores the time limit (the sampled episodes are truncated
there and value targets bootstrap on truncation). It is built in numpy independently
of ``step``; tests check the two agree.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Box, Discrete
from envs.multiagent.core import MultiAgentEnv
from rljax.core.config import ConfigError, require

# (row, col) change of each action: stay, up, right, down, left.
MOVES = np.array([[0, 0], [-1, 0], [0, 1], [1, 0], [0, -1]], np.int32)
NUM_ACTIONS = len(MOVES)


@struct.dataclass
class GemsState:
    """The joint state: every agent's cell, which gems remain, and ``time``, the steps taken this episode.
    ``state_index`` maps it (without the clock) to the tabular view's joint-state index."""

    pos: jax.Array  # [num_agents, 2] int32 (row, col)
    gems: jax.Array  # [num_gems] bool, present
    time: jax.Array  # int32


@struct.dataclass
class GemsParams:
    """Env params: the time limit that truncates an episode (the layout lives on :class:`Gems` itself)."""

    max_steps_in_episode: int = 20


@dataclasses.dataclass(frozen=True)
class TabularGame:
    """An N-agent deterministic Markov game as arrays (numpy), every agent with ``A`` actions.

    ``next_state``: ``[S, A, ..., A]`` (N action axes) int; ``rewards``: ``[N, S, A, ..., A]``;
    ``terminal``: ``[S]`` bool (absorbing, zero reward, no future value);
    ``initial``: ``[S]`` initial-state distribution.
    """

    next_state: np.ndarray
    rewards: np.ndarray
    terminal: np.ndarray
    initial: np.ndarray

    @property
    def num_states(self) -> int:
        return self.next_state.shape[0]

    @property
    def num_agents(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_actions(self) -> int:
        return self.next_state.shape[1]

    def transition_tensor(self) -> np.ndarray:
        """Dense ``P[s, a_1, ..., a_N, s']`` (one-hot rows). Refuses more than 2e7 entries."""
        size = self.next_state.size * self.num_states
        require(size <= 2e7, f"TabularGame.transition_tensor: {size:.3g} entries is too many for a dense tensor; "
                             f"use next_state (deterministic) instead")
        return np.eye(self.num_states, dtype=np.float32)[self.next_state]


class Gems(MultiAgentEnv):
    """The Gems gridworld (see the module docstring). Layout is static; params hold the time limit."""

    def __init__(self, size: int = 5, start_cells=((0, 0), (4, 4)), gem_cells=((0, 4), (2, 2), (4, 0)),
                 gem_values=((1.0, 0.5, -0.5), (-0.5, 1.0, 0.5))):
        start = np.asarray(start_cells, np.int32)
        cells = np.asarray(gem_cells, np.int32)
        values = np.asarray(gem_values, np.float32)
        require(size >= 2, f"Gems.size: expected at least 2, got {size}")
        require(start.ndim == 2 and start.shape[1] == 2,
                f"Gems.start_cells: expected one (row, col) per agent, got shape {start.shape}")
        require(cells.ndim == 2 and cells.shape[1] == 2 and len(cells) >= 1,
                f"Gems.gem_cells: expected one or more (row, col), got shape {cells.shape}")
        require(values.shape == (len(start), len(cells)),
                f"Gems.gem_values: expected shape (num_agents, num_gems) = {(len(start), len(cells))}, "
                f"got {values.shape}")
        for field, xy in (("start_cells", start), ("gem_cells", cells)):
            require(bool(((xy >= 0) & (xy < size)).all()), f"Gems.{field}: every cell must lie in [0, {size}), got {xy.tolist()}")
        require(len({tuple(c) for c in cells.tolist()}) == len(cells), f"Gems.gem_cells: cells must differ, got {cells.tolist()}")
        self.size = int(size)
        self.start_cells = start
        self.gem_cells = cells
        self.gem_values = values
        self.agents = tuple(f"agent_{i}" for i in range(len(start)))

    @property
    def num_gems(self) -> int:
        return len(self.gem_cells)

    @property
    def num_cells(self) -> int:
        return self.size * self.size

    @property
    def num_states(self) -> int:
        return 2**self.num_gems * self.num_cells**self.num_agents

    @property
    def default_params(self) -> GemsParams:
        return GemsParams()

    def action_space(self, agent: str = None, params=None):
        return Discrete(NUM_ACTIONS)

    def observation_space(self, agent: str = None, params=None):
        return Box(0.0, 1.0, (self.num_agents * self.num_cells + self.num_gems,), jnp.float32)

    # -- dynamics (jit/vmap) -------------------------------------------------------

    def initial_state(self) -> GemsState:
        return GemsState(pos=jnp.asarray(self.start_cells), gems=jnp.ones(self.num_gems, bool),
                         time=jnp.zeros((), jnp.int32))

    def reset_env(self, key, params):
        state = self.initial_state()
        return self.get_obs(state), state

    def get_obs(self, state: GemsState) -> dict[str, jax.Array]:
        cell = state.pos[:, 0] * self.size + state.pos[:, 1]
        onehot = jax.nn.one_hot(cell, self.num_cells, dtype=jnp.float32)  # [N, C]
        gems = state.gems.astype(jnp.float32)
        obs = {}
        for i, agent in enumerate(self.agents):
            order = [i] + [j for j in range(self.num_agents) if j != i]
            obs[agent] = jnp.concatenate([onehot[j] for j in order] + [gems])
        return obs

    def step_env(self, key, state: GemsState, actions, params):
        act = jnp.stack([jnp.asarray(actions[a], jnp.int32) for a in self.agents])  # [N]
        pos = jnp.clip(state.pos + jnp.asarray(MOVES)[act], 0, self.size - 1)  # [N, 2]
        on_gem = jnp.all(pos[:, None, :] == jnp.asarray(self.gem_cells)[None], axis=-1) & state.gems[None]  # [N, G]
        takers = on_gem.sum(axis=0)  # [G]
        share = jnp.where(takers > 0, 1.0 / jnp.maximum(takers, 1), 0.0)
        reward = (on_gem * share[None] * jnp.asarray(self.gem_values)).sum(axis=1)  # [N]
        gems = state.gems & (takers == 0)
        time = state.time + 1
        terminated = ~gems.any()
        truncated = (time >= params.max_steps_in_episode) & ~terminated
        next_state = GemsState(pos=pos, gems=gems, time=time)
        done = terminated | truncated
        rewards = {a: reward[i] for i, a in enumerate(self.agents)}
        dones = {a: done for a in self.agents} | {"__all__": done}
        return self.get_obs(next_state), next_state, rewards, dones, {"terminated": terminated, "truncated": truncated}

    def state_index(self, state: GemsState) -> jax.Array:
        """Joint-state index in the tabular view: ``(mask * C^N + sum_i cell_i C^(N-1-i))``."""
        cell = state.pos[:, 0] * self.size + state.pos[:, 1]
        mask = (state.gems.astype(jnp.int32) * (2 ** jnp.arange(self.num_gems))).sum()
        index = mask
        for i in range(self.num_agents):
            index = index * self.num_cells + cell[i]
        return index

    def state_from_index(self, index) -> GemsState:
        """Inverse of ``state_index`` (time set to 0)."""
        index = jnp.asarray(index, jnp.int32)
        cells = []
        for _ in range(self.num_agents):
            cells.append(index % self.num_cells)
            index = index // self.num_cells
        cell = jnp.stack(cells[::-1])
        gems = (index // (2 ** jnp.arange(self.num_gems))) % 2 == 1
        return GemsState(pos=jnp.stack([cell // self.size, cell % self.size], axis=-1), gems=gems,
                         time=jnp.zeros((), jnp.int32))

    # -- tabular view (numpy, written independently of step_env) ------------------

    def tabular(self) -> TabularGame:
        N, G, C, A = self.num_agents, self.num_gems, self.num_cells, NUM_ACTIONS
        S = self.num_states
        idx = np.arange(S)
        cells = np.stack([(idx // C ** (N - 1 - i)) % C for i in range(N)], axis=1)  # [S, N]
        mask = idx // C**N
        present = (mask[:, None] >> np.arange(G)) & 1  # [S, G]
        next_state = np.zeros((S,) + (A,) * N, np.int64)
        rewards = np.zeros((N, S) + (A,) * N, np.float32)
        gem_cell = self.gem_cells[:, 0] * self.size + self.gem_cells[:, 1]  # [G]
        for joint in itertools.product(range(A), repeat=N):
            new = np.empty_like(cells)
            for i, a in enumerate(joint):
                r = np.clip(cells[:, i] // self.size + MOVES[a, 0], 0, self.size - 1)
                c = np.clip(cells[:, i] % self.size + MOVES[a, 1], 0, self.size - 1)
                new[:, i] = r * self.size + c
            hit = (new[:, :, None] == gem_cell[None, None, :]) & (present[:, None, :] == 1)  # [S, N, G]
            count = hit.sum(axis=1)  # [S, G]
            for i in range(N):
                rewards[(i, slice(None)) + joint] = (hit[:, i, :] * self.gem_values[i][None, :]
                                                     / np.maximum(count, 1)).sum(axis=1)
            new_mask = (present * (count == 0) * (1 << np.arange(G))[None]).sum(axis=1)
            nxt = new_mask
            for i in range(N):
                nxt = nxt * C + new[:, i]
            next_state[(slice(None),) + joint] = nxt
        terminal = mask == 0
        # Terminal states are absorbing with zero reward.
        next_state[terminal] = idx[terminal].reshape((-1,) + (1,) * N)
        rewards[:, terminal] = 0.0
        initial = np.zeros(S, np.float64)
        start = (2**G - 1)
        for i in range(N):
            start = start * C + int(self.start_cells[i, 0] * self.size + self.start_cells[i, 1])
        initial[start] = 1.0
        return TabularGame(next_state=next_state, rewards=rewards, terminal=terminal, initial=initial)


def make(**kwargs) -> tuple[Gems, GemsParams]:
    """``Gems(**layout)`` and its default params; unknown keyword arguments name the field."""
    known = {"size", "start_cells", "gem_cells", "gem_values", "max_steps_in_episode"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"gems: unknown argument(s) {unknown}; known are {sorted(known)}")
    params = GemsParams(**({"max_steps_in_episode": kwargs.pop("max_steps_in_episode")}
                           if "max_steps_in_episode" in kwargs else {}))
    return Gems(**kwargs), params
