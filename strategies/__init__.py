"""fedkd server strategies (imported as ``fedkd.strategies``): the registry only.

This package's ``__init__`` is light on purpose (layer L2): the pure fusion rules in
:mod:`fedkd.strategies.fusion` are imported by :mod:`fedkd.teachers` without pulling in any
Flower strategy class. The built-in strategies register themselves when
:mod:`fedkd.strategies.catalogue` is imported; code that needs every strategy name (config
validation, the server, the CLI, ``fedkd compare``) imports the registry from there.

Adding a strategy: one new module under ``strategies/`` that decorates its factory with
:func:`register_strategy`, plus its import line in :mod:`fedkd.strategies.catalogue`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

from fedkd.registry import Registry

STRATEGY_REGISTRY: Registry[Callable[..., Any]] = Registry("strategy")
"""Strategy name -> factory ``fn(cfg, teachers) -> KDStrategy`` (complete once
:mod:`fedkd.strategies.catalogue` is imported)."""

register_strategy = STRATEGY_REGISTRY.register
"""Register a strategy factory ``fn(cfg, teachers) -> KDStrategy`` under ``name``."""


def strategy_class(name: str) -> type | None:
    """The class a registered factory returns, from its return annotation (None if unknown)."""
    try:
        ret = typing.get_type_hints(STRATEGY_REGISTRY[name]).get("return")
    except Exception:  # noqa: BLE001 - unresolvable annotations: unknown
        return None
    return ret if isinstance(ret, type) else None
