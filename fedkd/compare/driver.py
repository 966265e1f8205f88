"""The comparison driver: plan every (strategy, seed) run, run them, rewrite the outputs."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from fedkd import api
from fedkd.compare.inputs import run_dir_name, run_overrides, validate_seeds, validate_strategies
from fedkd.compare.outputs import write_outputs
from fedkd.compare.table import CompareResult, failed_row, run_row, summarize
from fedkd.config import FedkdConfig
from fedkd.errors import ConfigError
from fedkd.results import RunDirLock, check_out_dir, clear_out_dir, unique_dir
from fedkd.validation import load_config

CompareProgress = Callable[[str, dict[str, Any]], None]
"""``progress(event, info)``: ``run_start`` / ``run_end`` around each run (``info`` has
``strategy``, ``seed``, ``index`` (1-based), ``total``, ``rounds``; ``run_end`` adds
``status`` and ``error``), and the run's own ``status`` / ``round`` events in between."""


def default_compare_dir(cfg: FedkdConfig) -> Path:
    """A new ``runs/<name>-compare-<timestamp>`` (``-2``, ... appended if it exists)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return unique_dir(Path("runs") / f"{cfg.name}-compare-{stamp}")


def _config_label(config: str | Path | dict[str, Any] | FedkdConfig | None) -> str | None:
    return str(config) if isinstance(config, str | Path) else None


def plan_runs(
    config: str | Path | dict[str, Any] | FedkdConfig | None,
    strategies: Sequence[str],
    seeds: Sequence[int],
    overrides: Sequence[str],
) -> list[tuple[str, int, FedkdConfig]]:
    """Validate every (strategy, seed) config up front, in run order.

    Raises
    ------
    ConfigError
        The shared config's own error as is; an error that only one (strategy, seed) has
        names that strategy and seed.

    """
    load_config(config, list(overrides))  # errors of the shared config, without a suffix
    plan: list[tuple[str, int, FedkdConfig]] = []
    for name in strategies:
        for seed in seeds:
            try:
                cfg = load_config(config, run_overrides(overrides, name, seed))
            except ConfigError as err:
                raise ConfigError(f"{err} (with strategy.name={name}, seed={seed})") from None
            plan.append((name, seed, cfg))
    return plan


def compare(
    config: str | Path | dict[str, Any] | FedkdConfig | None,
    strategies: Sequence[str],
    seeds: Sequence[int] | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    progress: CompareProgress | None = None,
    overwrite: bool = False,
) -> CompareResult:
    """Run each strategy with each seed on one config and tabulate the results.

    Parameters
    ----------
    config : path to a TOML file, dict, FedkdConfig or None (all defaults)
    strategies : sequence of str
        Registered strategy names (``strategy.name``), each at most once.
    seeds : sequence of int, optional
        Non-negative, distinct; default: the config's own seed.
    out : path, optional
        Compare folder; default a new ``runs/<name>-compare-<timestamp>``. Run ``i`` goes
        to ``out/<strategy>-seed<S>/`` (the normal run directory). A folder that is not
        empty is refused unless ``overwrite``.
    overrides : sequence of str, optional
        ``dotted.key=value`` strings applied to every run; ``strategy.name`` and ``seed``
        are set per run on top of them.
    progress : callable, optional
        ``progress(event, info)``; see :data:`CompareProgress`.
    overwrite : bool
        Let ``out`` be a non-empty fedkd compare (or run) folder: its files are removed
        first, so no run of the earlier comparison is reused.

    Returns
    -------
    CompareResult
        Every run's row (finished or failed) and the per-strategy table.

    Raises
    ------
    ConfigError
        Before any run starts: unknown strategy, bad seed, an invalid config for some
        (strategy, seed), ``out`` not empty (without ``overwrite``) or locked by another
        fedkd process. A run that fails later is recorded as failed and the others go on.

    """
    strategies = validate_strategies(strategies)
    overrides = list(overrides or [])
    seeds = validate_seeds(seeds if seeds is not None else [load_config(config, overrides).seed])
    plan = plan_runs(config, strategies, seeds, overrides)
    out_dir = check_out_dir(out, overwrite) if out is not None else default_compare_dir(plan[0][2])
    with RunDirLock(out_dir):  # one fedkd process per compare folder
        if overwrite:
            clear_out_dir(out_dir)
        return _compare_locked(config, strategies, seeds, overrides, plan, out_dir, progress)


def _compare_locked(
    config: str | Path | dict[str, Any] | FedkdConfig | None,
    strategies: Sequence[str],
    seeds: Sequence[int],
    overrides: list[str],
    plan: list[tuple[str, int, FedkdConfig]],
    out_dir: Path,
    progress: CompareProgress | None,
) -> CompareResult:
    label = _config_label(config)
    notify = progress or (lambda event, info: None)
    result = CompareResult(out_dir=out_dir)
    write_outputs(out_dir, label, strategies, seeds, result, complete=False)
    for index, (name, seed, cfg) in enumerate(plan, start=1):
        info = {"strategy": name, "seed": seed, "index": index, "total": len(plan)}
        notify("run_start", {**info, "rounds": cfg.rounds})
        row = _run_one(config, name, seed, overrides, out_dir / run_dir_name(name, seed), notify)
        result.runs.append(row)
        result.table = summarize(result.runs)
        write_outputs(out_dir, label, strategies, seeds, result, complete=index == len(plan))
        notify(
            "run_end",
            {**info, "rounds": cfg.rounds, "status": row["status"], "error": row["error"]},
        )
    return result


def _run_one(
    config: str | Path | dict[str, Any] | FedkdConfig | None,
    strategy: str,
    seed: int,
    overrides: Sequence[str],
    run_dir: Path,
    notify: CompareProgress,
) -> dict[str, Any]:
    """Run one (strategy, seed); a failure becomes a failed row (traceback in error.txt)."""
    try:
        result = api.run(
            config, overrides=run_overrides(overrides, strategy, seed), out=run_dir, progress=notify
        )
    except Exception as err:  # any failure of one run is recorded, not fatal
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        return failed_row(strategy, seed, run_dir, err)
    return run_row(strategy, seed, run_dir, result)
