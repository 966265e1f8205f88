"""The metrics row of one round (a line of ``metrics.jsonl``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fedkd.strategies.round_plan import RoundPlan

from fedkd import keys
from fedkd.stats import percentile


def mean_metric(train_metrics: list[dict[str, float]], key: str) -> float | None:
    """Mean of a train metric over the replies that report it finite (None: none do)."""
    vals = [t[key] for t in train_metrics if key in t and np.isfinite(t[key])]
    return float(np.mean(vals)) if vals else None


def round_row(
    plan: RoundPlan,
    *,
    server_round: int,
    sampled: int,
    ok: int,
    rejections: list[dict[str, Any]],
    accuracies: list[float],
    bytes_down: int,
    bytes_up: int,
    round_time_s: float,
    wall_time_s: float,
    epsilon: float | None,
) -> dict[str, Any]:
    """The row: counts, accuracy percentiles, mean losses, bytes, times, privacy, devices.

    ``accuracies`` are the latest test accuracies of the clients the round evaluated;
    ``virtual_time_s`` is ``None`` unless the device simulation's columns set it.
    """
    accs = accuracies
    tm = plan.train_metrics
    return {
        "round": server_round,
        "sampled": sampled,
        "replies_ok": ok,
        "rejected": len(rejections),
        "rejections": rejections,
        "evaluated": len(accs),
        "student_accuracy_mean": float(np.mean(accs)) if accs else None,
        "student_accuracy_p10": percentile(accs, 10),
        "student_accuracy_min": float(np.min(accs)) if accs else None,
        "student_accuracy_max": float(np.max(accs)) if accs else None,
        "train_loss": mean_metric(tm, keys.TRAIN_LOSS),
        "distill_loss": mean_metric(tm, keys.DISTILL_LOSS),
        "ce_loss": mean_metric(tm, keys.CE_LOSS),
        "bytes_down": bytes_down,
        "bytes_up": bytes_up,
        "round_time_s": round_time_s,
        "wall_time_s": wall_time_s,
        "virtual_time_s": None,
        "epsilon": epsilon,
        "privacy_snr": plan.snr,
        **plan.devices,
    }
