"""Rerun the README's quickstart as a fresh clone would and render its block in README.md.

Runs ``fedkd run simulations/quickstart.toml --out runs/quickstart`` in a subprocess with an
empty ``FEDKD_CACHE`` (MNIST-1D generated and teachers trained from scratch, as on a fresh
clone), keeps what it printed in ``docs/results/quickstart_output.txt`` and its summary
figures in ``docs/results/quickstart.json``, and writes the printed table between the
README's ``quickstart:begin`` / ``quickstart:end`` markers. ``tests/test_readme.py`` checks
that the README block, the kept output and the JSON agree. Usage::

    python simulations/readme_quickstart.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OUTPUT = ROOT / "docs" / "results" / "quickstart_output.txt"
FIGURES = ROOT / "docs" / "results" / "quickstart.json"
BEGIN, END = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"
COMMAND = "fedkd run simulations/quickstart.toml --out runs/quickstart"


def figures(summary: dict) -> dict:
    """The summary figures the README block shows."""
    final = summary["final"]
    return {
        "student_accuracy_mean": final["student_accuracy_mean"],
        "student_accuracy_p10": final["student_accuracy_p10"],
        "student_accuracy_min": final["student_accuracy_min"],
        "teacher_accuracy": final["teacher_accuracy"],
        "teacher_accuracies": final["teacher_accuracies"],
        "local_only_accuracy_mean": summary["baselines"]["local_only_accuracy_mean"],
        "bytes_down": summary["communication"]["bytes_down"],
        "bytes_up": summary["communication"]["bytes_up"],
        "rejected_replies": summary["rejected_replies"],
        "wall_time_s": summary["wall_time_s"],
    }


def table_lines(output: str) -> list[str]:
    """The printed summary table: its title line and the box (progress bars dropped)."""
    lines = output.splitlines()
    start = next(i for i, ln in enumerate(lines) if "fedkd " in ln and " - runs/" in ln)
    end = max(i for i, ln in enumerate(lines) if ln.startswith("└"))
    return [ln.rstrip() for ln in lines[start : end + 1]]


def block(output: str) -> str:
    """The README block: the command and the table it printed."""
    return "\n".join(["```", f"$ {COMMAND}", *table_lines(output), "```"])


def render(readme: str, output: str) -> str:
    """``readme`` with the block between the markers replaced."""
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{block(output)}\n{END}{tail}"


def main() -> None:
    cache = tempfile.mkdtemp(prefix="fedkd-readme-cache-")
    out = ROOT / "runs" / "quickstart"
    env = {**os.environ, "FEDKD_CACHE": cache, "COLUMNS": "80", "TERM": "dumb"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fedkd", *COMMAND.split()[1:], "--overwrite"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # the table and progress go to the terminal's stderr
            text=True,
            check=True,
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    OUTPUT.write_text(proc.stdout)
    FIGURES.write_text(
        json.dumps(
            {
                **figures(summary),
                "measured": time.strftime("%Y-%m-%d"),
                "command_wall_s": wall,
                "cache": "empty (data generated, teachers trained)",
            },
            indent=2,
        )
        + "\n"
    )
    README.write_text(render(README.read_text(), proc.stdout))
    print(f"quickstart: {100 * summary['final']['student_accuracy_mean']:.2f}% in {wall:.0f} s")


if __name__ == "__main__":
    main()
