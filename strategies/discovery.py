"""Node discovery: wait for the nodes, then learn each one's partition, size and histogram.

Sampling is done over partition ids, so every transport (in-process, Ray, Flower's
simulation, real SuperNodes) samples the same clients for the same seed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fedkd.strategies.validation import (
    DISCOVERY_RULES,
    Reject,
    Rejection,
    check_histogram,
    check_reply,
    reply_size,
)
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedkd import keys
from fedkd.errors import RunFailed

log = logging.getLogger("fedkd")


def wait_for_nodes(grid: Grid, num_clients: int, min_clients: int, wait_s: float) -> list[int]:
    """Connected node ids, after waiting up to ``wait_s`` seconds for ``num_clients``.

    Fewer than ``min_clients`` connected by then stops the run (:class:`RunFailed`).
    """
    deadline = time.monotonic() + wait_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= num_clients or time.monotonic() >= deadline:
            break
        log.info("waiting for clients: %d of %d connected", len(nodes), num_clients)
        time.sleep(1.0)
    if len(nodes) < min_clients:
        raise RunFailed(
            f"only {len(nodes)} client(s) connected after "
            f"{wait_s:.0f} s; strategy.min_clients = {min_clients}"
        )
    return nodes


def discovery_messages(nodes: list[int]) -> list[Message]:
    """One ``query`` message per node (empty config)."""
    record = RecordDict({keys.CONFIG: ConfigRecord({})})
    return [Message(record, n, MessageType.QUERY, group_id="discover") for n in nodes]


def read_discovery(
    replies: Iterable[Message],
    *,
    partition_of: Callable[[int], int] | None,
    num_classes: int,
    max_bytes: int | None,
    reply_bytes: Mapping[int, int],
    reject: Reject,
) -> tuple[dict[int, int], dict[int, dict[str, Any]]]:
    """``(node_of, client_info)`` of the valid, unambiguous discovery replies.

    Replies are range-checked: an integer partition id in ``[0, 2**31)`` (exactly the
    node's partition where the grid knows it: ``partition_of``), a size ``>= 0``, a
    histogram of ``num_classes`` counts summing to the size, the reply within
    ``max_bytes``. A partition claimed by two nodes is ambiguous: every claim of it is
    rejected (``duplicate_partition``). ``client_info`` maps partition id to ``size`` and
    ``histogram``.
    """
    claims: dict[int, list[tuple[int, MetricRecord]]] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        expected = partition_of(node) if partition_of is not None else None
        size = reply_bytes.get(id(reply)) or reply_size(reply)
        pid, rejection = _check_discovery(reply, expected, num_classes, max_bytes, size)
        if rejection is not None:
            reject(pid, *rejection)
            continue
        claims.setdefault(pid, []).append((node, reply.content.metric_records[keys.METRICS]))
    node_of: dict[int, int] = {}
    client_info: dict[int, dict[str, Any]] = {}
    for pid, claimants in sorted(claims.items()):
        if len(claimants) > 1:
            others = sorted(n for n, _ in claimants)
            for _ in claimants:
                reject(
                    pid,
                    "duplicate_partition",
                    f"partition {pid} is claimed by nodes {others}; all claims rejected",
                )
            continue
        node, m = claimants[0]
        node_of[pid] = node
        client_info[pid] = {
            "size": int(m[keys.NUM_EXAMPLES]),  # type: ignore[arg-type]
            "histogram": [int(v) for v in m.get(keys.CLASS_HISTOGRAM, [])],  # type: ignore[union-attr]
        }
    return node_of, client_info


def _check_discovery(
    reply: Message, expected: int | None, num_classes: int, max_bytes: int | None, size: int
) -> tuple[int, Rejection | None]:
    """``(partition id, why the reply is rejected or None)`` of one discovery reply."""
    rejection = check_reply(reply, rules=DISCOVERY_RULES, max_bytes=max_bytes, size=size)
    pid = -1 if expected is None else expected
    if rejection is not None:
        return pid, rejection
    m = reply.content.metric_records[keys.METRICS]
    pid = int(m[keys.PARTITION_ID])  # type: ignore[arg-type]
    rejection = check_histogram(m, num_classes, int(m[keys.NUM_EXAMPLES]))  # type: ignore[arg-type]
    if rejection is None and expected is not None and pid != expected:
        node = reply.metadata.src_node_id
        rejection = (
            "wrong_partition",
            f"reply claims partition {pid} but node {node} is partition {expected} "
            f"(allowed: {expected})",
        )
        pid = expected
    return pid, rejection
