"""What an instruction carries: encoded soft targets, row indices, DP parameters, warm start."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedkd import keys
from fedkd.compression import encode, encode_rows
from fedkd.config import CompressionConfig
from fedkd.privacy.accounting import PrivacyPlan


def target_arrays(
    target_idx: np.ndarray,
    targets: np.ndarray,
    reply_idx: np.ndarray,
    *,
    knowledge: np.ndarray | None,
    compression: CompressionConfig,
    temperature: float,
) -> dict[str, Array]:
    """The ``keys.TARGETS`` arrays: soft targets, their rows, knowledge, the reply rows.

    Targets are encoded as ``compression.soft_labels`` says; ``knowledge[target_idx]``
    (teacher features or maps) travels as ``compression.features``; the reply rows only
    when they differ from the target rows.
    """
    comp = compression
    encoded = encode(targets, comp.soft_labels, temperature=temperature, k=comp.topk)
    encoded.update(encode_rows(target_idx, keys.PROXY_IDX))
    if knowledge is not None:
        dtype = np.float16 if comp.features == "fp16" else np.float32
        encoded[keys.KNOWLEDGE] = knowledge[target_idx].astype(dtype)
    if not np.array_equal(target_idx, reply_idx):
        encoded.update(encode_rows(reply_idx, keys.REPLY_IDX))
    return {name: Array(np.ascontiguousarray(a)) for name, a in encoded.items()}


def add_dp_config(conf: ConfigRecord, plan: PrivacyPlan | None) -> None:
    """Put the DP parameters clients apply (client_dp, dp_sgd) into ``conf``."""
    if plan is not None and plan.mechanism in ("client_dp", "dp_sgd"):
        conf[keys.DP_MODE] = plan.mechanism
        conf[keys.DP_NOISE] = plan.noise_multiplier
        conf[keys.DP_CLIP] = float(plan.clip or 0.0)
        conf[keys.DP_LOCAL] = plan.local


def instructions(
    record: RecordDict,
    destinations: list[tuple[int, int]],
    kind: str,
    server_round: int,
    *,
    warm_weights: ArrayRecord | None,
    warm_started: set[int],
) -> list[Message]:
    """One ``kind`` message of ``record`` per ``(partition, node)`` in ``destinations``.

    A client that has not had the warm-start student yet (not in ``warm_started``) gets
    ``warm_weights`` too, unless the record already carries a global model.
    """
    return [
        Message(
            with_warm_start(record, p, warm_weights, warm_started),
            node,
            kind,
            group_id=str(server_round),
        )
        for p, node in destinations
    ]


def with_warm_start(
    record: RecordDict, partition: int, warm_weights: ArrayRecord | None, warm_started: set[int]
) -> RecordDict:
    """``record`` plus the warm-start student for a client that has not had it yet."""
    if warm_weights is None or partition in warm_started:
        return record
    if keys.WEIGHTS in record.array_records:  # a global model supersedes it
        return record
    warm = RecordDict(dict(record.items()))
    warm[keys.WEIGHTS] = warm_weights
    return warm
