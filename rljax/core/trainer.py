"""The one shape every algorithm has: ``make_train(config) -> train(key, hparams)``.

``make_train`` returns a :class:`Trainer`. Calling it runs a whole training run as
one pure function (PureJaxRL-style), so it jits, vmaps over seeds and
hyperparameters, and shards. Its parts are exposed for the host loop, which runs
the same ``update`` in jitted chunks with checkpoints and evaluation between them:

    init(key, hparams) -> state                  # the whole training state, one pytree
    update(state) -> (state, metrics)            # one update; metrics: dict of scalars
    evaluate(state, key) -> dict                 # {"return": [episodes] or [episodes, k], ...}
    num_updates, env_steps_per_update
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax


@dataclasses.dataclass(frozen=True)
class Trainer:
    """What ``make_train(config)`` returns: the pure parts of one algorithm's training run.

    ``init``, ``update`` and ``evaluate`` are as in the module docstring; ``num_updates`` and
    ``env_steps_per_update`` are static counts derived from ``config``. Calling it runs ``init``, then every
    update in one ``lax.scan``.
    """

    config: Any
    init: Callable[[jax.Array, Any], Any]
    update: Callable[[Any], tuple[Any, dict[str, jax.Array]]]
    evaluate: Callable[[Any, jax.Array], dict[str, jax.Array]]
    num_updates: int
    env_steps_per_update: int

    def run_updates(self, state: Any, num_updates: int):
        """``num_updates`` updates as one ``lax.scan``; metrics stacked on a leading axis."""
        return jax.lax.scan(lambda s, _: self.update(s), state, None, length=num_updates)

    def __call__(self, key: jax.Array, hparams: Any):
        """A whole training run: ``(final_state, metrics [num_updates])``."""
        return self.run_updates(self.init(key, hparams), self.num_updates)

    @property
    def total_env_steps(self) -> int:
        return self.num_updates * self.env_steps_per_update
