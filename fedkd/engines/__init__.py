"""Engines: Flower Grids that carry the ServerApp's Messages to the ClientApp.

An engine factory ``fn(client_app, cfg, run_config) -> Grid`` is registered by name and
selected with ``engine = "name"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ENGINE_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_engine(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a Grid factory ``fn(client_app, cfg, run_config) -> Grid`` as ``name``."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        ENGINE_REGISTRY[name] = fn
        return fn

    return decorator


def _inprocess(client_app: Any, cfg: Any, run_config: dict[str, Any]) -> Any:
    from fedkd.engines.inprocess import InProcessGrid

    return InProcessGrid(client_app, cfg.num_clients, run_config, workers=cfg.resolved_workers)


register_engine("inprocess")(_inprocess)
