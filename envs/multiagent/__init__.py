"""Multi-agent environments: per-agent dicts (JaxMARL's shape), our own Gems, a JaxMARL adapter.

    env, params = envs.multiagent.make("multiagent/gems")
    obs, state = env.reset(key, params)                       # obs: {agent: array}
    obs, state, rewards, dones, info = env.step(key, state, {"agent_0": 1, "agent_1": 4}, params)

Names: ``multiagent/gems`` (``envs.multiagent.gems``, with an exact tabular view) and
``jaxmarl/<JaxMARL id>`` (``envs.multiagent.mpe``; needs the optional ``jaxmarl``).
See ``envs.multiagent.core`` for the contract.
"""

from __future__ import annotations

import difflib
from typing import Any

from envs.multiagent.core import MultiAgentEnv, stack_agents, unstack_agents

NAMES = ("multiagent/gems", "jaxmarl/MPE_simple_spread_v3")


def make(name: str, **kwargs: Any):
    """Build a multi-agent env and its default params: ``multiagent/gems`` or ``jaxmarl/<id>``."""
    if name == "multiagent/gems":
        from envs.multiagent import gems  # noqa: PLC0415

        return gems.make(**kwargs)
    if name.startswith("jaxmarl/"):
        from envs.multiagent import mpe  # noqa: PLC0415

        return mpe.make(name.split("/", 1)[1], **kwargs)
    close = difflib.get_close_matches(name, NAMES, n=3, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown multi-agent environment {name!r}.{hint} Known: multiagent/gems, jaxmarl/<JaxMARL id> "
                   f"(e.g. {NAMES[1]})")


__all__ = ["MultiAgentEnv", "NAMES", "make", "stack_agents", "unstack_agents"]
