"""A separate public proxy dataset (``data.proxy``): unlabeled rows from another source.

Its samples are loaded without their labels (an npz needs only ``x``; a Hugging Face
dataset's label column is never touched; a registered loader's labels are dropped),
``data.proxy_size`` rows are drawn seeded (a fraction of the proxy dataset or a count),
and they are appended after the main dataset's rows with label -1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedkd.data.dataset import DATASET_REGISTRY, Dataset, resolve_size, validate_x
from fedkd.errors import DataError
from fedkd.seeds import rng

if TYPE_CHECKING:
    from fedkd.config import DataConfig


def load_proxy_samples(cfg: DataConfig, seed: int) -> np.ndarray:
    """The samples of dataset ``cfg.proxy`` (labels never read), fedkd's layout.

    Raises
    ------
    DataError
        When the proxy dataset cannot be loaded or is not a valid sample array.

    """
    name = str(cfg.proxy)
    where = f"data.proxy={name}"
    base, _, arg = name.partition(":")
    if base == "npz":
        from fedkd.data.npz import load_npz_samples

        return load_npz_samples(arg, cfg, where)
    if base == "hf":
        from fedkd.data.hub import load_hf_samples

        return load_hf_samples(arg, cfg, where)
    if base not in DATASET_REGISTRY:
        raise DataError(f"{where}: unknown dataset; allowed: {DATASET_REGISTRY.allowed()}")
    ds = DATASET_REGISTRY[base](arg, cfg.model_copy(update={"name": name}), seed)
    return validate_x(ds.x, where)


def append_proxy(ds: Dataset, cfg: DataConfig, seed: int) -> tuple[Dataset, np.ndarray]:
    """``ds`` with the proxy rows appended (label -1) and the proxy rows' indices.

    Raises
    ------
    DataError
        When the proxy samples' shape differs from the main dataset's, or
        ``data.proxy_size`` asks for more rows than the proxy dataset has.

    """
    where = f"data.proxy={cfg.proxy}"
    px = load_proxy_samples(cfg, seed)
    if px.shape[1:] != ds.x.shape[1:]:
        raise DataError(
            f"{where}: samples have shape {tuple(px.shape[1:])}, the main dataset "
            f"{cfg.name} has {tuple(ds.x.shape[1:])}; they must be equal"
        )
    count = resolve_size("proxy_size", cfg.proxy_size, len(px))
    if not 1 <= count <= len(px):
        raise DataError(
            f"{where}: data.proxy_size={cfg.proxy_size} gives {count} rows; the proxy "
            f"dataset has {len(px)} (use a fraction in (0, 1) or a count 1..{len(px)})"
        )
    rows = np.sort(rng(seed, "data.proxy_rows").permutation(len(px))[:count])
    both_u8 = ds.x.dtype == np.uint8 and px.dtype == np.uint8
    dtype = np.uint8 if both_u8 else np.float32
    x = np.concatenate([ds.x.astype(dtype, copy=False), px[rows].astype(dtype, copy=False)])
    y = np.concatenate([ds.y, np.full(count, -1, np.int64)])
    idx = np.arange(len(ds.y), len(ds.y) + count)
    return Dataset(x, y), idx
