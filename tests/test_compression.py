"""Soft-label encodings: golden round trips, exact byte counts, bad encodings rejected."""

import numpy as np
import pytest
from fedkd.strategies.validation import check_reply, reply_size
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

import fedkd
from fedkd import keys
from fedkd.compression import decode, decode_rows, encode, encode_rows, has_rows
from fedkd.engines.inprocess import set_server_identity

from .conftest import TINY

RNG = np.random.default_rng(0)
LOGITS = (RNG.normal(0, 3, (400, 10)) + 5).astype(np.float32)


def _softmax(z, t=1.0):
    e = np.exp((z - z.max(-1, keepdims=True)) / t)
    return e / e.sum(-1, keepdims=True)


def test_fp32_is_exact_and_fp16_is_close():
    assert np.array_equal(decode(encode(LOGITS, "fp32", temperature=4, k=3), 10), LOGITS)
    half = decode(encode(LOGITS, "fp16", temperature=4, k=3), 10)
    assert np.allclose(half, LOGITS, rtol=1e-3, atol=1e-3)


def test_int8_centres_rows_and_errs_at_most_half_a_step():
    enc = encode(LOGITS, "int8", temperature=4, k=3)
    assert enc["logits-q"].dtype == np.int8 and enc["logits-scale"].dtype == np.float16
    out = decode(enc, 10)
    centred = LOGITS - LOGITS.mean(-1, keepdims=True)
    step = enc["logits-scale"].astype(np.float32)[:, None]
    assert np.all(np.abs(out - centred) <= step / 2 + 1e-6)
    # the shift is free: same soft targets up to the rounding
    assert np.abs(_softmax(out, 4) - _softmax(LOGITS, 4)).max() < 0.01


def test_topk_keeps_the_k_largest_and_the_rest_mass_at_temperature():
    t, k = 4.0, 3
    out = decode(encode(LOGITS, "topk", temperature=t, k=k), 10)
    top = np.argsort(-LOGITS, -1)[:, :k]
    assert np.allclose(
        np.take_along_axis(out, top, -1), np.take_along_axis(LOGITS, top, -1), atol=1e-2
    )
    mask = np.ones_like(LOGITS, bool)
    np.put_along_axis(mask, top, False, -1)
    rest_true = np.exp(LOGITS[mask].reshape(400, 7) / t).sum(-1)
    rest_coded = np.exp(out[mask].reshape(400, 7) / t).sum(-1)
    assert np.allclose(rest_coded, rest_true, rtol=5e-3)
    assert np.allclose(_softmax(out, t).sum(-1), 1)
    full = decode(encode(LOGITS, "topk", temperature=t, k=10), 10)
    assert np.allclose(full, LOGITS, rtol=1e-3, atol=1e-2)


def test_rows_travel_as_a_range_or_small_ints():
    enc = encode_rows(np.arange(5, 405), keys.PROXY_IDX)
    assert list(enc) == ["proxy-range"] and has_rows(enc, keys.PROXY_IDX)
    assert np.array_equal(decode_rows(enc, keys.PROXY_IDX), np.arange(5, 405))
    rows = np.array([3, 9, 4000])
    enc = encode_rows(rows, keys.REPLY_IDX)
    assert enc[keys.REPLY_IDX].dtype == np.uint16
    assert np.array_equal(decode_rows(enc, keys.REPLY_IDX), rows)
    assert not has_rows(enc, keys.PROXY_IDX)


def _message_bytes(kind: str, p: int = 4000) -> int:
    set_server_identity(1)  # Flower 1.41 stamps new Messages with the task identity
    z = np.random.default_rng(1).normal(0, 3, (p, 10)).astype(np.float32)
    arrays = encode(z, kind, temperature=4, k=3) | encode_rows(np.arange(p), keys.PROXY_IDX)
    record = RecordDict({keys.TARGETS: ArrayRecord({n: Array(a) for n, a in arrays.items()})})
    return reply_size(Message(record, 1001, "train", group_id="1"))


def test_serialized_bytes_per_encoding():
    fp32, fp16, int8, topk = (_message_bytes(k) for k in ("fp32", "fp16", "int8", "topk"))
    assert fp32 > 4000 * 10 * 4
    assert fp16 < 0.52 * fp32
    assert int8 <= 0.35 * fp32  # 1 B per value + 2 B scale per row of 10
    assert topk < 0.5 * fp32  # 3 x (1 B index + 2 B value) + 2 B remainder per row


def test_a_malformed_encoded_reply_is_rejected_with_a_reason():
    set_server_identity(1)
    q = np.zeros((4, 10), np.int16)  # int8 expected
    content = RecordDict(
        {
            keys.REPLY_LOGITS: ArrayRecord(
                {"logits-q": Array(q), "logits-scale": Array(np.ones(4, np.float16))}
            ),
            keys.METRICS: MetricRecord({keys.PARTITION_ID: 0}),
        }
    )
    reply = Message(
        content,
        reply_to=Message(RecordDict({keys.CONFIG: ConfigRecord({})}), 1001, "train", group_id="1"),
    )
    kind, reason = check_reply(reply, required_metrics=(keys.PARTITION_ID,), logits_shape=(4, 10))
    assert kind == "undecodable" and "int8" in reason
    with pytest.raises(ValueError, match="do not fit"):
        decode(
            {"topk-idx": np.array([[12]], np.uint8), "topk-val": np.array([[1.0]], np.float16)}, 10
        )


def test_int8_run_sends_fewer_bytes_both_ways(tmp_path):
    fp32 = fedkd.run(TINY, out=tmp_path / "fp32").summary
    int8 = fedkd.run(
        TINY, overrides=["compression.soft_labels=int8"], out=tmp_path / "int8"
    ).summary
    t32, t8 = fp32["communication"], int8["communication"]
    assert t8["by_phase_down"]["train"] < 0.45 * t32["by_phase_down"]["train"]
    assert t8["by_phase_up"]["train"] < 0.45 * t32["by_phase_up"]["train"]
    assert int8["rejected_replies"] == 0
    assert (
        abs(int8["final"]["student_accuracy_mean"] - fp32["final"]["student_accuracy_mean"]) < 0.05
    )
