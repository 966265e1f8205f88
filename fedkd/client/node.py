"""Who a node is (its client id) and what every handler sets up first."""

from __future__ import annotations

import torch
from flwr.app import Context

from fedkd import keys
from fedkd.client.private_data import private_data
from fedkd.client.public_data import PublicData, public_data
from fedkd.client.run_config import config_from_run_config
from fedkd.config import FedkdConfig


def partition_id(context: Context, cfg: FedkdConfig) -> int:
    """The node's client id: ``partition-id`` from its node config.

    A device with its own ``data-path`` may omit it; its node id then serves as client id.

    Raises
    ------
    ValueError
        When the node config has neither key, or the id is outside ``0..num_clients-1``.

    """
    if context.node_config.get(keys.NODE_DATA_PATH):
        raw = context.node_config.get(keys.NODE_PARTITION_ID, context.node_id % 2**31)
        return int(raw)  # type: ignore[arg-type]
    if keys.NODE_PARTITION_ID not in context.node_config:
        raise ValueError(
            "node config has neither 'partition-id' nor 'data-path'; start the SuperNode "
            "with --node-config 'partition-id=I num-partitions=N' or 'data-path=\"FILE.npz\"'"
        )
    pid = int(context.node_config[keys.NODE_PARTITION_ID])  # type: ignore[arg-type]
    if not 0 <= pid < cfg.num_clients:
        raise ValueError(f"partition-id {pid} outside 0..{cfg.num_clients - 1}")
    return pid


def setup_node(context: Context) -> tuple[FedkdConfig, PublicData, int]:
    """The run's config, its public data and the node's client id; sets torch's threads."""
    cfg = config_from_run_config(dict(context.run_config))
    torch.set_num_threads(cfg.threads)
    return cfg, public_data(cfg), partition_id(context, cfg)


def private_size(context: Context) -> int:
    """Private data size of a node (0 when its config is broken: its job will say why)."""
    try:
        cfg = config_from_run_config(dict(context.run_config))
        return len(private_data(cfg, context, partition_id(context, cfg))[1])
    except Exception:  # noqa: BLE001 - the error surfaces when the job is prepared
        return 0
