"""``fedkd.run``: the Python entry point that the CLI wraps."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

from fedkd import keys
from fedkd.checkpoint import check_config, checkpoint_info
from fedkd.config import FedkdConfig
from fedkd.errors import ConfigError
from fedkd.experiment import Progress, default_out_dir, run_server
from fedkd.results import RunDirLock, RunResult, check_out_dir, clear_out_dir, out_path
from fedkd.validation import load_config

log = logging.getLogger("fedkd")


def run(
    config: str | Path | dict[str, Any] | FedkdConfig | None = None,
    *,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Run one federated distillation experiment and return its summary and metrics.

    Parameters
    ----------
    config : path to a TOML file, dict, FedkdConfig or None (all defaults)
    overrides : list of ``dotted.key=value`` strings (as ``fedkd run --set``)
    out : run directory; default a new ``runs/<name>-<timestamp>``. A directory that is
        not empty is refused unless ``overwrite``.
    progress : optional ``progress(event, info)`` callback
    resume : a run directory to continue after its last completed round (its
        ``config.json`` is the config; ``config``, ``overrides`` and ``out`` must be None).
        A run that already finished is returned as it is, with no file changed.
    overwrite : bool
        Let ``out`` be a non-empty fedkd run directory: its files are removed first, so
        nothing of the earlier run (results, client students, checkpoints) is reused.

    Returns
    -------
    RunResult
        ``.summary`` (as in ``summary.json``), ``.metrics`` (one dict per round),
        ``.out_dir``.

    Raises
    ------
    ConfigError
        Bad config or directory: ``out`` not empty (without ``overwrite``), a run
        directory locked by another fedkd process, a resume whose ``config.json`` changed
        or whose checkpoint is unreadable.

    """
    if resume is not None:
        if config is not None or overrides or out is not None or overwrite:
            raise ConfigError(
                "--resume continues a run as it was configured: give no config, "
                "overrides, --out or --overwrite"
            )
        out_dir = out_path(resume, "--resume")
        cfg = resume_config(out_dir)
        done = finished_run(out_dir)
        if done is not None:
            log.info("%s already finished all %d rounds; nothing to do", out_dir, cfg.rounds)
            return done
    else:
        cfg = load_config(config, overrides)
        out_dir = check_out_dir(out, overwrite) if out is not None else default_out_dir(cfg)
    with RunDirLock(out_dir):
        if resume is None and overwrite:
            clear_out_dir(out_dir)
        return _run_locked(cfg, out_dir, progress, resume is not None)


def _run_locked(
    cfg: FedkdConfig, out_dir: Path, progress: Progress | None, resume: bool
) -> RunResult:
    from fedkd.client_app import app as client_app
    from fedkd.engines import ENGINE_REGISTRY

    run_config = {keys.RUN_CONFIG_JSON: cfg.model_dump_json()}
    factory = ENGINE_REGISTRY[cfg.engine]
    if "state_dir" in inspect.signature(factory).parameters:
        grid = factory(client_app, cfg, run_config, state_dir=out_dir / "client_state")
    else:
        grid = factory(client_app, cfg, run_config)
    try:
        return run_server(grid, cfg, out_dir, progress, resume=resume)
    finally:
        close = getattr(grid, "close", None)
        if callable(close):
            close()


def resume_config(run_dir: str | Path) -> FedkdConfig:
    """The config of the run in ``run_dir`` (its ``config.json``).

    Raises
    ------
    ConfigError
        One line: no readable ``config.json`` there, or an invalid one.

    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.json there; not a run directory")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"--resume {run_dir}: config.json is not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--resume {run_dir}: config.json does not hold a JSON object")
    return load_config(data)


def finished_run(run_dir: str | Path) -> RunResult | None:
    """The stored result of the run in ``run_dir`` if it finished all its rounds, else None.

    Finished means: its newest checkpoint is of the last round and ``summary.json`` was
    written. Nothing is changed in ``run_dir``.

    Raises
    ------
    ConfigError
        ``config.json`` is missing, invalid or changed since the checkpoint; the
        checkpoint is unreadable; ``summary.json`` / ``metrics.jsonl`` are not JSON.

    """
    out = Path(run_dir)
    cfg = resume_config(out)
    info = checkpoint_info(out)
    if info is None:
        return None
    check_config(out, info, cfg)
    summary_path = out / "summary.json"
    if info.round < cfg.rounds or not summary_path.is_file():
        return None
    try:
        summary = json.loads(summary_path.read_text())
        metrics_path = out / "metrics.jsonl"
        lines = metrics_path.read_text().splitlines() if metrics_path.is_file() else []
        metrics = [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(
            f"--resume {out}: summary.json or metrics.jsonl unreadable ({err})"
        ) from None
    return RunResult(summary=summary, metrics=metrics, out_dir=out)
