"""One round's plan: who trains, on which rows, and what the round has gathered so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

_NO_ROWS = np.zeros(0, np.int64)


@dataclass
class RoundPlan:
    """Per-round state, created by ``configure_train`` and used until the round's row.

    The plan is decided in ``configure_train`` (rows, partitions, instruction config);
    the device simulation, ``aggregate_train`` and the evaluate hooks fill in what the
    round gathered; the round's metrics row reads it.

    Attributes
    ----------
    server_round : int
        The round (0: no round planned yet).
    proxy_idx : np.ndarray
        The proxy rows sampled this round (``proxy_subset``).
    target_idx : np.ndarray
        The rows soft targets are sent on (after the PATE filter).
    reply_idx : np.ndarray
        The rows clients reply with logits on (``reply_rows``).
    partitions : list of int
        The clients sampled to train.
    config : Any
        The train instruction's config record.
    keep : int or None
        Device tiers: how many replies the round policy may keep (``None``: all).
    devices : dict
        Device-simulation columns of the round's row (``available``, ``kept``, ...).
    train_metrics : list of dict
        Numeric metrics of each valid train reply.
    evaluated : list of int
        Partitions whose test accuracy this round measured (after training or evaluate).
    snr : float or None
        client_dp: signal-to-noise ratio of the round's released consensus.

    """

    server_round: int = 0
    proxy_idx: np.ndarray = field(default_factory=lambda: _NO_ROWS)
    target_idx: np.ndarray = field(default_factory=lambda: _NO_ROWS)
    reply_idx: np.ndarray = field(default_factory=lambda: _NO_ROWS)
    partitions: list[int] = field(default_factory=list)
    config: Any = None
    keep: int | None = None
    devices: dict[str, Any] = field(default_factory=dict)
    train_metrics: list[dict[str, float]] = field(default_factory=list)
    evaluated: list[int] = field(default_factory=list)
    snr: float | None = None
