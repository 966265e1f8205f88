"""Checks on client replies: a broken or hostile reply is rejected with a reason."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedkd import keys
from fedkd.compression import TOPK_IDX, Q, decode

Rejection = tuple[str, str]
"""``(kind, reason)``: a short category (counted in ``summary.json``) and the detail."""

Reject = Callable[[int, str, str], None]
"""``reject(partition, kind, reason)``: record a rejected reply (see ``RejectionLog``)."""

PARTITION_ID_LIMIT = 2**31
"""Partition ids are below this: simulated ids are ``0..num_clients-1``; a device with its
own ``data-path`` may use its node id modulo ``2**31`` (see ``fedkd.client.node.partition_id``)."""


@dataclass(frozen=True)
class MetricRule:
    """What one metric of a reply must be.

    Parameters
    ----------
    key : str
        The metric's name in the reply's ``keys.METRICS`` record.
    lo, hi : float, optional
        Inclusive bounds (``None``: unbounded on that side).
    integer : bool
        The value must be a whole number (an ``int``, or a float without fraction).
    required : bool
        A reply without the metric is rejected (``missing_record``); an optional metric is
        checked only when present.

    """

    key: str
    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    required: bool = True

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``an integer >= 0`` or ``a number in [0, 1]``."""
        what = "an integer" if self.integer else "a finite number"
        if self.lo is not None and self.hi is not None:
            return f"{what} in [{self.lo:.10g}, {self.hi:.10g}]"
        if self.lo is not None:
            return f"{what} >= {self.lo:.10g}"
        if self.hi is not None:
            return f"{what} <= {self.hi:.10g}"
        return what

    def check(self, metrics: MetricRecord) -> Rejection | None:
        """Why ``metrics[key]`` breaks the rule (``bad_metric`` / ``out_of_range``), or None."""
        if self.key not in metrics:
            return ("missing_record", f"missing metric '{self.key}'") if self.required else None
        value = metrics[self.key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or (self.integer and float(value) != math.floor(value))
        ):
            return (
                "bad_metric",
                f"metric '{self.key}' = {value!r} is not {self.allowed()}",
            )
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            return (
                "out_of_range",
                f"metric '{self.key}' = {value:.10g} is outside the allowed range: "
                f"{self.allowed()}",
            )
        return None


def _rules(*rules: MetricRule) -> tuple[MetricRule, ...]:
    return rules


PARTITION = MetricRule(keys.PARTITION_ID, lo=0, hi=PARTITION_ID_LIMIT - 1, integer=True)
SIZE = MetricRule(keys.NUM_EXAMPLES, lo=0, integer=True)

DISCOVERY_RULES = _rules(PARTITION, SIZE)
"""A discovery (``query``) reply: partition id and private data size."""

TRAIN_RULES = _rules(
    PARTITION,
    SIZE,
    MetricRule(keys.TRAIN_LOSS),
    MetricRule(keys.DISTILL_LOSS, required=False),
    MetricRule(keys.CE_LOSS, required=False),
    MetricRule(keys.TEST_ACCURACY, lo=0, hi=1, required=False),
    MetricRule(keys.DP_STEPS, lo=0, integer=True, required=False),
)
"""A train reply: ids and sizes, finite losses, an accuracy in [0, 1] when sent."""

EVALUATE_RULES = _rules(
    PARTITION,
    MetricRule(keys.TEST_ACCURACY, lo=0, hi=1),
    MetricRule(keys.NUM_EXAMPLES, lo=0, integer=True, required=False),
)
"""An evaluate reply: the test accuracy in [0, 1]."""

BASELINE_RULES = _rules(
    PARTITION,
    MetricRule(keys.LOCAL_ONLY_ACCURACY, lo=0, hi=1),
    MetricRule(keys.NUM_EXAMPLES, lo=0, integer=True, required=False),
)
"""A local-only baseline reply: its test accuracy in [0, 1]."""


def check_histogram(metrics: MetricRecord, num_classes: int, size: int) -> Rejection | None:
    """Why the reply's class histogram is wrong (``bad_histogram``), or None (also when absent).

    A histogram has ``num_classes`` non-negative integer counts that sum to ``size``.
    """
    if keys.CLASS_HISTOGRAM not in metrics:
        return None
    hist = metrics[keys.CLASS_HISTOGRAM]
    name = f"metric '{keys.CLASS_HISTOGRAM}'"
    if not isinstance(hist, list) or len(hist) != num_classes:
        n = len(hist) if isinstance(hist, list) else "not a list"
        return "bad_histogram", f"{name} has length {n}; expected {num_classes} class counts"
    for c, v in enumerate(hist):
        if not math.isfinite(v) or v < 0 or float(v) != math.floor(v):
            return (
                "bad_histogram",
                f"{name}[{c}] = {v!r}; allowed: an integer >= 0",
            )
    total = int(sum(int(v) for v in hist))
    if total != size:
        return (
            "bad_histogram",
            f"{name} sums to {total}; it must equal '{keys.NUM_EXAMPLES}' = {size}",
        )
    return None


def reply_size(msg: Message) -> int:
    """Bytes of a message's content as Flower serializes it (protobuf); 0 without content."""
    from flwr.common.serde import recorddict_to_proto

    if not msg.has_content():
        return 0
    return int(recorddict_to_proto(msg.content).ByteSize())


def check_reply(
    msg: Message,
    *,
    required_metrics: tuple[str, ...] = (),
    rules: tuple[MetricRule, ...] = (),
    logits_shape: tuple[int, int] | None = None,
    max_bytes: int | None = None,
    size: int | None = None,
    weight_shapes: dict[str, tuple[int, ...]] | None = None,
) -> Rejection | None:
    """Return why ``msg`` must be rejected, or ``None`` when it is well formed.

    Checks: no error, size within ``max_bytes``, a metrics record with finite values for
    ``required_metrics``, every metric of ``rules`` of the right type and in its range
    (:class:`MetricRule`) and, when ``logits_shape`` is given, a float logits array of
    exactly that shape with only finite values. Kinds: ``client_error``, ``oversized``,
    ``missing_record``, ``bad_metric``, ``out_of_range``, ``undecodable``, ``bad_dtype``,
    ``bad_shape``, ``non_finite``. With ``weight_shapes``, the reply must carry a student
    state dict (``keys.WEIGHTS``) with exactly those arrays, float and finite
    (``bad_weights``).
    """
    if msg.has_error():
        return "client_error", f"client error: {msg.error.reason}"
    if max_bytes is not None and size is not None and size > max_bytes:
        return "oversized", f"reply of {size} bytes exceeds the {max_bytes}-byte limit"
    content = msg.content
    if keys.METRICS not in content.metric_records:
        return "missing_record", f"missing metric record '{keys.METRICS}'"
    metrics = content.metric_records[keys.METRICS]
    for key in required_metrics:
        if key not in metrics:
            return "missing_record", f"missing metric '{key}'"
        value = metrics[key]
        if not isinstance(value, int | float) or not np.isfinite(value):
            return "bad_metric", f"metric '{key}' is not a finite number ({value!r})"
    for rule in rules:
        rejection = rule.check(metrics)
        if rejection is not None:
            return rejection
    if logits_shape is not None:
        if keys.REPLY_LOGITS not in content.array_records:
            return "missing_record", f"missing array record '{keys.REPLY_LOGITS}'"
        record = content.array_records[keys.REPLY_LOGITS]
        if not any(name in record for name in (keys.LOGITS, Q, TOPK_IDX)):
            return "missing_record", f"missing array '{keys.LOGITS}'"
        try:
            raw = {name: record[name].numpy() for name in record}
        except Exception as err:  # noqa: BLE001 - undecodable bytes from a client
            return "undecodable", f"logits cannot be decoded ({err})"
        if keys.LOGITS in raw and raw[keys.LOGITS].dtype.kind != "f":
            return "bad_dtype", f"logits have dtype {raw[keys.LOGITS].dtype}; expected a float type"
        try:
            arr = decode(raw, logits_shape[1])
        except ValueError as err:
            return "undecodable", f"logits cannot be decoded ({err})"
        if tuple(arr.shape) != tuple(logits_shape):
            return (
                "bad_shape",
                f"logits have shape {tuple(arr.shape)}; expected {tuple(logits_shape)}",
            )
        if not np.all(np.isfinite(arr)):
            return "non_finite", "logits contain NaN or inf"
    if weight_shapes is not None:
        return _check_weights(content, weight_shapes)
    return None


def record_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The numpy arrays of a (validated) record, by name."""
    return {name: record[name].numpy() for name in record}


def _check_weights(content: RecordDict, shapes: dict[str, tuple[int, ...]]) -> Rejection | None:
    if keys.WEIGHTS not in content.array_records:
        return "missing_record", f"missing array record '{keys.WEIGHTS}'"
    record = content.array_records[keys.WEIGHTS]
    if set(record.keys()) != set(shapes):
        return (
            "bad_weights",
            f"weights have arrays {sorted(record.keys())}; expected {sorted(shapes)}",
        )
    for name, shape in shapes.items():
        try:
            arr = record[name].numpy()
        except Exception as err:  # noqa: BLE001 - undecodable bytes from a client
            return "undecodable", f"weights '{name}' cannot be decoded ({err})"
        if arr.dtype.kind != "f" or tuple(arr.shape) != tuple(shape):
            return (
                "bad_weights",
                f"weights '{name}' are {arr.dtype}{tuple(arr.shape)}; expected float{tuple(shape)}",
            )
        if not np.all(np.isfinite(arr)):
            return "non_finite", f"weights '{name}' contain NaN or inf"
    return None


def accept_replies(
    replies: Iterable[Message],
    *,
    part_of: Mapping[int, int],
    client_info: Mapping[int, Mapping[str, Any]],
    reply_bytes: Mapping[int, int],
    max_bytes: int | None,
    reject: Reject,
    required: tuple[str, ...] = (),
    rules: tuple[MetricRule, ...] = (),
    logits_shape: tuple[int, int] | None = None,
    weight_shapes: dict[str, tuple[int, ...]] | None = None,
    same_size: bool = False,
) -> list[tuple[int, Message]]:
    """Replies that pass :func:`check_reply`, as ``(partition id, message)`` sorted.

    A reply must come from a discovered node (``part_of``: node id -> partition id) and
    claim that node's partition (``wrong_partition``); with ``same_size``, its
    ``num-examples`` must be the size the client reported at discovery (``client_info``,
    ``inconsistent_size``). ``reply_bytes`` holds the serialized size of each reply by
    ``id(reply)`` where already measured. Every other reply goes to ``reject`` with its
    kind and reason.
    """
    good = []
    for msg in replies:
        pid = part_of.get(msg.metadata.src_node_id, -1)
        rejection = check_reply(
            msg,
            required_metrics=required,
            rules=rules,
            logits_shape=logits_shape,
            max_bytes=max_bytes,
            size=reply_bytes.get(id(msg)) or reply_size(msg),
            weight_shapes=weight_shapes,
        )
        if rejection is None:
            rejection = _claims_rejection(msg, pid, client_info, same_size)
        if rejection is not None:
            reject(pid, *rejection)
            continue
        good.append((pid, msg))
    return sorted(good, key=lambda t: t[0])


def _claims_rejection(
    msg: Message, pid: int, client_info: Mapping[int, Mapping[str, Any]], same_size: bool
) -> Rejection | None:
    """Why a well-formed reply's partition or size claim is wrong, or None."""
    m = msg.content.metric_records[keys.METRICS]
    claimed = int(m[keys.PARTITION_ID])  # type: ignore[arg-type]
    node = msg.metadata.src_node_id
    if claimed != pid:
        return (
            "wrong_partition",
            f"reply claims partition {claimed} but node {node} is partition {pid}",
        )
    if same_size and keys.NUM_EXAMPLES in m:
        known = int(client_info.get(pid, {}).get("size", -1))
        size = int(m[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
        if size != known:
            return (
                "inconsistent_size",
                f"metric '{keys.NUM_EXAMPLES}' = {size}; partition {pid} "
                f"reported {known} private samples at discovery (allowed: {known})",
            )
    return None
