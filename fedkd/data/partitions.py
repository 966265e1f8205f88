"""Client partitions of the client pool (flwr-datasets partitioners), cached on disk.

Every client keeps at least ``partition.min_size`` samples (see :func:`partition_clients`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np

from fedkd.data.dataset import CACHE_LOCK, atomic_save_npz, cache_dir
from fedkd.data.splits import make_splits
from fedkd.errors import DataError
from fedkd.seeds import rng

if TYPE_CHECKING:
    from fedkd.config import DataConfig, PartitionConfig

log = logging.getLogger("fedkd")


def _flwr_partitions(
    labels: np.ndarray, num_clients: int, cfg: PartitionConfig, seed: int, min_partition_size: int
) -> list[np.ndarray]:
    from datasets import Dataset as HFDataset
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    if cfg.kind == "iid":
        part = IidPartitioner(num_partitions=num_clients)
    elif cfg.kind == "dirichlet":
        part = DirichletPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            alpha=cfg.alpha,
            min_partition_size=min_partition_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    else:
        part = PathologicalPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            num_classes_per_partition=cfg.classes_per_client,
            class_assignment_mode="random",
            shuffle=True,
            seed=seed,
        )
    part.dataset = HFDataset.from_dict({"label": labels.tolist(), "row": list(range(len(labels)))})
    return [np.asarray(part.load_partition(i)["row"], dtype=np.int64) for i in range(num_clients)]


def _ensure_min_size(parts: list[np.ndarray], min_size: int, seed: int) -> list[np.ndarray]:
    """Move random samples from the largest clients to clients below ``min_size``."""
    draw = rng(seed, "data.min_size")
    parts = [p.copy() for p in parts]
    for i in range(len(parts)):
        while len(parts[i]) < min_size:
            donor = int(np.argmax([len(p) for p in parts]))
            if len(parts[donor]) <= min_size:
                raise DataError("client pool too small for partition.min_size")
            take = draw.integers(len(parts[donor]))
            parts[i] = np.append(parts[i], parts[donor][take])
            parts[donor] = np.delete(parts[donor], take)
    return parts


def data_holders(pool: int, num_clients: int, min_size: int) -> int:
    """How many clients a pool of ``pool`` samples gives private data (see partition_clients)."""
    if pool >= num_clients * max(min_size, 1):
        return num_clients
    return max(1, pool // max(min_size, 2))


def partition_clients(
    labels: np.ndarray, num_clients: int, cfg: PartitionConfig, seed: int
) -> list[np.ndarray]:
    """Split positions ``0..len(labels)-1`` among ``num_clients`` clients.

    Uses flwr-datasets (``IidPartitioner``, ``DirichletPartitioner``,
    ``PathologicalPartitioner``). Dirichlet partitioning at small alpha often cannot
    give every client ``min_size`` samples within its retry budget; fedkd then partitions
    with no minimum and moves single random samples from the largest clients to the
    clients below ``cfg.min_size``. The result is a partition: disjoint, covering, seeded.

    When the pool cannot give every client ``min_size`` samples (e.g. 10,000 clients on a
    4,000-sample pool), only ``len(labels) // max(min_size, 2)`` seeded-random clients get
    private data (at least ``min_size`` each) and the others none, with a warning: clients
    without private data learn from soft targets only.
    """
    active = data_holders(len(labels), num_clients, cfg.min_size)
    if active < num_clients:
        log.warning(
            "client pool has %d samples for %d clients: %d clients get private data "
            "(>= partition.min_size = %d each), the other %d learn from soft targets only "
            "(raise data.client_pool_size for more)",
            len(labels),
            num_clients,
            active,
            cfg.min_size,
            num_clients - active,
        )
        owners = np.sort(rng(seed, "data.owners").choice(num_clients, active, replace=False))
        out = [np.zeros(0, np.int64) for _ in range(num_clients)]
        for part, owner in zip(partition_clients(labels, active, cfg, seed), owners, strict=True):
            out[int(owner)] = part
        return out
    if cfg.kind == "classes" and cfg.classes_per_client > int(labels.max()) + 1:
        raise DataError(
            f"partition.classes_per_client={cfg.classes_per_client} exceeds the "
            f"{int(labels.max()) + 1} classes of the dataset"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Dirichlet retry warnings are handled here
        try:
            parts = _flwr_partitions(labels, num_clients, cfg, seed, cfg.min_size)
        except ValueError:
            parts = _flwr_partitions(labels, num_clients, cfg, seed, 0)
    return _ensure_min_size(parts, cfg.min_size, seed)


_PARTITION_FORMAT = 2
"""Version of cached partitions; 2: the data owners of a small pool have their own stream
(``data.owners``; it shared tag 3 with the strategy's train sampling before)."""


def _partition_cache_key(data: DataConfig, part: PartitionConfig, n: int, seed: int) -> str:
    blob = json.dumps(
        [data.model_dump(), part.model_dump(), n, seed, _PARTITION_FORMAT], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def client_partitions(
    data: DataConfig, part: PartitionConfig, num_clients: int, seed: int
) -> tuple[np.ndarray, ...]:
    """Dataset indices of every client's private data (cached in process and on disk)."""
    with CACHE_LOCK:
        return _client_partitions(data, part, num_clients, seed)


@functools.lru_cache(maxsize=4)
def _client_partitions(
    data: DataConfig, part: PartitionConfig, num_clients: int, seed: int
) -> tuple[np.ndarray, ...]:
    splits = make_splits(data, seed)
    path = cache_dir() / "partitions" / f"{_partition_cache_key(data, part, num_clients, seed)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            flat, offsets = f["flat"], f["offsets"]
    else:
        pos = partition_clients(splits.data.y[splits.clients], num_clients, part, seed)
        flat = np.concatenate(pos)
        offsets = np.cumsum([0] + [len(p) for p in pos])
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(path, flat=flat, offsets=offsets)
    return tuple(splits.clients[flat[offsets[i] : offsets[i + 1]]] for i in range(num_clients))
