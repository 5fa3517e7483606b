"""Multi-objective brax locomotion with MO-Gymnasium's reward vectors (v4 definitions).

* ``mo/halfcheetah`` (``mo-halfcheetah-v4``): ``[run, control]`` = brax's
  ``reward_run`` (forward velocity) and ``reward_ctrl`` (``-0.1 |a|^2``), whose sum is
  brax's scalar reward.
* ``mo/hopper`` (``mo-hopper-v4``): ``[forward velocity, 10 (z - z_0), -|a|^2]``, each
  plus the healthy reward, where ``z`` is the root's height joint (``q[1]``, MuJoCo's
  ``qpos[1]``) and ``z_0`` its initial value.
* ``mo/hopper-2d`` (``mo-hopper-2d-v4``): ``[forward velocity, 10 (z - z_0)]`` plus the
  healthy reward, each minus ``1e-3 |a|^2``.

The dynamics, observations, termination and time limit are brax's (``envs.brax_envs``).
"""

from __future__ import annotations

import jax.numpy as jnp

from envs.brax_envs import BraxEnv, BraxParams, BraxState

OBJECTIVES = {
    "halfcheetah": ("run", "control"),
    "hopper": ("forward", "jump", "energy"),
    "hopper-2d": ("forward", "jump"),
}


class MOBraxEnv(BraxEnv):
    """A brax env whose reward is MO-Gymnasium's vector for ``variant``."""

    def __init__(self, brax_env, variant: str):
        super().__init__(brax_env, variant.split("-")[0])
        self.variant = variant

    @property
    def name(self) -> str:
        return f"mo/{self.variant}"

    @property
    def reward_shape(self) -> tuple[int, ...]:
        return (len(OBJECTIVES[self.variant]),)

    @property
    def objectives(self) -> tuple[str, ...]:
        return OBJECTIVES[self.variant]

    def step_env(self, key, state, action, params):
        obs, new_state, _, terminated, info = super().step_env(key, state, action, params)
        return obs, new_state, self.vector_reward(new_state, action), terminated, info

    def vector_reward(self, state: BraxState, action) -> jnp.ndarray:
        metrics = state.brax_state.metrics
        if self.variant == "halfcheetah":
            return jnp.stack([metrics["reward_run"], metrics["reward_ctrl"]])
        healthy = metrics["reward_healthy"]
        jump = 10.0 * (state.brax_state.pipeline_state.q[1] - self.brax_env.sys.init_q[1])
        energy = jnp.sum(jnp.square(action))
        if self.variant == "hopper":
            return jnp.stack([metrics["x_velocity"], jump, -energy]) + healthy
        return jnp.stack([metrics["x_velocity"], jump]) + healthy - 1e-3 * energy


def make(variant: str, backend: str = "positional", episode_length: int = 1000, **kwargs):
    """``(MOBraxEnv, BraxParams)`` for ``variant`` in halfcheetah, hopper, hopper-2d; ``kwargs`` go to brax."""
    from brax import envs as brax_envs  # imported lazily: brax pulls in mujoco

    name = {"halfcheetah": "halfcheetah", "hopper": "hopper", "hopper-2d": "hopper"}[variant]
    env = MOBraxEnv(brax_envs.get_environment(name, backend=backend, **kwargs), variant)
    return env, BraxParams(max_steps_in_episode=episode_length)
