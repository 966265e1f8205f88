"""fedkd server strategies (imported as ``fedkd.strategies``).

Strategies are Flower Message-API strategies; fusion rules in :mod:`fedkd.strategies.fusion`
are pure numpy functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedkd.registry import Registry

STRATEGY_REGISTRY: Registry[Callable[..., Any]] = Registry("strategy")
register_strategy = STRATEGY_REGISTRY.register
"""Register a strategy factory ``fn(cfg, teachers) -> KDStrategy`` under ``name``."""


def strategy_class(name: str) -> type | None:
    """The class a registered factory returns, from its return annotation (None if unknown)."""
    import typing

    try:
        ret = typing.get_type_hints(STRATEGY_REGISTRY[name]).get("return")
    except Exception:  # noqa: BLE001 - unresolvable annotations: unknown
        return None
    return ret if isinstance(ret, type) else None


def _register_builtin() -> None:
    from fedkd.strategies import centralized, client_fusion, multi_teacher, weights  # noqa: F401


_register_builtin()
