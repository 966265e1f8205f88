"""The comparison as data: run rows, the per-strategy table, markdown, curves (pure)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedkd.results import RunResult

METRICS: tuple[str, ...] = (
    "student_accuracy_mean",
    "student_accuracy_p10",
    "local_only_accuracy_mean",
    "bytes_up",
    "bytes_down",
    "wall_time_s",
)
"""Per-run figures aggregated over seeds in the table (mean, and std with several seeds)."""


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
