"""The node's random seeds: one seed per ``(run seed, partition, round, tag)``.

Tags: 0 a round's training batches, 1 the local-only baseline, 2 a fresh student's
initial weights, 5 the hint adapter's initial weights.
"""

from __future__ import annotations

import numpy as np
import torch


def seed_of(*parts: int) -> int:
    """A 32-bit seed derived from ``parts`` (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def round_generator(seed: int, partition_id: int, server_round: int, tag: int) -> torch.Generator:
    """A torch generator for stream ``tag`` of node ``partition_id`` in ``server_round``."""
    return torch.Generator().manual_seed(seed_of(seed, partition_id, server_round, tag))
