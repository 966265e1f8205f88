"""The reply Message every handler sends: metrics, optionally arrays."""

from __future__ import annotations

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedkd import keys


def reply(
    msg: Message, metrics: dict[str, float | int | list[int]], arrays: ArrayRecord | None = None
) -> Message:
    """A reply to ``msg`` carrying ``metrics`` and, when given, ``arrays`` (the logits)."""
    content = RecordDict({keys.METRICS: MetricRecord(metrics)})  # type: ignore[arg-type]
    if arrays is not None:
        content[keys.REPLY_LOGITS] = arrays
    return Message(content, reply_to=msg)
