"""Scale-out with ``jax.sharding``: one ``train``, any number of devices and hosts.

Two ways to spread a run (no ``pmap``; XLA's SPMD partitioner does the work):

* ``"pop"``: the leading axis of a vmapped population (seeds, sweeps, ES
  members) is split over the mesh axis ``pop``; each device trains its runs.
* ``"envs"``: within each run, the batch of environments (``state.env``) is
  split over the mesh axis ``envs``; parameters are replicated and XLA inserts
  the reductions that the losses need (the same program, partitioned).

Either way the computation is the single-device one, so metrics agree with a
single-device run for the same keys up to the order of float reductions.

Multi-host (TPU pods, several GPU hosts): call ``initialize_distributed()``
first on every process (``jax.distributed.initialize()``), build the mesh over
``jax.devices()`` (all hosts), and log from process 0 only (``is_logging_process``).
Keys are global, so each process computes the same program on its shard;
``process_key`` folds the process index into a key for per-process randomness
(e.g. data loading) where that is wanted.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rljax.core.config import ConfigError

SHARD_MODES = ("pop", "envs")


def make_mesh(axis: str, devices: list | None = None) -> Mesh:
    """A one-dimensional mesh named ``axis`` over ``devices`` (default: all, every host)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (axis,))


def state_shardings(state: Any, mesh: Mesh, mode: str) -> Any:
    """Shardings for a population of training states (leading axis = runs).

    ``"pop"`` splits every leaf's run axis; ``"envs"`` splits axis 1 of the
    leaves of ``state.env`` (the env batch) and replicates everything else.
    """
    if mode not in SHARD_MODES:
        raise ConfigError(f"shard: expected one of {SHARD_MODES}, got {mode!r}")
    axis = mesh.axis_names[0]
    size = mesh.devices.size
    if mode == "pop":
        runs = jax.tree.leaves(state)[0].shape[0]
        if runs % size:
            raise ConfigError(f"shard='pop': {runs} runs do not split evenly over {size} devices")
        return jax.tree.map(lambda _: NamedSharding(mesh, P(axis)), state)
    if not hasattr(state, "env"):
        raise ConfigError(f"shard='envs' needs a state with an `env` field; {type(state).__name__} has none")
    num_envs = jax.tree.leaves(state.env)[0].shape[1]
    if num_envs % size:
        raise ConfigError(f"shard='envs': num_envs = {num_envs} does not split evenly over {size} devices")
    replicated = jax.tree.map(lambda _: NamedSharding(mesh, P()), state)
    env_split = jax.tree.map(lambda _: NamedSharding(mesh, P(None, axis)), state.env)
    return replicated.replace(env=env_split)


def initialize_distributed(**kwargs) -> None:
    """``jax.distributed.initialize`` (coordinator address etc. from the cluster env or kwargs)."""
    jax.distributed.initialize(**kwargs)


def is_logging_process() -> bool:
    """True on process 0 only: the one that writes logs, plots and checkpoints."""
    return jax.process_index() == 0


def process_key(key: jax.Array) -> jax.Array:
    """A key that differs per host process (for per-process randomness only)."""
    return jax.random.fold_in(key, jax.process_index())
