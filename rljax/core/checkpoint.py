"""Orbax checkpoints of the whole training state, tied to the config that made it.

A checkpoint directory holds ``config.json`` (the static config and the run's
hyperparameters). Restoring under a different config is refused with the list
of differing fields, and a state tree that does not match the saved one gets an
error naming the mismatch instead of orbax's traceback.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from rljax.core.config import diff


class CheckpointMismatchError(ValueError):
    """A checkpoint was made by another config or holds another state tree."""


class Checkpointer:
    """Orbax checkpoint manager for one run directory, keeping the newest ``max_to_keep`` steps.

    Writes ``config`` to ``config.json`` on first use and raises :class:`CheckpointMismatchError` if the
    directory was made by another config. Each step saves the state pytree plus a JSON ``meta`` dict.
    """

    def __init__(self, directory: str, config: dict[str, Any], max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.config = config
        os.makedirs(self.directory, exist_ok=True)
        config_path = os.path.join(self.directory, "config.json")
        if os.path.exists(config_path):
            with open(config_path) as f:
                saved = json.load(f)
            differences = diff(saved, json.loads(json.dumps(config)))
            if differences:
                raise CheckpointMismatchError(
                    f"checkpoints in {self.directory} were made with another config; differing fields:\n  "
                    + "\n  ".join(differences)
                )
        else:
            with open(config_path, "w") as f:
                json.dump(config, f, indent=2, sort_keys=True)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        self._manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )
        self._manager.wait_until_finished()

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restore into the structure, shapes and dtypes of ``like``; ``step`` defaults to the latest."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
            )
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointMismatchError(
                f"checkpoint {self.directory} step {step} does not match this run's state tree: {e}"
            ) from e
        return restored["state"], restored["meta"]

    def restore_raw(self, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """The saved state as nested dicts of numpy arrays (no target tree needed), e.g. to
        take the params of an earlier run as the start of another (SFT -> DPO)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        )
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self._manager.close()
