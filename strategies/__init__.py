"""fedkd server strategies (imported as ``fedkd.strategies``).

Strategies are Flower Message-API strategies; fusion rules in :mod:`fedkd.strategies.fusion`
are pure numpy functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

STRATEGY_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_strategy(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a strategy factory ``fn(cfg, setup) -> KDStrategy`` under ``name``."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        STRATEGY_REGISTRY[name] = fn
        return fn

    return decorator


def _register_builtin() -> None:
    from fedkd.strategies import multi_teacher  # noqa: F401


_register_builtin()
