"""Typed configs: a frozen dataclass for what is static, a pytree for what may vary.

* Static config (shapes, counts, env name, network sizes): a frozen dataclass,
  hashable, fixed at trace time.
* Dynamic hyperparameters (learning rate, gamma, loss coefficients): a
  ``flax.struct.dataclass`` pytree, so ``jax.vmap(train)(keys, hparams)`` sweeps
  or evolves them inside one compiled call.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

T = TypeVar("T")


class ConfigError(ValueError):
    """A config field has a value the algorithm cannot use."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)


def require_positive(config: Any, *fields: str) -> None:
    """Raise :class:`ConfigError` naming the first of ``fields`` of ``config`` that is not > 0."""
    for name in fields:
        value = getattr(config, name)
        require(value > 0, f"{type(config).__name__}.{name}: expected a positive number, got {value!r}")


# Ranges for :func:`require_in_ranges`: a predicate on a float64 array, and what the error says is expected.
POSITIVE = (lambda v: v > 0, "a positive number")
NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
DISCOUNT = (lambda v: (v >= 0) & (v < 1), "a number in [0, 1)")
FRACTION = (lambda v: (v > 0) & (v <= 1), "a number in (0, 1]")  # a step size, a mixture weight
OPEN_UNIT = (lambda v: (v > 0) & (v < 1), "a number in (0, 1)")


def require_in_ranges(hparams: Any, ranges: dict[str, tuple[Any, str]]) -> None:
    """Raise :class:`ConfigError` naming the first field of ``hparams`` outside its range. ``ranges`` maps a
    field to ``(predicate, expected)``; a field may hold a scalar or one value per run (vmapped sweeps).
    Traced values (a check inside ``jit``) cannot be read and are skipped."""
    for field, (ok, expected) in ranges.items():
        try:
            value = np.asarray(getattr(hparams, field), np.float64)
        except (TypeError, jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            continue
        require(bool(np.all(ok(value))),
                f"{type(hparams).__name__}.{field}: expected {expected}, got {value.tolist()!r}")


def require_one_of(config: Any, field: str, choices: Any) -> None:
    """Raise :class:`ConfigError` naming ``field`` of ``config`` unless its value is one of ``choices``."""
    value = getattr(config, field)
    shown = choices if isinstance(choices, tuple) else sorted(choices)
    require(value in choices, f"{type(config).__name__}.{field}: expected one of {shown}, got {value!r}")


def to_dict(obj: Any) -> dict[str, Any]:
    """JSON-ready dict of a (possibly nested) dataclass; arrays become lists."""

    def convert(x):
        if dataclasses.is_dataclass(x):
            return {f.name: convert(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, (jax.Array, np.ndarray, np.generic)):
            return np.asarray(x).tolist()
        if isinstance(x, (list, tuple)):
            return [convert(v) for v in x]
        if isinstance(x, dict):
            return {k: convert(v) for k, v in x.items()}
        return x

    return convert(obj)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from ``data``; unknown keys are an error, lists become tuples."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(fields)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**kwargs)


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` that names the unknown field instead of a TypeError."""
    fields = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ConfigError(f"{type(obj).__name__}: unknown field(s) {unknown}; known fields are {sorted(fields)}")
    return dataclasses.replace(obj, **changes)


def diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two config dicts ("field: a != b")."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, prefix=f"{prefix}{key}.")
        elif json.dumps(va, sort_keys=True) != json.dumps(vb, sort_keys=True):
            out.append(f"{prefix}{key}: {va!r} != {vb!r}")
    return out


def broadcast_hparams(hparams: T, num: int) -> T:
    """Give every hyperparameter a leading axis of size ``num`` (for vmap over runs).

    Scalars are repeated; leaves that already have a leading axis must have
    size ``num``.
    """

    def expand(path, leaf):
        leaf = jnp.asarray(leaf, jnp.float32 if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating) else None)
        if leaf.ndim == 0:
            return jnp.broadcast_to(leaf, (num,))
        if leaf.shape[0] != num:
            name = jax.tree_util.keystr(path)
            raise ConfigError(f"hyperparameter {name}: leading axis has size {leaf.shape[0]}, expected {num} (one per run)")
        return leaf

    return jax.tree_util.tree_map_with_path(expand, hparams)
