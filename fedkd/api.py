"""``fedkd.run``: the Python entry point that the CLI wraps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedkd import keys
from fedkd.config import FedkdConfig, load_config
from fedkd.results import RunResult
from fedkd.server_app import Progress, default_out_dir, run_server


def run(
    config: str | Path | dict[str, Any] | FedkdConfig | None = None,
    *,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Run one federated distillation experiment and return its summary and metrics.

    Parameters
    ----------
    config : path to a TOML file, dict, FedkdConfig or None (all defaults)
    overrides : list of ``dotted.key=value`` strings (as ``fedkd run --set``)
    out : run directory; default ``runs/<name>-<timestamp>``
    progress : optional ``progress(event, info)`` callback

    Returns
    -------
    RunResult
        ``.summary`` (as in ``summary.json``), ``.metrics`` (one dict per round),
        ``.out_dir``.

    """
    from fedkd.client_app import app as client_app
    from fedkd.engines import ENGINE_REGISTRY

    cfg = load_config(config, overrides)
    out_dir = Path(out) if out is not None else default_out_dir(cfg)
    run_config = {keys.RUN_CONFIG_JSON: cfg.model_dump_json()}
    grid = ENGINE_REGISTRY[cfg.engine](client_app, cfg, run_config)
    try:
        return run_server(grid, cfg, out_dir, progress)
    finally:
        close = getattr(grid, "close", None)
        if callable(close):
            close()
