"""PNG plots of a run (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_accuracy(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    """Student accuracy mean / p10 / min per round, with teacher and local-only lines."""
    pts = [r for r in rows if r.get("student_accuracy_mean") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if pts:
        x = [r["round"] for r in pts]
        ax.plot(x, [100 * r["student_accuracy_mean"] for r in pts], "o-", label="students: mean")
        ax.plot(x, [100 * r["student_accuracy_p10"] for r in pts], "s--", label="students: p10")
        ax.plot(x, [100 * r["student_accuracy_min"] for r in pts], ":", label="students: min")
    teacher = summary["final"].get("teacher_accuracy")
    if teacher is not None:
        ax.axhline(100 * teacher, color="k", lw=1, label="teacher ensemble")
    local = summary["baselines"].get("local_only_accuracy_mean")
    if local is not None:
        ax.axhline(100 * local, color="r", lw=1, ls="--", label="local-only (mean)")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{summary['strategy']}: {summary['num_clients']} clients, seed {summary['seed']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_client_histogram(final: list[float], local: list[float], path: Path) -> None:
    """Histogram of per-client final test accuracy (and local-only when available)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = [i for i in range(0, 101, 2)]
    if local:
        ax.hist([100 * a for a in local], bins=bins, alpha=0.5, color="r", label="local-only")
    ax.hist([100 * a for a in final], bins=bins, alpha=0.7, label="distilled students")
    ax.set_xlabel("test accuracy (%)")
    ax.set_ylabel("clients")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_virtual_time(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    """Student accuracy (mean, p10) against cumulative virtual time (device simulation)."""
    pts = [
        r
        for r in rows
        if r.get("student_accuracy_mean") is not None and r.get("virtual_time_s") is not None
    ]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if pts:
        x = [r["virtual_time_s"] / 60 for r in pts]
        ax.plot(x, [100 * r["student_accuracy_mean"] for r in pts], "o-", label="students: mean")
        ax.plot(x, [100 * r["student_accuracy_p10"] for r in pts], "s--", label="students: p10")
    ax.set_xlabel("virtual time (minutes)")
    ax.set_ylabel("test accuracy (%)")
    policy = summary.get("devices", {}).get("policy", "")
    ax.set_title(f"{summary['strategy']}, round policy {policy}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_by_tier(by_tier: dict[str, dict[str, Any]], path: Path) -> None:
    """Per device tier: distilled students' mean and p10 accuracy against local-only."""
    names = list(by_tier)
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(names) + 2), 4))
    width = 0.27
    for j, (key, label) in enumerate(
        [
            ("accuracy_mean", "distilled: mean"),
            ("accuracy_p10", "distilled: p10"),
            ("local_only_accuracy_mean", "local-only: mean"),
        ]
    ):
        vals = [100 * (by_tier[n].get(key) or 0.0) for n in names]
        ax.bar([i + (j - 1) * width for i in range(len(names))], vals, width, label=label)
    ax.set_xticks(
        range(len(names)),
        [f"{n}\n{by_tier[n]['student']}\n{by_tier[n]['clients']} clients" for n in names],
        fontsize=8,
    )
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
