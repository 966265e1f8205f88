"""Engines: Flower Grids that carry the ServerApp's Messages to the ClientApp.

An engine factory ``fn(client_app, cfg, run_config) -> Grid`` is registered by name and
selected with ``engine = "name"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedkd.registry import Registry

ENGINE_REGISTRY: Registry[Callable[..., Any]] = Registry("engine")
register_engine = ENGINE_REGISTRY.register
"""Register a Grid factory ``fn(client_app, cfg, run_config) -> Grid`` as ``name``."""


def _inprocess(client_app: Any, cfg: Any, run_config: dict[str, Any]) -> Any:
    from fedkd.engines.inprocess import InProcessGrid

    return InProcessGrid(client_app, cfg.num_clients, run_config, workers=cfg.resolved_workers)


register_engine("inprocess")(_inprocess)


def _vectorized(client_app: Any, cfg: Any, run_config: dict[str, Any]) -> Any:
    from fedkd.client_app import train_cohort
    from fedkd.engines.vectorized import VectorizedGrid

    return VectorizedGrid(
        client_app,
        train_cohort,
        cfg.num_clients,
        run_config,
        workers=cfg.resolved_workers,
        cohort_size=cfg.cohort_size,
    )


register_engine("vectorized")(_vectorized)
