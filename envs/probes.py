"""Probe environments with known value functions (debugging RL one piece at a time).

Each probe isolates one thing an agent must get right, after Andy Jones' "Debugging
RL" probes and rejax's TestEnv1-5. ``analytic_value(obs, gamma)`` gives the value
of the optimal policy (for the first three probes, of every policy), so an agent
can be tested against it:

    probe/constant-reward          one step, reward 1                      V = 1
    probe/reward-from-observation  one step, obs o in {-1,+1}, reward o    V(o) = o
    probe/discounting              two steps, reward 1 at the end          V(first) = gamma, V(second) = 1
    probe/reward-from-action       one step, reward 1 iff action == 1      V* = 1
    probe/reward-from-observation-and-action
                                   one step, obs o in {0,1}, reward 1 iff action == o  V* = 1
    probe/truncation               reward 1 forever, time-limit truncation after 5 steps;
                                   time is not observed, so only bootstrapping on
                                   truncation gives the right value  V = 1 / (1 - gamma)
    probe/vector-reward            one step, obs o in {-1,+1}, reward (o, 1)   V(o) = (o, 1)
    probe/continuous-action        one step, obs o in {-1,+1}, action a in [-1, 1],
                                   reward 1 - (a - o/2)^2   V* = 1, and Q(o, a) = reward
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs.core import Box, Discrete, Environment
from envs.registry import register


@struct.dataclass
class ProbeState:
    """One probe's state: the current observation (``[1]`` float32) and ``time``, the steps taken this episode."""

    obs: jax.Array
    time: jax.Array


@struct.dataclass
class ProbeParams:
    """Env params: the time limit that truncates an episode (5 for ``probe/truncation``; the others terminate
    long before the default 100)."""

    max_steps_in_episode: int = 100


class Probe(Environment):
    """One-dimensional observations, two discrete actions.

    Subclasses define ``reward(state, action)`` and ``analytic_value(obs, gamma)``
    (the optimal value of observations ``[..., 1]``).
    """

    episode_steps: int = 1  # natural episode length (terminated after it)

    @property
    def name(self) -> str:
        return f"probe/{self.probe_name}"

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams()

    def max_episode_steps(self, params) -> int:
        return min(self.episode_steps, int(params.max_steps_in_episode))

    def initial_obs(self, key) -> jax.Array:
        return jnp.zeros((1,), jnp.float32)

    def next_obs(self, state: ProbeState) -> jax.Array:
        return state.obs

    def reset_env(self, key, params):
        obs = self.initial_obs(key)
        return obs, ProbeState(obs=obs, time=jnp.zeros((), jnp.int32))

    def step_env(self, key, state, action, params):
        reward = self.reward(state, action)
        time = state.time + 1
        next_state = ProbeState(obs=self.next_obs(state), time=time)
        terminated = time >= self.episode_steps
        return next_state.obs, next_state, reward, terminated, {}

    def action_space(self, params=None):
        return Discrete(2)

    def observation_space(self, params=None):
        return Box(low=-1.0, high=1.0, shape=(1,), dtype=jnp.float32)

    @property
    def num_actions(self) -> int:
        return 2


def _random_sign(key):
    return jnp.where(jax.random.bernoulli(key), 1.0, -1.0).reshape(1).astype(jnp.float32)


class ConstantReward(Probe):
    """One step, reward 1 whatever the action: ``V = 1``. Fails when the value loss or optimiser is broken."""

    probe_name = "constant-reward"

    def reward(self, state, action):
        return jnp.ones((), jnp.float32)

    def analytic_value(self, obs, gamma):
        return jnp.ones(obs.shape[:-1])


class RewardFromObservation(Probe):
    """One step, obs ``o`` in {-1, +1}, reward ``o``: ``V(o) = o`` for any policy. Fails when the value network
    does not see (or cannot fit) the observation."""

    probe_name = "reward-from-observation"
    initial_obs = staticmethod(_random_sign)

    def reward(self, state, action):
        return state.obs[0]

    def analytic_value(self, obs, gamma):
        return obs[..., 0]


class Discounting(Probe):
    """Two steps (obs 0, then 1), reward 1 on the second: ``V(first) = gamma``, ``V(second) = 1`` for any policy.
    Fails when discounting or bootstrapping across steps is wrong."""

    probe_name = "discounting"
    episode_steps = 2

    def next_obs(self, state):
        return jnp.ones((1,), jnp.float32)

    def reward(self, state, action):
        return (state.time == 1).astype(jnp.float32)

    def analytic_value(self, obs, gamma):
        return jnp.where(obs[..., 0] > 0.5, 1.0, gamma)


class RewardFromAction(Probe):
    """One step, reward 1 iff ``action == 1``: ``V* = 1``. Fails when the policy gradient (or advantage sign)
    does not move the policy toward the rewarded action."""

    probe_name = "reward-from-action"

    def reward(self, state, action):
        return (action == 1).astype(jnp.float32)

    def analytic_value(self, obs, gamma):
        return jnp.ones(obs.shape[:-1])


class RewardFromObservationAndAction(Probe):
    """One step, obs ``o`` in {0, 1}, reward 1 iff ``action == o``: ``V* = 1``. Fails when the policy ignores the
    observation, or observations and actions are misaligned in the batch."""

    probe_name = "reward-from-observation-and-action"

    def initial_obs(self, key):
        return jax.random.bernoulli(key).astype(jnp.float32).reshape(1)

    def reward(self, state, action):
        return (action == state.obs[0].astype(jnp.int32)).astype(jnp.float32)

    def analytic_value(self, obs, gamma):
        return jnp.ones(obs.shape[:-1])


class Truncation(Probe):
    """Reward 1 every step, never terminated, truncated after 5 steps (by default); time is not observed, so only
    bootstrapping from ``final_observation`` on truncation gives ``V = 1 / (1 - gamma)`` (any policy)."""

    probe_name = "truncation"
    episode_steps = 1_000_000  # never terminates: only the time limit ends an episode

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams(max_steps_in_episode=5)

    def reward(self, state, action):
        return jnp.ones((), jnp.float32)

    def analytic_value(self, obs, gamma):
        return jnp.full(obs.shape[:-1], 1.0 / (1.0 - gamma))


class VectorReward(Probe):
    """One step, obs ``o`` in {-1, +1}, vector reward ``(o, 1)``: ``V(o) = (o, 1)`` (shape ``[..., 2]``). Fails
    when multi-objective code mixes up or reduces the reward components."""

    probe_name = "vector-reward"
    initial_obs = staticmethod(_random_sign)

    @property
    def reward_shape(self):
        return (2,)

    def reward(self, state, action):
        return jnp.stack([state.obs[0], jnp.ones((), jnp.float32)])

    def analytic_value(self, obs, gamma):
        return jnp.stack([obs[..., 0], jnp.ones(obs.shape[:-1])], axis=-1)


class ContinuousAction(Probe):
    """One step, obs ``o`` in {-1, +1}, action ``a`` in [-1, 1], reward ``1 - (a - o/2)^2``: ``V* = 1`` at
    ``a = o/2``, and ``Q(o, a)`` is the reward (``analytic_q``). Checks continuous actors and critics."""

    probe_name = "continuous-action"
    initial_obs = staticmethod(_random_sign)

    def reward(self, state, action):
        return 1.0 - (action[0] - 0.5 * state.obs[0]) ** 2

    def analytic_value(self, obs, gamma):
        return jnp.ones(obs.shape[:-1])

    def analytic_q(self, obs, action):
        """One step and terminal: Q(o, a) is the reward itself."""
        return 1.0 - (action[..., 0] - 0.5 * obs[..., 0]) ** 2

    def action_space(self, params=None):
        return Box(low=-1.0, high=1.0, shape=(1,), dtype=jnp.float32)

    @property
    def num_actions(self) -> int:
        return 1


PROBES = (
    ConstantReward, RewardFromObservation, Discounting, RewardFromAction,
    RewardFromObservationAndAction, Truncation, VectorReward, ContinuousAction,
)


def _factory(cls):
    def make(**kwargs):
        env = cls()
        params = env.default_params.replace(**kwargs) if kwargs else env.default_params
        return env, params

    return make


for _cls in PROBES:
    register(f"probe/{_cls.probe_name}", _factory(_cls))
