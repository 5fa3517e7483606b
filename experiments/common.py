"""What every experiment shares: run directories, flags, debug mode, overrides."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
from typing import Any

import jax

from rljax.core.config import ConfigError
from rljax.core.logging import new_run_dir, prepare_run_dir


def add_run_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    group = parser.add_argument_group("run directory and debugging")
    group.add_argument("--out", help=f"output directory (default: runs/{name}/<time>)")
    group.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    group.add_argument("--debug", action="store_true", help="disable jit and raise on NaNs")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument("--tensorboard", action="store_true", help="also write TensorBoard summaries")


def setup_run(args: argparse.Namespace, name: str) -> str:
    """Debug flags and the run directory (created; never clobbered by accident)."""
    if args.debug:
        jax.config.update("jax_disable_jit", True)
        jax.config.update("jax_debug_nans", True)
    if args.resume and args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
        raise SystemExit("--resume DIR continues the run in DIR; do not also pass a different --out")
    path = args.resume or args.out or new_run_dir("runs", name)
    return prepare_run_dir(path, resume=bool(args.resume), overwrite=args.overwrite)


def apply_overrides(pairs: list[str] | None, *targets: Any, **changes: Any) -> list[Any]:
    """Apply ``changes`` and ``--set field=value`` pairs to whichever of ``targets`` has each field.

    Values are Python literals (``--set learning_rate=3e-4 --set hidden_sizes=(64,64)``).
    Each target is rebuilt once with all its changes, so checks that relate
    several fields (a batch that must divide into minibatches) see the final values.
    """
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set expects field=value, got {pair!r}")
        field, raw = pair.split("=", 1)
        try:
            changes[field] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            changes[field] = raw
    per_target: list[dict[str, Any]] = [{} for _ in targets]
    for field, value in changes.items():
        for i, target in enumerate(targets):
            if field in {f.name for f in dataclasses.fields(target)}:
                per_target[i][field] = value
                break
        else:
            known = sorted({f.name for t in targets for f in dataclasses.fields(t)})
            raise ConfigError(f"--set {field}: no such field; known fields are {known}")
    return [dataclasses.replace(t, **c) if c else t for t, c in zip(targets, per_target)]


# The brax locomotion scale-up of the Pendulum experiments: the env that --gpu selects unless --env is given.
GPU_ENV = "brax/hopper"


def apply_gpu_defaults(args: argparse.Namespace, add_arguments, gpu_defaults: dict[str, Any]) -> None:
    """With ``args.gpu``: set each flag in ``gpu_defaults`` that is still at its parser default to its
    GPU value (flags given explicitly win, so ``--gpu --env brax/halfcheetah`` scales halfcheetah)."""
    if not getattr(args, "gpu", False):
        return
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for name, value in gpu_defaults.items():
        if getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)
