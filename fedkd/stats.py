"""Small summary statistics of metric lists (round rows, the run summary)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def percentile(values: Iterable[float], q: float) -> float | None:
    """``np.percentile`` (linear) of ``values``, ``None`` when empty."""
    arr = np.asarray(list(values), dtype=float)
    return float(np.percentile(arr, q)) if arr.size else None
