"""``fedkd.run``: the Python entry point that the CLI wraps."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from fedkd import keys
from fedkd.config import FedkdConfig, load_config
from fedkd.errors import ConfigError
from fedkd.results import RunResult
from fedkd.server_app import Progress, default_out_dir, run_server


def run(
    config: str | Path | dict[str, Any] | FedkdConfig | None = None,
    *,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
    resume: str | Path | None = None,
) -> RunResult:
    """Run one federated distillation experiment and return its summary and metrics.

    Parameters
    ----------
    config : path to a TOML file, dict, FedkdConfig or None (all defaults)
    overrides : list of ``dotted.key=value`` strings (as ``fedkd run --set``)
    out : run directory; default ``runs/<name>-<timestamp>``
    progress : optional ``progress(event, info)`` callback
    resume : a run directory to continue after its last completed round (its
        ``config.json`` is the config; ``config``, ``overrides`` and ``out`` must be None)

    Returns
    -------
    RunResult
        ``.summary`` (as in ``summary.json``), ``.metrics`` (one dict per round),
        ``.out_dir``.

    """
    from fedkd.client_app import app as client_app
    from fedkd.engines import ENGINE_REGISTRY

    if resume is not None:
        if config is not None or overrides or out is not None:
            raise ConfigError("--resume continues a run as it was configured: give no config")
        out_dir = Path(resume)
        if not (out_dir / "config.json").is_file():
            raise ConfigError(f"--resume {out_dir}: no config.json there; not a run directory")
        cfg = load_config(json.loads((out_dir / "config.json").read_text()))
    else:
        cfg = load_config(config, overrides)
        out_dir = Path(out) if out is not None else default_out_dir(cfg)
    run_config = {keys.RUN_CONFIG_JSON: cfg.model_dump_json()}
    factory = ENGINE_REGISTRY[cfg.engine]
    if "state_dir" in inspect.signature(factory).parameters:
        grid = factory(client_app, cfg, run_config, state_dir=out_dir / "client_state")
    else:
        grid = factory(client_app, cfg, run_config)
    try:
        return run_server(grid, cfg, out_dir, progress, resume=resume is not None)
    finally:
        close = getattr(grid, "close", None)
        if callable(close):
            close()
