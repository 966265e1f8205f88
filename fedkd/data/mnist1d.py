"""``mnist1d``: generated offline, cached as ``$FEDKD_CACHE/mnist1d-<samples>-<seed>.npz``.

``mnist1d.data.make_dataset`` is called, never the downloading helper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedkd.data.dataset import Dataset, atomic_save_npz, cache_dir, register_dataset

if TYPE_CHECKING:
    from fedkd.config import DataConfig


@register_dataset("mnist1d")
def load_mnist1d(_arg: str, cfg: DataConfig, seed: int) -> Dataset:
    """MNIST-1D generated offline (``make_dataset``), train and test pooled, cached."""
    path = cache_dir() / f"mnist1d-{cfg.num_samples}-{seed}.npz"
    if not path.is_file():
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = cfg.num_samples
        args.seed = seed
        ds = make_dataset(args)
        x = np.concatenate([ds["x"], ds["x_test"]]).astype(np.float32)
        y = np.concatenate([ds["y"], ds["y_test"]]).astype(np.int64)
        atomic_save_npz(path, x=x, y=y)
    with np.load(path, allow_pickle=False) as f:
        return Dataset(f["x"], f["y"])
