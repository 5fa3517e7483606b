"""Name -> environment registry: ``envs.make(name, **kwargs) -> (env, params)``."""

from __future__ import annotations

import difflib
from typing import Any, Callable

_REGISTRY: dict[str, Callable[..., tuple[Any, Any]]] = {}


def register(name: str, factory: Callable[..., tuple[Any, Any]], *, overwrite: bool = False) -> None:
    """Register ``factory(**kwargs) -> (env, params)`` under ``name`` ("family/Id")."""
    if "/" not in name:
        raise ValueError(f"environment name must look like 'family/Id', got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"environment {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = factory


def names(family: str | None = None) -> list[str]:
    """All registered names, or those of one family (``names("probe")``)."""
    _load_builtin()
    return sorted(n for n in _REGISTRY if family is None or n.split("/", 1)[0] == family)


def make(name: str, **kwargs: Any) -> tuple[Any, Any]:
    """Build a registered environment and its default params."""
    _load_builtin()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.4)
        # Also match on the id alone, so "CartPole-v1" suggests "gymnax/CartPole-v1".
        tail = name.split("/")[-1].lower()
        close += [n for n in _REGISTRY if n.split("/")[-1].lower() == tail and n not in close]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown environment {name!r}.{hint} See envs.names() for all {len(_REGISTRY)} names.")
    return _REGISTRY[name](**kwargs)


_LOADED = False


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from envs import brax_envs, gymnax_envs, mo, pointmass, probes  # noqa: F401  (they register themselves)
