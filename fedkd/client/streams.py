"""The node's random generators, from its named streams (:data:`fedkd.seeds.NODE_STREAMS`)."""

from __future__ import annotations

import torch

from fedkd import seeds


def round_generator(seed: int, partition_id: int, index: int, stream: str) -> torch.Generator:
    """A torch generator on the node stream ``stream`` of ``partition_id`` at ``index``."""
    return torch.Generator().manual_seed(seeds.node_seed(seed, stream, partition_id, index))
