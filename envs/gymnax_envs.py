"""Every gymnax environment, registered as ``gymnax/<Id>``.

gymnax 1.0 already follows our contract, so the adapter is the identity; keyword
arguments go to ``gymnax.make`` except ``max_steps_in_episode`` etc., which
override fields of the returned ``EnvParams``.
"""

from __future__ import annotations

import dataclasses

import gymnax

from envs.registry import register


def _factory(env_id: str):
    def make(**kwargs):
        env, params = gymnax.make(env_id)
        if kwargs:
            fields = {f.name for f in dataclasses.fields(params)}
            unknown = sorted(set(kwargs) - fields)
            if unknown:
                raise TypeError(
                    f"gymnax/{env_id} has no parameter(s) {unknown}; its EnvParams fields are {sorted(fields)}"
                )
            params = params.replace(**kwargs)
        return env, params

    return make


for _env_id in gymnax.registered_envs:
    register(f"gymnax/{_env_id}", _factory(_env_id))
