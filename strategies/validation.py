"""Checks on client replies: a broken or hostile reply is rejected with a reason."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict

from fedkd import keys
from fedkd.compression import TOPK_IDX, Q, decode


def reply_size(msg: Message) -> int:
    """Bytes of a message's content as Flower serializes it (protobuf); 0 without content."""
    from flwr.common.serde import recorddict_to_proto

    if not msg.has_content():
        return 0
    return int(recorddict_to_proto(msg.content).ByteSize())


Rejection = tuple[str, str]
"""``(kind, reason)``: a short category (counted in ``summary.json``) and the detail."""


def check_reply(
    msg: Message,
    *,
    required_metrics: tuple[str, ...],
    logits_shape: tuple[int, int] | None = None,
    max_bytes: int | None = None,
    size: int | None = None,
    weight_shapes: dict[str, tuple[int, ...]] | None = None,
) -> Rejection | None:
    """Return why ``msg`` must be rejected, or ``None`` when it is well formed.

    Checks: no error, size within ``max_bytes``, a metrics record with finite values for
    ``required_metrics`` and, when ``logits_shape`` is given, a float logits array of
    exactly that shape with only finite values. Kinds: ``client_error``, ``oversized``,
    ``missing_record``, ``bad_metric``, ``undecodable``, ``bad_dtype``, ``bad_shape``,
    ``non_finite``. With ``weight_shapes``, the reply must carry a student state dict
    (``keys.WEIGHTS``) with exactly those arrays, float and finite (``bad_weights``).
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


def decode_record(record: ArrayRecord, num_classes: int) -> np.ndarray:
    """The float32 logits of a (validated) logits record, whatever its encoding."""
    return decode({name: record[name].numpy() for name in record}, num_classes)


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
