"""``compare.json``, ``compare.md`` and ``compare.png``, each rewritten atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedkd.compare.table import CompareResult, curves, markdown_report
from fedkd.results import atomic_write_bytes, write_json


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
