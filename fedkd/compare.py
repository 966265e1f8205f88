"""``fedkd compare``: several strategies (and seeds) on one config, side by side.

:func:`compare` calls :func:`fedkd.run` once per strategy and seed, each into its own run
directory ``OUT/<strategy>-seed<S>/``; data and teachers are cached by config hash, so
only the first run pays for them. After every finished run it rewrites ``compare.json``,
``compare.md`` and ``compare.png`` atomically, so a crash keeps the finished rows.

The table and JSON are built by pure functions (:func:`run_row`, :func:`summarize`,
:func:`markdown_table`) that can be tested without running anything.
"""

from __future__ import annotations

import numbers
import os
import statistics
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fedkd import api
from fedkd.config import FedkdConfig
from fedkd.errors import ConfigError
from fedkd.results import (
    RunDirLock,
    RunResult,
    atomic_write_bytes,
    check_out_dir,
    clear_out_dir,
    unique_dir,
    write_json,
)
from fedkd.validation import load_config

CompareProgress = Callable[[str, dict[str, Any]], None]
"""``progress(event, info)``: ``run_start`` / ``run_end`` around each run (``info`` has
``strategy``, ``seed``, ``index`` (1-based), ``total``, ``rounds``; ``run_end`` adds
``status`` and ``error``), and the run's own ``status`` / ``round`` events in between."""

METRICS: tuple[str, ...] = (
    "student_accuracy_mean",
    "student_accuracy_p10",
    "local_only_accuracy_mean",
    "bytes_up",
    "bytes_down",
    "wall_time_s",
)
"""Per-run figures aggregated over seeds in the table (mean, and std with several seeds)."""

SEEDS_ALLOWED = "comma-separated integers >= 0, e.g. 0,1,2"


@dataclass
class CompareResult:
    """What :func:`compare` returns (the content of ``compare.json``).

    Attributes
    ----------
    runs : list of dict
        One row per run, in run order (see :func:`run_row` and :func:`failed_row`).
    table : list of dict
        One aggregated row per strategy (see :func:`summarize`).
    out_dir : Path
        Folder holding ``compare.json``, ``compare.md``, ``compare.png`` and the run folders.

    """

    runs: list[dict[str, Any]] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The rows of runs that failed."""
        return [r for r in self.runs if r["status"] != "ok"]

    @property
    def markdown(self) -> str:
        """The strategy table as markdown (as in ``compare.md``)."""
        return markdown_table(self.table)


# ---------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------


def parse_list(text: str) -> list[str]:
    """Split a comma-separated command-line value into stripped, non-empty items.

    Parameters
    ----------
    text : str
        E.g. ``"multi_teacher, local"``.

    Returns
    -------
    list of str
        The items; empty items (``"a,,b"``) are dropped.

    """
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_seeds(text: str) -> list[int]:
    """Parse ``--seeds`` (``"0,1,2"``) into a list of non-negative ints.

    Raises
    ------
    ConfigError
        One line naming the bad item and what is allowed.

    """
    items = parse_list(text)
    if not items:
        raise ConfigError(f"seeds={text!r}: no seed given; allowed: {SEEDS_ALLOWED}")
    for item in items:
        if not item.isdigit():
            raise ConfigError(
                f"seeds={text!r}: {item!r} is not a non-negative integer; allowed: {SEEDS_ALLOWED}"
            )
    return validate_seeds([int(item) for item in items])


def validate_seeds(seeds: Iterable[Any]) -> list[int]:
    """Check that seeds are distinct non-negative integers (``bool`` is not a seed).

    Raises
    ------
    ConfigError
        One line naming the bad seed and what is allowed.

    """
    out: list[int] = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ConfigError(
                f"seed {seed!r} is not a non-negative integer; allowed: {SEEDS_ALLOWED}"
            )
        if int(seed) in out:
            raise ConfigError(f"seed {seed} is given twice; give each seed once")
        out.append(int(seed))
    if not out:
        raise ConfigError(f"no seed given; allowed: {SEEDS_ALLOWED}")
    return out


def validate_strategies(names: Iterable[str]) -> list[str]:
    """Check strategy names against the strategy registry (any registered name is fine).

    Raises
    ------
    ConfigError
        One line naming the unknown (or repeated) names and the registered ones.

    """
    from fedkd.strategies.catalogue import STRATEGY_REGISTRY

    names = list(names)
    allowed = STRATEGY_REGISTRY.allowed()
    if not names:
        raise ConfigError(f"no strategy given; allowed: {allowed}")
    unknown = [n for n in names if n not in STRATEGY_REGISTRY]
    if unknown:
        what = "strategy" if len(unknown) == 1 else "strategies"
        listed = ", ".join(repr(n) for n in unknown)
        raise ConfigError(f"unknown {what} {listed}; allowed: {allowed}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"strategy {repeated[0]!r} is given twice; give each strategy once")
    return names


def run_overrides(overrides: Sequence[str], strategy: str, seed: int) -> list[str]:
    """The user's overrides plus ``strategy.name`` and ``seed`` of one run (these win)."""
    return [*overrides, f"strategy.name={strategy}", f"seed={seed}"]


def run_dir_name(strategy: str, seed: int) -> str:
    """``<strategy>-seed<S>``: a run's folder inside the compare folder."""
    return f"{strategy}-seed{seed}"


# ---------------------------------------------------------------------------------------
# pure table building
# ---------------------------------------------------------------------------------------


def run_row(strategy: str, seed: int, out_dir: Path, result: RunResult) -> dict[str, Any]:
    """One ``compare.json`` row of a finished run, from its summary and per-round metrics."""
    s = result.summary
    return {
        "strategy": strategy,
        "seed": seed,
        "status": "ok",
        "error": None,
        "out_dir": str(out_dir),
        "student_accuracy_mean": s["final"]["student_accuracy_mean"],
        "student_accuracy_p10": s["final"]["student_accuracy_p10"],
        "teacher_accuracy": s["final"]["teacher_accuracy"],
        "local_only_accuracy_mean": s["baselines"]["local_only_accuracy_mean"],
        "bytes_up": s["communication"]["bytes_up"],
        "bytes_down": s["communication"]["bytes_down"],
        "wall_time_s": s["wall_time_s"],
        "rounds": s["rounds"],
        "accuracy_per_round": [
            {"round": m["round"], "student_accuracy_mean": m.get("student_accuracy_mean")}
            for m in result.metrics
        ],
    }


def failed_row(strategy: str, seed: int, out_dir: Path, error: BaseException) -> dict[str, Any]:
    """One ``compare.json`` row of a run that failed, with a one-line reason."""
    return {
        "strategy": strategy,
        "seed": seed,
        "status": "failed",
        "error": one_line(error),
        "out_dir": str(out_dir),
    }


def one_line(error: BaseException) -> str:
    """``error`` as one line: its message (prefixed by the type unless it is fedkd's own)."""
    from fedkd.errors import FedkdInputError, RunFailed

    text = " ".join(str(error).split()) or "(no message)"
    if isinstance(error, FedkdInputError | RunFailed):
        return text
    return f"{type(error).__name__}: {text}"


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``None`` for no values / a single value)."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else None


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate run rows into one row per strategy (strategies in first-seen order).

    Parameters
    ----------
    rows : sequence of dict
        ``compare.json`` run rows (:func:`run_row`, :func:`failed_row`).

    Returns
    -------
    list of dict
        Per strategy: ``strategy``, ``runs`` (finished), ``failed``, ``seeds`` (finished),
        and for each name in :data:`METRICS` the mean over finished runs (``<name>``) and
        the sample standard deviation over seeds (``<name>_std``, ``None`` with fewer than
        two values). Missing values (``None``, e.g. no local-only baseline) are skipped.

    """
    table: list[dict[str, Any]] = []
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        mine = [r for r in rows if r["strategy"] == strategy]
        ok = [r for r in mine if r["status"] == "ok"]
        entry: dict[str, Any] = {
            "strategy": strategy,
            "runs": len(ok),
            "failed": len(mine) - len(ok),
            "seeds": [r["seed"] for r in ok],
        }
        for name in METRICS:
            values = [float(r[name]) for r in ok if r.get(name) is not None]
            entry[name], entry[f"{name}_std"] = _mean_std(values)
        table.append(entry)
    return table


def _fmt(mean: float | None, std: float | None, scale: float, unit: str, digits: int) -> str:
    """``mean`` (``± std`` when given) times ``scale``, with ``digits`` decimals and ``unit``."""
    if mean is None:
        return "-"
    if std is None:
        return f"{mean * scale:.{digits}f}{unit}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}{unit}"


def _percent(mean: float | None, std: float | None) -> str:
    return _fmt(mean, std, 100.0, "%", 2)


def _bytes(mean: float | None, std: float | None) -> str:
    """Decimal units picked by the mean: B, kB, MB, GB (std in the same unit)."""
    scale, unit = 1.0, " B"
    for factor, name in ((1e9, " GB"), (1e6, " MB"), (1e3, " kB")):
        if mean is not None and mean >= factor:
            scale, unit = 1 / factor, name
            break
    return _fmt(mean, std, scale, unit, 0 if unit == " B" else 1)


def _seconds(mean: float | None, std: float | None) -> str:
    return _fmt(mean, std, 1.0, " s", 1)


_COLUMNS: tuple[tuple[str, str, Callable[[float | None, float | None], str]], ...] = (
    ("students mean", "student_accuracy_mean", _percent),
    ("p10", "student_accuracy_p10", _percent),
    ("local-only", "local_only_accuracy_mean", _percent),
    ("bytes up", "bytes_up", _bytes),
    ("bytes down", "bytes_down", _bytes),
    ("wall time", "wall_time_s", _seconds),
)


def markdown_table(table: Sequence[dict[str, Any]]) -> str:
    """The per-strategy table (from :func:`summarize`) as a markdown table.

    Accuracies in percent, bytes in decimal units (kB = 1e3, MB = 1e6, GB = 1e9), wall
    time in seconds; a strategy with several finished seeds shows ``mean ± std``; ``-``
    marks a missing value.

    """
    head = ["strategy", "runs", *(c[0] for c in _COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        runs = str(row["runs"]) + (f" ({row['failed']} failed)" if row["failed"] else "")
        cells = [fmt(row[key], row[f"{key}_std"]) for _, key, fmt in _COLUMNS]
        lines.append("| " + " | ".join([row["strategy"], runs, *cells]) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(config: str | None, seeds: Sequence[int], result: CompareResult) -> str:
    """``compare.md``: a title, the table and one line per failed run."""
    title = f"# fedkd compare: {config}" if config else "# fedkd compare"
    note = (
        f"Seeds {', '.join(map(str, seeds))}; with several seeds a cell is mean ± sample "
        "standard deviation over the finished seeds. Bytes: kB = 1e3, MB = 1e6."
    )
    parts = [title, "", note, "", result.markdown.rstrip("\n")]
    if result.failed:
        parts += ["", "Failed runs:", ""]
        parts += [f"- {r['strategy']} seed {r['seed']}: {r['error']}" for r in result.failed]
    return "\n".join(parts) + "\n"


def curves(rows: Sequence[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Mean student accuracy per round per strategy, averaged over the finished seeds.

    Rounds without an evaluation (``None``) are skipped; a round's mean is over the seeds
    that evaluated it.

    """
    out: dict[str, list[tuple[int, float]]] = {}
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        by_round: dict[int, list[float]] = {}
        for r in rows:
            if r["strategy"] != strategy or r["status"] != "ok":
                continue
            for point in r["accuracy_per_round"]:
                if point["student_accuracy_mean"] is not None:
                    by_round.setdefault(point["round"], []).append(point["student_accuracy_mean"])
        out[strategy] = [(k, statistics.fmean(v)) for k, v in sorted(by_round.items())]
    return out


# ---------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------


def _write_text_atomic(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def plot_compare(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """``compare.png``: one line per strategy, mean student accuracy per round (seed mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for strategy, points in curves(rows).items():
        if points:
            ax.plot([p[0] for p in points], [100 * p[1] for p in points], "o-", label=strategy)
    ax.set_xlabel("round")
    ax.set_ylabel("student test accuracy, mean over clients (%)")
    seeds = sorted({r["seed"] for r in rows if r["status"] == "ok"})
    ax.set_title(f"strategies compared (mean over seeds {', '.join(map(str, seeds)) or '-'})")
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def write_outputs(
    out: Path,
    config: str | None,
    strategies: Sequence[str],
    seeds: Sequence[int],
    result: CompareResult,
    complete: bool,
) -> None:
    """Rewrite ``compare.json``, ``compare.md`` and ``compare.png`` (each atomically)."""
    write_json(
        out / "compare.json",
        {
            "config": config,
            "strategies": list(strategies),
            "seeds": list(seeds),
            "complete": complete,
            "runs": result.runs,
            "table": result.table,
        },
    )
    _write_text_atomic(out / "compare.md", markdown_report(config, seeds, result))
    plot_compare(result.runs, out / "compare.png")


# ---------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------


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
