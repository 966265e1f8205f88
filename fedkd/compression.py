"""Soft-label compression on the wire: fp32, fp16, int8 (per-row scale), top-k.

A ``(P, C)`` logit matrix becomes a few named arrays of an :class:`flwr.app.ArrayRecord`;
the byte counts fedkd reports are those of the serialized Messages, so they include
exactly what each encoding costs. Row indices travel compactly too (:func:`encode_rows`).

* ``fp32``: ``logits`` as float32 (4 B per value).
* ``fp16``: ``logits`` as float16 (2 B).
* ``int8``: per row, centred logits ``z - mean(z)`` scaled by ``s = max|.| / 127`` and
  rounded: ``logits-q`` int8 (1 B per value) plus ``logits-scale`` float16 per row.
  Centring is free (softmax is shift-invariant) and halves the range to cover.
* ``topk``: the ``k`` largest logits per row (``topk-idx`` uint8/int16, ``topk-val``
  float16) and one remainder logit per row (``topk-rest`` float16) shared by the other
  ``C - k`` classes, chosen so that they keep their total probability at the
  distillation temperature ``T``: ``(C - k) exp(r / T) = sum_rest exp(z_j / T)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

KINDS = ("fp32", "fp16", "int8", "topk")
LOGITS = "logits"
Q, SCALE = "logits-q", "logits-scale"
TOPK_IDX, TOPK_VAL, TOPK_REST = "topk-idx", "topk-val", "topk-rest"
ROWS, ROW_RANGE = "proxy-idx", "proxy-range"


def encode(logits: np.ndarray, kind: str, *, temperature: float, k: int) -> dict[str, np.ndarray]:
    """Arrays that carry ``logits`` ``(P, C)`` in encoding ``kind``."""
    z = np.asarray(logits, np.float32)
    if kind == "fp32":
        return {LOGITS: np.ascontiguousarray(z)}
    if kind == "fp16":
        return {LOGITS: z.astype(np.float16)}
    if kind == "int8":
        c = z - z.mean(axis=-1, keepdims=True)
        scale = np.abs(c).max(axis=-1, keepdims=True) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float16)
        q = np.clip(np.rint(c / scale.astype(np.float32)), -127, 127).astype(np.int8)
        return {Q: q, SCALE: scale[:, 0]}
    if kind == "topk":
        n_cls = z.shape[-1]
        k = min(k, n_cls)
        idx = np.argsort(-z, axis=-1, kind="stable")[:, :k]
        top = np.take_along_axis(z, idx, axis=-1)
        out = {
            TOPK_IDX: idx.astype(np.uint8 if n_cls <= 256 else np.int16),
            TOPK_VAL: top.astype(np.float16),
        }
        if k < n_cls:
            mask = np.ones_like(z, dtype=bool)
            np.put_along_axis(mask, idx, False, axis=-1)
            rest = z[mask].reshape(len(z), n_cls - k) / temperature
            m = rest.max(axis=-1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(rest - m).sum(axis=-1))
            out[TOPK_REST] = (temperature * (lse - np.log(n_cls - k))).astype(np.float16)
        return out
    raise ValueError(f"unknown soft-label encoding {kind!r}; allowed: {', '.join(KINDS)}")


def decode(arrays: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
    """``(P, C)`` float32 logits from the arrays of any encoding.

    Raises ``ValueError`` (a one-line reason) for arrays that fit no encoding.
    """
    if LOGITS in arrays:
        arr = np.asarray(arrays[LOGITS])
        if arr.dtype.kind != "f":
            raise ValueError(f"logits have dtype {arr.dtype}; expected a float type")
        return arr.astype(np.float32, copy=False)
    if Q in arrays:
        q, scale = np.asarray(arrays[Q]), np.asarray(arrays.get(SCALE, np.zeros(0)))
        if q.dtype != np.int8 or q.ndim != 2 or scale.shape != (len(q),):
            raise ValueError(f"int8 logits {q.dtype}{q.shape} with scales {scale.shape}")
        return q.astype(np.float32) * scale.astype(np.float32)[:, None]
    if TOPK_IDX in arrays and TOPK_VAL in arrays:
        idx, val = np.asarray(arrays[TOPK_IDX]).astype(np.int64), np.asarray(arrays[TOPK_VAL])
        if idx.shape != val.shape or idx.ndim != 2 or (idx < 0).any() or (idx >= num_classes).any():
            raise ValueError(f"top-k indices {idx.shape} / values {val.shape} do not fit")
        n, k = idx.shape
        if k < num_classes:
            rest = np.asarray(arrays.get(TOPK_REST, np.zeros(0)))
            if rest.shape != (n,):
                raise ValueError(f"top-k remainder has shape {rest.shape}; expected ({n},)")
            out = np.repeat(rest.astype(np.float32)[:, None], num_classes, axis=1)
        else:
            out = np.zeros((n, num_classes), np.float32)
        np.put_along_axis(out, idx, val.astype(np.float32), axis=-1)
        return out
    raise ValueError(f"no logits in the record (arrays: {sorted(arrays)})")


def encode_rows(rows: np.ndarray, key: str = ROWS) -> dict[str, np.ndarray]:
    """Row indices under ``key`` (a ``*-idx`` name), compactly.

    A contiguous range travels as ``[start, stop]`` under ``*-range``; other rows as
    indices in the smallest dtype that holds them.
    """
    rows = np.asarray(rows, np.int64)
    if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
        return {key.replace("-idx", "-range"): np.array([rows[0], rows[0] + len(rows)], np.int64)}
    top = int(rows.max()) if len(rows) else 0
    dtype = np.uint16 if top < 2**16 else np.int64
    return {key: rows.astype(dtype)}


def has_rows(arrays: Mapping[str, np.ndarray], key: str) -> bool:
    """Whether :func:`encode_rows` put rows under ``key`` (either form)."""
    return key in arrays or key.replace("-idx", "-range") in arrays


def decode_rows(arrays: Mapping[str, np.ndarray], key: str = ROWS) -> np.ndarray:
    """Row indices from :func:`encode_rows` (``key`` names the plain-array form)."""
    range_key = key.replace("-idx", "-range")
    if range_key in arrays:
        start, stop = (int(v) for v in np.asarray(arrays[range_key]))
        return np.arange(start, stop, dtype=np.int64)
    return np.asarray(arrays[key]).astype(np.int64)
