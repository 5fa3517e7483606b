"""What every experiment shares: run directories, flags, debug mode, overrides."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import os
from typing import Any

import jax
import numpy as np

from rljax.core.config import ConfigError, to_dict
from rljax.core.dataset import scale_rewards_by_return_range
from rljax.core.logging import new_run_dir, prepare_run_dir, write_json


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

    Values are Python literals (``--set learning_rate=3e-4 --set hidden_sizes=(64,64)``). A dotted
    name reaches into a nested config (``--set sac.critic_lr=1e-4``: the ``critic_lr`` of the
    target's ``sac`` field). Each target (and each nested config) is rebuilt once with all its
    changes, so checks that relate several fields (a batch that must divide into minibatches) see
    the final values.
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
            if _has_field(target, field):
                per_target[i][field] = value
                break
        else:
            raise ConfigError(f"--set {field}: no such field; {_known_fields(field, targets)}")
    return [_replace_fields(t, c) if c else t for t, c in zip(targets, per_target)]


def add_settings_arguments(parser: argparse.ArgumentParser, name: str, example: str) -> None:
    """The flags of an experiment configured by one ``Settings`` dataclass: ``--seed``, ``--quick`` (its tiny
    preset), ``--set field=value`` (``example`` shows two) and the run-directory flags."""
    parser.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    parser.add_argument("--quick", action="store_true", help="tiny budget (seconds): for smoke tests")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help=f"override a setting, e.g. {example}")
    add_run_arguments(parser, name)


def settings_from_flags(args: argparse.Namespace, settings: Any, quick: dict[str, Any]) -> Any:
    """``settings`` (a dataclass of defaults), with the ``quick`` preset under ``--quick``, then ``--set``."""
    if args.quick:
        settings = dataclasses.replace(settings, **quick)
    (settings,) = apply_overrides(args.set, settings)
    return settings


def require_multiple(settings: Any, field: str, of: str) -> None:
    """Exit naming both ``--set`` fields unless ``settings.field`` is a multiple of ``settings.of``."""
    value, divisor = getattr(settings, field), getattr(settings, of)
    if value % divisor:
        raise SystemExit(f"--set {field} / {of}: {field} ({value}) must be a multiple of {of} ({divisor})")


def positive_floats(settings: Any, field: str) -> tuple[float, ...]:
    """``settings.field`` as a non-empty tuple of positive floats, or exit naming the ``--set`` field."""
    values = tuple(float(v) for v in getattr(settings, field))
    if not values or min(values) <= 0:
        raise SystemExit(f"--set {field}: expected one or more positive numbers, got {getattr(settings, field)}")
    return values


def write_settings_config(run_dir: str, args: argparse.Namespace, name: str, settings: Any, **parts: Any) -> None:
    """``config.json`` of a ``Settings``-dataclass experiment (not on ``--resume``): its name, settings, seed,
    ``--quick`` and any other dataclasses given as ``parts`` (e.g. ``model=``)."""
    if not args.resume:
        write_json(os.path.join(run_dir, "config.json"), {"experiment": name, "settings": to_dict(settings),
                                                          "seed": args.seed, "quick": bool(args.quick)}
                   | {key: to_dict(value) for key, value in parts.items()})


def seed_returns(trainer, hparams, keys):
    """Train and evaluate one run per key as one vmapped, jitted call: ``(final evaluation return [seeds],
    training episode return per update [seeds, updates])`` (``trainer``: the ``make_train`` shape)."""

    def run(key):
        train_key, eval_key = jax.random.split(key)
        state, metrics = trainer(train_key, hparams)
        return trainer.evaluate(state, eval_key)["return"].mean(), metrics["episode_return"]

    final, curve = jax.jit(jax.vmap(run))(keys)
    return np.asarray(final), np.asarray(curve)


def write_result(run_dir: str, result: dict) -> None:
    """Write ``result.json`` and print its claims' verdicts and the run time (``result["seconds"]``)."""
    write_json(os.path.join(run_dir, "result.json"), result)
    print("claims: " + ", ".join(f"{k}={'holds' if v['holds'] else 'fails'}" for k, v in result["claims"].items()))
    print(f"wrote {run_dir} in {result['seconds']:.0f} s")


def _field_names(config: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(config)}


def _has_field(config: Any, dotted: str) -> bool:
    """Whether ``config`` has the field ``dotted`` (``"sac.critic_lr"``: a nested config's field)."""
    for name in dotted.split("."):
        if not dataclasses.is_dataclass(config) or name not in _field_names(config):
            return False
        config = getattr(config, name)
    return True


def _known_fields(dotted: str, targets: tuple[Any, ...]) -> str:
    """The fields an unknown ``dotted`` name could have meant, at the deepest config it reaches."""
    parent = dotted.rpartition(".")[0]
    nested = [functools.reduce(getattr, parent.split("."), t) for t in targets if parent and _has_field(t, parent)]
    nested = [c for c in nested if dataclasses.is_dataclass(c)]
    if nested:
        return f"known fields of {parent} are {sorted(set().union(*map(_field_names, nested)))}"
    return f"known fields are {sorted(set().union(*map(_field_names, targets)))}"


def _replace_fields(config: Any, changes: dict[str, Any]) -> Any:
    """``config`` rebuilt with ``changes`` (checked names relative to it; dotted ones go into nested
    configs, each rebuilt once)."""
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for name, value in changes.items():
        head, _, rest = name.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, inner_changes in nested.items():
        direct[head] = _replace_fields(direct.get(head, getattr(config, head)), inner_changes)
    return dataclasses.replace(config, **direct)


# The brax locomotion scale-up of the Pendulum experiments: the env that --gpu selects unless --env is given.
GPU_ENV = "brax/hopper"
# Offline RL on these envs scales rewards by 1000 / (the dataset's return range), as the IQL, DVL (f-DVL)
# and ODICE codes do for hopper, halfcheetah and walker2d.
RETURN_RANGE_ENVS = ("brax/hopper", "brax/halfcheetah", "brax/walker2d")


def offline_rl_rewards(dataset, env: str):
    """The dataset an offline RL learner trains on: on ``RETURN_RANGE_ENVS`` its rewards scaled by
    ``dataset.scale_rewards_by_return_range`` (its metadata records ``reward_scale``), elsewhere as it is.
    Returns and normalised scores stay in the env's units."""
    return scale_rewards_by_return_range(dataset)[0] if env in RETURN_RANGE_ENVS else dataset


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
