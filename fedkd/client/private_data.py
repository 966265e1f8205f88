"""The node's private data: its simulated partition or its device's own ``.npz`` file."""

from __future__ import annotations

import functools

import torch
from flwr.app import Context

from fedkd import keys
from fedkd.config import DataConfig, FedkdConfig
from fedkd.data import client_partitions, load_npz, make_splits
from fedkd.views import student_x, view_samples


def private_data(
    cfg: FedkdConfig, context: Context, partition_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The node's private data: its own ``data-path`` file, or its simulated partition.

    Returns
    -------
    tuple of torch.Tensor
        ``(x, y)`` in the students' view.

    """
    path = context.node_config.get(keys.NODE_DATA_PATH)
    if path:
        return device_file(cfg.data, cfg.seed, str(path))
    idx = client_partitions(cfg.data, cfg.partition, cfg.num_clients, cfg.seed)[partition_id]
    splits = make_splits(cfg.data, cfg.seed)
    x = student_x(cfg.data, splits, idx, cfg.seed)
    return torch.from_numpy(x), torch.from_numpy(splits.data.y[idx])


@functools.lru_cache(maxsize=4)
def device_file(data: DataConfig, seed: int, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A device's own ``.npz`` (``x``, ``y``), checked against the federation's data.

    Raises
    ------
    ValueError
        When the samples' shape or the labels do not fit the federation's data.

    """
    ds = load_npz(path, data, seed)
    splits = make_splits(data, seed)
    if ds.input_shape != splits.data.input_shape:
        raise ValueError(
            f"data-path {path}: samples have shape {ds.input_shape}, the federation uses "
            f"{splits.data.input_shape}"
        )
    if ds.num_classes > splits.data.num_classes:
        raise ValueError(
            f"data-path {path}: label {ds.num_classes - 1} outside the federation's "
            f"{splits.data.num_classes} classes"
        )
    # the device's sensor gives the students' view
    x = view_samples(data.student_view, splits.normalize(ds.x), seed)
    return torch.from_numpy(x), torch.from_numpy(ds.y)
