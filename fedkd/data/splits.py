"""Loading the configured dataset and cutting it into seeded, disjoint splits.

Splits: teacher-train / proxy / client pool / test. With ``data.proxy`` the proxy rows
come from another dataset (see :mod:`fedkd.data.proxy`) and are appended after the main
dataset's rows; the main dataset then gives teacher / client / test only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedkd.data.dataset import (
    CACHE_LOCK,
    DATASET_REGISTRY,
    Dataset,
    resolve_size,
    validate_dataset,
)
from fedkd.data.images import channel_stats, standardize_images
from fedkd.data.proxy import append_proxy
from fedkd.errors import DataError
from fedkd.seeds import rng

if TYPE_CHECKING:
    from fedkd.config import DataConfig


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Load the dataset ``cfg.name`` (cached in process, thread-safe)."""
    with CACHE_LOCK:
        return _load_dataset(cfg, seed)


@functools.lru_cache(maxsize=4)
def _load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    base, _, arg = cfg.name.partition(":")
    return validate_dataset(DATASET_REGISTRY[base](arg, cfg, seed), f"data.name={cfg.name}")


@dataclass(frozen=True)
class Splits:
    """Disjoint index arrays into the dataset, plus the stored data and its standardisation.

    ``data.x`` holds the samples as stored: standardised float32, or uint8 images as
    loaded (``raw``). Take samples through :meth:`x` (or :meth:`xy`), which always gives
    standardised float32. ``norm_mean`` / ``norm_std`` are floats for 1-D data and
    per-channel arrays (C,) for images. ``proxy_source`` names a separate proxy dataset
    (``data.proxy``): its rows' labels in ``data.y`` are -1 and never meaningful.
    """

    data: Dataset
    teacher: np.ndarray
    proxy: np.ndarray
    clients: np.ndarray
    test: np.ndarray
    norm_mean: float | np.ndarray = 0.0
    norm_std: float | np.ndarray = 1.0
    raw: bool = False
    proxy_source: str = ""

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Apply the splits' standardisation to other data (a device's own file)."""
        if x.ndim == 4:
            return standardize_images(
                x,
                np.broadcast_to(self.norm_mean, x.shape[1:2]),
                np.broadcast_to(self.norm_std, x.shape[1:2]),
            )
        return ((x - self.norm_mean) / self.norm_std).astype(np.float32)

    def x(self, rows: np.ndarray) -> np.ndarray:
        """Standardised float32 samples ``rows`` of the dataset."""
        if self.raw:
            return self.normalize(self.data.x[rows])
        return self.data.x[rows]

    def xy(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of split ``part``."""
        idx = getattr(self, part)
        return self.x(idx), self.data.y[idx]


_SIZE_NAMES = ["teacher_size", "proxy_size", "client_pool_size", "test_size"]


def _resolve_sizes(cfg: DataConfig, n: int, names: list[str]) -> list[int]:
    sizes = [resolve_size(name, getattr(cfg, name), n) for name in names]
    if sum(sizes) > n:
        raise DataError(
            f"data splits need {sum(sizes)} samples ({dict(zip(names, sizes, strict=True))}) "
            f"but the dataset has {n}; lower the sizes"
        )
    for name, s in zip(names, sizes, strict=True):
        if s < 1:
            raise DataError(f"data.{name} gives an empty split for {n} samples")
    return sizes


def make_splits(cfg: DataConfig, seed: int) -> Splits:
    """Seeded disjoint teacher / proxy / client-pool / test splits of the dataset.

    With ``cfg.normalize``, features are standardised with the teacher split's statistics
    (a server-side fact, shared with clients as part of the public recipe): one mean and
    std for 1-D data, one per channel for images.
    """
    with CACHE_LOCK:
        return _make_splits(cfg, seed)


def _standardise(ds: Dataset, teacher: np.ndarray, on: bool) -> tuple[Dataset, object, object]:
    """The stored dataset and its (mean, std): uint8 images stay raw."""
    if ds.is_image:
        c = ds.x.shape[1]
        mean, std = channel_stats(ds.x, teacher) if on else (np.zeros(c), np.ones(c))
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        if ds.x.dtype == np.uint8:
            return ds, mean, std
        return Dataset(standardize_images(ds.x, mean, std), ds.y, ds.extras), mean, std
    mean, std = 0.0, 1.0
    if on:
        ref = ds.x[teacher]
        mean, std = float(ref.mean()), float(ref.std() + 1e-8)
    x = ((ds.x - mean) / std).astype(np.float32)
    extras = {
        k: ((a - a[teacher].mean()) / (a[teacher].std() + 1e-8)).astype(np.float32) if on else a
        for k, a in ds.extras.items()
    }
    return Dataset(x, ds.y, extras), mean, std


@functools.lru_cache(maxsize=4)
def _make_splits(cfg: DataConfig, seed: int) -> Splits:
    ds = load_dataset(cfg, seed)
    source = str(getattr(cfg, "proxy", "") or "")
    perm = rng(seed, "data.split").permutation(len(ds.y))
    if source:
        names = [n for n in _SIZE_NAMES if n != "proxy_size"]
        teacher, clients, test = _cut(perm, _resolve_sizes(cfg, len(ds.y), names))
        ds, proxy = append_proxy(ds, cfg, seed)
    else:
        teacher, proxy, clients, test = _cut(perm, _resolve_sizes(cfg, len(ds.y), _SIZE_NAMES))
    stored, mean, std = _standardise(ds, teacher, cfg.normalize)
    raw = stored.x.dtype == np.uint8
    return Splits(stored, teacher, proxy, clients, test, mean, std, raw, source)  # type: ignore[arg-type]


def _cut(perm: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    cuts = np.cumsum(sizes)
    return [perm[a:b] for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]
