"""Simulated device tiers in a round: virtual times, the round policy, per-tier counters.

Only used with ``devices.tiers`` (a :class:`fedkd.devices.DeviceFleet`). Each answering
client's virtual time comes from its tier and the bytes of its own instruction and reply
(:mod:`fedkd.devices`); the round policy keeps some replies. Error replies (simulated
crashes) stay in, to be rejected with their reason. A round whose kept replies number
fewer than ``devices.min_replies`` is void: no reply is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import Message

from fedkd.devices import DeviceFleet, PolicyOutcome, apply_policy, fails

log = logging.getLogger("fedkd")

TIER_COUNTERS = ("sampled", "kept", "late", "failed", "time_sum", "timed")
"""Per-tier counters in ``tier_stats`` (``time_sum`` / ``timed``: mean virtual time)."""


def reply_times(
    fleet: DeviceFleet,
    replies: Iterable[Message],
    *,
    part_of: Mapping[int, int],
    down_bytes: Mapping[int, int],
    reply_bytes: Mapping[int, int],
    client_info: Mapping[int, Mapping[str, Any]],
    n_targets: int,
    n_reply: int,
) -> dict[int, float]:
    """Virtual finishing time (s) of each answering client, by partition id.

    ``down_bytes`` holds each node's instruction size, ``reply_bytes`` each reply's size
    by ``id(reply)``; error replies and unknown nodes have no time.
    """
    times: dict[int, float] = {}
    for r in replies:
        pid = part_of.get(r.metadata.src_node_id)
        if pid is None or r.has_error():
            continue
        times[pid] = fleet.time(
            pid,
            bytes_down=down_bytes.get(r.metadata.src_node_id, 0),
            bytes_up=reply_bytes.get(id(r), 0),
            n_proxy=n_targets,
            n_local=int(client_info.get(pid, {}).get("size", 0)),
            n_reply=n_reply,
        ).total_s
    return times


def run_policy(
    policy: str,
    times: dict[int, float],
    *,
    deadline_s: float,
    keep: int | None,
    min_replies: int,
    server_round: int,
) -> tuple[PolicyOutcome, bool]:
    """``(outcome, void)``: the round policy over ``times``; void when too few are kept.

    ``keep`` (None: all timed replies) is how many replies the policy may keep.
    """
    keep = keep if keep is not None else len(times)
    outcome = apply_policy(policy, times, deadline_s=deadline_s, keep=keep)
    kept = len(outcome.kept)
    void = kept < min_replies
    if void:
        log.warning(
            "round %s is void: %d kept repl%s < devices.min_replies = %d",
            server_round,
            kept,
            "y" if kept == 1 else "ies",
            min_replies,
        )
    return outcome, void


def tally_tiers(
    tier_stats: dict[str, dict[str, float]],
    tier_name: Callable[[int], str],
    sampled: list[int],
    times: Mapping[int, float],
    kept: set[int],
    void: bool,
) -> None:
    """Add this round's sampled clients to the per-tier counters of ``tier_stats``."""
    for pid in sampled:
        st = tier_stats.setdefault(
            tier_name(pid),
            {"sampled": 0, "kept": 0, "late": 0, "failed": 0, "time_sum": 0.0, "timed": 0},
        )
        st["sampled"] += 1
        if pid in times:
            st["time_sum"] += times[pid]
            st["timed"] += 1
            if pid not in kept:
                st["late"] += 1
            elif not void:
                st["kept"] += 1
        else:
            st["failed"] += 1


def device_counters(
    available: int | None,
    outcome: PolicyOutcome,
    void: bool,
    sampled: int,
    timed: int,
    virtual_time: float,
) -> dict[str, Any]:
    """The device columns of the round's metrics row."""
    return {
        "available": available,
        "kept": 0 if void else len(outcome.kept),
        "dropped_late": len(outcome.late),
        "failed": sampled - timed,
        "void": void,
        "round_virtual_time_s": outcome.round_time_s,
        "virtual_time_s": virtual_time,
    }


def kept_replies(
    replies: list[Message], part_of: Mapping[int, int], kept: set[int], void: bool
) -> list[Message]:
    """Error replies (rejected later with their reason) and, unless void, the kept ones."""
    return [
        r
        for r in replies
        if r.has_error() or (not void and part_of.get(r.metadata.src_node_id) in kept)
    ]


def train_asked(
    sent_partitions: list[int],
    devices: Mapping[str, Any],
    *,
    tier_of: Callable[[int], Any],
    num_clients: int,
    seed: int,
    server_round: int,
) -> int:
    """Train replies validation counts: the sampled, less late drops and simulated crashes.

    0 for a void round (the round policy's outcome, not a validation failure).
    ``sent_partitions`` (-1: unknown node) are the clients instructed this round.
    """
    if devices.get("void"):
        return 0
    crashes = 0
    for pid in sent_partitions:
        tier = tier_of(pid) if 0 <= pid < num_clients else None
        if tier is not None and fails(tier.failure_prob, seed, pid, server_round):
            crashes += 1
    return max(0, len(sent_partitions) - int(devices.get("dropped_late") or 0) - crashes)
