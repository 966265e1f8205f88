"""The local-only baseline: every client trains a fresh student on its private data only."""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import ConfigRecord, Message, RecordDict

from fedkd import keys


def baseline_messages(node_of: Mapping[int, int], epochs: int) -> list[Message]:
    """One ``query.local-only`` message per discovered client, in partition order."""
    record = RecordDict({keys.CONFIG: ConfigRecord({keys.BASELINE_EPOCHS: epochs})})
    return [
        Message(record, node_of[p], keys.QUERY_LOCAL_ONLY, group_id="baseline")
        for p in sorted(node_of)
    ]


def baseline_accuracies(good: list[tuple[int, Message]]) -> dict[int, float]:
    """Partition id -> local-only test accuracy of the valid baseline replies."""
    return {
        pid: float(msg.content.metric_records[keys.METRICS][keys.LOCAL_ONLY_ACCURACY])  # type: ignore[arg-type]
        for pid, msg in good
    }
