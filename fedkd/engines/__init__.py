"""Engines: Flower Grids that carry the ServerApp's Messages to the ClientApp.

An engine factory ``fn(client_app, cfg, run_config) -> Grid`` is registered by name and
selected with ``engine = "name"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedkd.registry import ENGINE_REGISTRY

register_engine = ENGINE_REGISTRY.register
"""Register a Grid factory ``fn(client_app, cfg, run_config) -> Grid`` as ``name``.

A factory that also accepts ``state_dir`` gets the run's ``client_state`` folder; a Grid
with a ``state_store`` gets round checkpoints and ``fedkd run --resume``.
"""


def _store(state_dir: Path | None) -> Any:
    from fedkd.state_store import ClientStateStore

    return ClientStateStore(state_dir) if state_dir is not None else None


def _inprocess(
    client_app: Any, cfg: Any, run_config: dict[str, Any], state_dir: Path | None = None
) -> Any:
    from fedkd.engines.inprocess import InProcessGrid

    return InProcessGrid(
        client_app,
        cfg.num_clients,
        run_config,
        workers=cfg.resolved_workers,
        state_store=_store(state_dir),
    )


register_engine("inprocess")(_inprocess)


def _vectorized(
    client_app: Any, cfg: Any, run_config: dict[str, Any], state_dir: Path | None = None
) -> Any:
    from fedkd.client.cohort import train_cohort
    from fedkd.engines.cohort_grid import CohortGrid

    return CohortGrid(
        client_app,
        train_cohort,
        cfg.num_clients,
        run_config,
        workers=cfg.resolved_workers,
        cohort_size=cfg.cohort_size,
        state_store=_store(state_dir),
    )


register_engine("vectorized")(_vectorized)


def _ray(
    client_app: Any, cfg: Any, run_config: dict[str, Any], state_dir: Path | None = None
) -> Any:
    from fedkd.engines.ray_engine import RayGrid

    return RayGrid(cfg, cfg.num_clients, run_config, state_store=_store(state_dir))


register_engine("ray")(_ray)
