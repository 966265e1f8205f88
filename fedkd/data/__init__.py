"""Datasets (offline only), disjoint splits, a separate proxy set and client partitioners.

* ``mnist1d`` (:mod:`fedkd.data.mnist1d`): generated offline, cached.
* ``npz:PATH`` (:mod:`fedkd.data.npz`): a user's file; images in any layout
  (:mod:`fedkd.data.images`).
* ``hf:NAME`` / ``hf:/PATH`` (:mod:`fedkd.data.hub`): a Hugging Face dataset from the
  local cache, or a local copy (``save_to_disk``, parquet, image folder).

Splits (teacher-train / proxy / client pool / test, :mod:`fedkd.data.splits`) are disjoint
and seeded; ``data.proxy`` takes the proxy rows from another dataset
(:mod:`fedkd.data.proxy`). The client pool is partitioned with flwr-datasets partitioners
(:mod:`fedkd.data.partitions`). See docs/data.md.
"""

from fedkd.data import hub, mnist1d  # noqa: F401 - register their loaders
from fedkd.data.dataset import (
    CACHE_LOCK,
    DATASET_REGISTRY,
    MAX_CLASSES,
    Dataset,
    DatasetLoader,
    atomic_save_npz,
    cache_dir,
    register_dataset,
    validate_dataset,
    validate_x,
)
from fedkd.data.hub import load_hf, load_hf_samples
from fedkd.data.images import LAYOUTS, channel_stats, standardize_images, to_channels_first
from fedkd.data.mnist1d import load_mnist1d
from fedkd.data.npz import MAX_NPZ_BYTES, load_npz, load_npz_samples, npz_headers
from fedkd.data.partitions import (
    _client_partitions,
    client_partitions,
    data_holders,
    partition_clients,
)
from fedkd.data.proxy import append_proxy, load_proxy_samples
from fedkd.data.splits import Splits, _load_dataset, _make_splits, load_dataset, make_splits

__all__ = [
    "CACHE_LOCK",
    "DATASET_REGISTRY",
    "LAYOUTS",
    "MAX_CLASSES",
    "MAX_NPZ_BYTES",
    "Dataset",
    "DatasetLoader",
    "Splits",
    "_client_partitions",
    "_load_dataset",
    "_make_splits",
    "append_proxy",
    "atomic_save_npz",
    "cache_dir",
    "channel_stats",
    "client_partitions",
    "data_holders",
    "load_dataset",
    "load_hf",
    "load_hf_samples",
    "load_mnist1d",
    "load_npz",
    "load_npz_samples",
    "load_proxy_samples",
    "make_splits",
    "npz_headers",
    "partition_clients",
    "register_dataset",
    "standardize_images",
    "to_channels_first",
    "validate_dataset",
    "validate_x",
]
