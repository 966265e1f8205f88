"""The :class:`Dataset` record, the dataset registry, the cache and the common checks.

Every loaded dataset passes :func:`validate_dataset`.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedkd.errors import DataError
from fedkd.registry import Registry

if TYPE_CHECKING:
    from fedkd.config import DataConfig


@dataclass(frozen=True)
class Dataset:
    """Samples ``x`` and integer labels ``y`` of one dataset.

    ``x`` is float32 of shape (N, features), (N, channels, length) or, for images,
    (N, C, H, W); images may also be uint8 (kept compact: converted to standardised
    float32 only when a split or batch is taken, see :meth:`fedkd.data.Splits.x`).
    """

    x: np.ndarray
    y: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Other per-sample arrays of a user's npz (cross-modal views, ``array:NAME``)."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """``max(y) + 1``."""
        return int(self.y.max()) + 1

    @property
    def is_image(self) -> bool:
        """Samples of shape (C, H, W)."""
        return self.x.ndim == 4


DatasetLoader = Callable[[str, "DataConfig", int], Dataset]
DATASET_REGISTRY: Registry[DatasetLoader] = Registry("dataset")
register_dataset = DATASET_REGISTRY.register
"""Register a dataset loader ``fn(arg, data_config, seed) -> Dataset`` under ``name``.

``data.name = "name"`` or ``"name:arg"`` selects it; ``arg`` is the text after the colon.
"""

MAX_CLASSES = 10_000
"""Labels must lie in ``0..MAX_CLASSES-1`` (one-hot and per-class counts are that wide)."""

CACHE_LOCK = threading.RLock()
"""Guards the in-process caches of datasets, splits and partitions."""


def cache_dir() -> Path:
    """``$FEDKD_CACHE`` or ``~/.cache/fedkd`` (created)."""
    path = Path(os.environ.get("FEDKD_CACHE", Path.home() / ".cache" / "fedkd"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` (a temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def real_numbers(a: np.ndarray) -> bool:
    """Whether ``a`` holds integers or floats."""
    return a.dtype.kind in "iuf"


def validate_x(x: np.ndarray, where: str) -> np.ndarray:
    """Check samples ``x``; return them as float32, or uint8 images unchanged.

    Raises
    ------
    DataError
        One line naming ``where``, what is wrong and what is allowed.

    """
    x = np.asarray(x)
    if x.ndim not in (2, 3, 4) or 0 in x.shape[1:]:
        raise DataError(
            f"{where}: x has shape {x.shape}; allowed: (N, features), (N, channels, length) "
            "or images (N, C, H, W), no axis of length 0"
        )
    if len(x) < 2:
        raise DataError(f"{where}: x has {len(x)} samples; need at least 2")
    if x.ndim == 4 and x.dtype == np.uint8:
        return x
    if x.dtype != np.float32 or not np.all(np.isfinite(x)):
        with np.errstate(over="ignore"):
            if not real_numbers(x) or not np.all(np.isfinite(x.astype(np.float32))):
                raise DataError(
                    f"{where}: x holds NaN, infinite or non-numeric values (or values beyond "
                    "float32's range); features must be finite numbers"
                )
            x = x.astype(np.float32)
    return x


def validate_dataset(ds: Dataset, where: str) -> Dataset:
    """Check what every dataset must be; return it with ``y`` as int64.

    ``x`` of shape (N, features), (N, channels, length) or (N, C, H, W) with no empty
    axis and finite float32 values (uint8 allowed for images); ``y`` of shape (N,),
    integers in ``0..MAX_CLASSES-1`` with at least two classes present.

    Raises
    ------
    DataError
        One line naming ``where`` (e.g. ``data.name=npz:PATH``), what is wrong and what
        is allowed.

    """
    x, y = validate_x(ds.x, where), np.asarray(ds.y)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{where}: y has shape {y.shape} but x has {len(x)} samples; need y of shape (N,)"
        )
    if y.dtype.kind not in "iu":
        raise DataError(
            f"{where}: y has dtype {y.dtype}; labels must be integers in 0..{MAX_CLASSES - 1}"
        )
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= MAX_CLASSES:
        bad = lo if lo < 0 else hi
        raise DataError(
            f"{where}: label {bad} out of range; labels must be in 0..{MAX_CLASSES - 1} "
            f"(at most {MAX_CLASSES:,} classes)"
        )
    if len(np.unique(y)) < 2:
        raise DataError(f"{where}: every label is {lo}; classification needs at least 2 classes")
    return Dataset(x, y.astype(np.int64, copy=False), ds.extras)


def resolve_size(name: str, s: float, n: int) -> int:
    """A split size: a fraction (< 1) of ``n`` rows or a whole count."""
    if isinstance(s, float) and s < 1:
        return int(round(s * n))
    if float(s).is_integer():
        return int(s)
    raise DataError(f"data.{name}={s}: use a fraction in (0, 1) or a whole count")
