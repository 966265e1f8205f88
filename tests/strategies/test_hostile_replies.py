"""Hostile or broken client replies: each is rejected with a kind and a reason naming the
metric, the value and the allowed range, while the run goes on with the good clients; a
phase with too few valid replies stops the run with exit 1 and one line.

Clients are fedkd's real ClientApp, wrapped so that chosen partitions tamper with the
metrics of their real reply, driven through the real in-process Grid and ServerApp.
"""

import json
import math
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fedkd.strategies import register_strategy
from fedkd.strategies.client_fusion import FedMD, _shape
from fedkd.strategies.validation import (
    EVALUATE_RULES,
    TRAIN_RULES,
    MetricRule,
    check_histogram,
)
from flwr.app import Context, Message, MetricRecord, RecordDict

from fedkd import keys
from fedkd.client_app import app as real_client_app
from fedkd.engines.inprocess import InProcessGrid
from fedkd.errors import RunFailed
from fedkd.experiment import run_server
from fedkd.validation import load_config

from ..conftest import ROOT, TINY, fedkd_cmd

EDGE_TINY = ROOT / "tests" / "edge_tiny.toml"

Edit = dict[str, Any]  # metric -> new value, or fn(metrics) -> new value


class Tampering:
    """The real ClientApp; the reply to ``(message type, partition)`` gets its metrics edited.

    ``raise_on``: ``(message type, round or None)`` for which every client raises.
    """

    def __init__(
        self,
        edits: dict[tuple[str, int], Edit] | None = None,
        raise_on: tuple[str, int | None] | None = None,
        sleep: dict[tuple[str, int, int], float] | None = None,
    ) -> None:
        self.edits = edits or {}
        self.raise_on = raise_on
        self.sleep = sleep or {}

    def __call__(self, msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        kind = msg.metadata.message_type
        rnd = int(msg.metadata.group_id) if msg.metadata.group_id.isdigit() else 0
        if self.raise_on is not None and kind == self.raise_on[0]:
            if self.raise_on[1] in (None, rnd):
                raise RuntimeError(f"hostile client {pid} refuses round {rnd}")
        time.sleep(self.sleep.get((kind, pid, rnd), 0.0))
        reply = real_client_app(msg, context)
        edit = self.edits.get((kind, pid))
        if edit is None or reply.has_error():
            return reply
        metrics = dict(reply.content.metric_records[keys.METRICS].items())
        for key, value in edit.items():
            metrics[key] = value(metrics) if callable(value) else value
        content = RecordDict(dict(reply.content.items()))
        content[keys.METRICS] = MetricRecord(metrics)
        return Message(content, reply_to=msg)


FUSED: list[tuple[int, list[float]]] = []


class RecordingFedMD(FedMD):
    """FedMD that notes the client weights each round's fusion gets (the fusion is FedMD's)."""

    def fuse_client_logits(self, server_round, proxy_idx, logits, weights):  # noqa: D102
        assert np.all(np.isfinite(logits))
        FUSED.append((server_round, [float(w) for w in weights]))
        super().fuse_client_logits(server_round, proxy_idx, logits, weights)


def _recording_fedmd(cfg, teachers) -> RecordingFedMD:
    return RecordingFedMD(cfg, *_shape(cfg, teachers))


@pytest.fixture(autouse=True)
def _recording_strategy():
    """Registered for this module's tests only (other tests list the registry)."""
    from fedkd.strategies.catalogue import STRATEGY_REGISTRY

    register_strategy("test_recording_fedmd")(_recording_fedmd)
    yield
    STRATEGY_REGISTRY.pop("test_recording_fedmd", None)


def _run(tmp_path, app: Callable, overrides: list[str], workers: int = 1):
    cfg = load_config(TINY, overrides)
    grid = InProcessGrid(
        app, cfg.num_clients, {keys.RUN_CONFIG_JSON: cfg.model_dump_json()}, workers=workers
    )
    try:
        return run_server(grid, cfg, tmp_path)
    finally:
        grid.close()


def _kinds(rejections: list[dict]) -> dict[int, str]:
    return {r["partition"]: r["kind"] for r in rejections}


def _reason(rejections: list[dict], partition: int) -> str:
    return next(r["reason"] for r in rejections if r["partition"] == partition)


# ---------------------------------------------------------------- train and discovery
def test_hostile_train_numbers_are_rejected_and_fusion_uses_the_good_clients(tmp_path):
    # fedmd weighs client logits by their reported sizes: a negative size crashed the run
    size = keys.NUM_EXAMPLES
    edits = {
        ("query", 1): {size: -3},  # discovery: never enters the federation
        ("train", 2): {size: -5},
        ("train", 3): {size: lambda m: m[size] + 1},
        ("train", 4): {keys.TEST_ACCURACY: 1e9},
        ("train", 5): {keys.TRAIN_LOSS: math.inf},
        ("train", 6): {keys.PARTITION_ID: 0},
        ("train", 7): {keys.PARTITION_ID: 6.5},
        ("train", 8): {keys.CE_LOSS: math.nan},
        ("train", 9): {keys.DP_STEPS: -1},
    }
    FUSED.clear()
    result = _run(
        tmp_path,
        Tampering(edits),
        [
            "num_clients=12",
            "rounds=1",
            "strategy.name=test_recording_fedmd",
            "strategy.min_valid_fraction=0.25",
            "baselines.local_only=false",
        ],
    )
    partition = json.loads((tmp_path / "partition.json").read_text())
    sizes = {c["client"]: c["size"] for c in partition["clients"]}
    assert sorted(sizes) == [0, *range(2, 12)]  # partition 1 was rejected at discovery
    s = result.summary
    discover = [r for r in s["rejections"] if r["round"] == "discover"]
    assert _kinds(discover) == {1: "out_of_range"}
    assert "'num-examples' = -3" in discover[0]["reason"] and ">= 0" in discover[0]["reason"]
    row = result.metrics[0]
    assert row["sampled"] == 11 and row["replies_ok"] == 3
    assert _kinds(row["rejections"]) == {
        2: "out_of_range",
        3: "inconsistent_size",
        4: "out_of_range",
        5: "bad_metric",
        6: "wrong_partition",
        7: "bad_metric",
        8: "bad_metric",
        9: "out_of_range",
    }
    rej = row["rejections"]
    assert "'num-examples' = -5" in _reason(rej, 2) and "an integer >= 0" in _reason(rej, 2)
    assert f"= {sizes[3] + 1}" in _reason(rej, 3) and f"reported {sizes[3]}" in _reason(rej, 3)
    assert "'test-accuracy' = 1000000000 " in _reason(rej, 4) and "[0, 1]" in _reason(rej, 4)
    assert "'train-loss'" in _reason(rej, 5) and "inf" in _reason(rej, 5)
    assert "claims partition 0" in _reason(rej, 6)
    assert "'partition-id' = 6.5 is not an integer" in _reason(rej, 7)
    assert "'ce-loss' = nan" in _reason(rej, 8)
    assert "'dp-steps' = -1" in _reason(rej, 9)
    # the fusion saw the three honest clients only, with the sizes they reported
    assert FUSED == [(1, [float(sizes[p]) for p in (0, 10, 11)])]
    assert s["rejected_by_kind"] == {
        "out_of_range": 4,
        "inconsistent_size": 1,
        "bad_metric": 3,
        "wrong_partition": 1,
    }
    # the lying clients were evaluated like everyone else; no accuracy outside [0, 1]
    assert row["evaluated"] == 11
    accs = [c["final_accuracy"] for c in json.loads((tmp_path / "clients.json").read_text())]
    assert all(0 <= a <= 1 for a in accs if a is not None)
    assert 0 <= s["final"]["student_accuracy_mean"] <= 1


def _discovery(edits: dict[tuple[str, int], Edit], grid_cls=InProcessGrid, n: int = 8):
    cfg = load_config(TINY, [f"num_clients={n}", "strategy.min_valid_fraction=0.25"])
    grid = grid_cls(Tampering(edits), n, {keys.RUN_CONFIG_JSON: cfg.model_dump_json()})
    strategy = FedMD(cfg, cfg.data.proxy_size, 10)
    strategy.discover(grid, timeout=60)
    return strategy


def test_hostile_discovery_replies_are_rejected():
    hist = keys.CLASS_HISTOGRAM
    strategy = _discovery(
        {
            ("query", 1): {hist: lambda m: [-1, m[hist][1] + 1, *m[hist][2:]]},  # sum kept
            ("query", 2): {hist: lambda m: m[hist][:3]},
            ("query", 3): {hist: lambda m: [m[hist][0] + 1, *m[hist][1:]]},
            ("query", 4): {keys.PARTITION_ID: 0},  # another node's partition
            ("query", 5): {keys.PARTITION_ID: 2**31},
            ("query", 6): {keys.PARTITION_ID: -1},
        }
    )
    assert sorted(strategy.node_of) == [0, 7]
    rej = strategy.rejections
    assert _kinds(rej) == {
        1: "bad_histogram",
        2: "bad_histogram",
        3: "bad_histogram",
        4: "wrong_partition",
        5: "out_of_range",
        6: "out_of_range",
    }
    assert "'class-histogram'[0] = -1" in _reason(rej, 1)
    assert "length 3; expected 10" in _reason(rej, 2)
    assert "it must equal 'num-examples'" in _reason(rej, 3)
    assert "claims partition 0 but node 1004 is partition 4" in _reason(rej, 4)
    assert "'partition-id' = 2147483648 " in _reason(rej, 5)
    assert "an integer in [0, 2147483647]" in _reason(rej, 5)


class DeploymentLikeGrid(InProcessGrid):
    """A grid that, like Flower's deployment grid, does not know which partition a node has."""

    partition_of = None


def test_without_known_partitions_ids_up_to_2_31_pass_and_duplicates_are_rejected():
    # devices with their own data file may use a node-derived id (fedkd.client.node.partition_id)
    strategy = _discovery(
        {("query", 1): {keys.PARTITION_ID: 123_456_789}, ("query", 3): {keys.PARTITION_ID: 2}},
        grid_cls=DeploymentLikeGrid,
        n=5,
    )
    assert sorted(strategy.node_of) == [0, 4, 123_456_789]
    assert _kinds(strategy.rejections) == {2: "duplicate_partition"}
    reasons = {r["reason"] for r in strategy.rejections}
    assert reasons == {"partition 2 is claimed by nodes [1002, 1003]; all claims rejected"}
    assert len(strategy.rejections) == 2


# ---------------------------------------------------------------- evaluate and baseline
def test_hostile_evaluate_and_baseline_replies_are_rejected(tmp_path):
    cfg = load_config(TINY, ["num_clients=6", "strategy.fraction=0.5"])
    probe = FedMD(cfg, cfg.data.proxy_size, 10)
    probe.node_of = {p: p for p in range(6)}
    trained = probe.sample_partitions(1, 0.5, tag=3)
    evaluated = [p for p in range(6) if p not in trained]
    liar, big, small = evaluated[0], trained[0], trained[1]
    edits = {
        ("evaluate", liar): {keys.TEST_ACCURACY: 1e9},
        ("train", big): {keys.TEST_ACCURACY: 1.5},
        ("query.local_only", small): {keys.LOCAL_ONLY_ACCURACY: -0.5},
        ("query.local_only", liar): {keys.NUM_EXAMPLES: lambda m: m[keys.NUM_EXAMPLES] + 3},
    }
    result = _run(
        tmp_path,
        Tampering(edits),
        ["num_clients=6", "strategy.fraction=0.5", "rounds=1", "strategy.name=fedmd"],
    )
    row = result.metrics[0]
    assert _kinds(row["rejections"]) == {big: "out_of_range", liar: "out_of_range"}
    assert "'test-accuracy' = 1.5" in _reason(row["rejections"], big)
    assert row["replies_ok"] == 2 and row["evaluated"] == 5  # 2 trained + 3 honest evaluated
    base = [r for r in result.summary["rejections"] if r["round"] == "baseline"]
    assert _kinds(base) == {small: "out_of_range", liar: "inconsistent_size"}
    assert "'local-only-accuracy' = -0.5" in _reason(base, small)
    clients = {c["client"]: c for c in json.loads((tmp_path / "clients.json").read_text())}
    assert clients[liar]["final_accuracy"] is None  # its lie was dropped, nothing else known
    assert 0 <= clients[big]["final_accuracy"] <= 1  # from its (honest) evaluate reply
    local = {p: c["local_only_accuracy"] for p, c in clients.items()}
    assert local[small] is None and local[liar] is None
    good = [a for a in local.values() if a is not None]
    assert len(good) == 4 and all(0 <= a <= 1 for a in good)
    assert result.summary["baselines"]["local_only_accuracy_mean"] == pytest.approx(np.mean(good))
    assert 0 <= result.summary["final"]["student_accuracy_mean"] <= 1


# ---------------------------------------------------------------- too few valid replies
def test_a_round_with_too_few_valid_replies_stops_the_run_and_keeps_earlier_rounds(tmp_path):
    with pytest.raises(RunFailed) as err:
        _run(tmp_path, Tampering(raise_on=("train", 2)), ["rounds=3"])
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("round 2 train: only 0 of 4 replies were valid")
    assert "strategy.min_valid_fraction=0.5 needs 2" in line
    assert "client_error x4" in line and "hostile client 0 refuses round 2" in line
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1] and rows[0]["replies_ok"] == 4
    assert not (tmp_path / "summary.json").exists()


def test_an_all_failing_baseline_fails_the_run(tmp_path):
    with pytest.raises(RunFailed, match=r"^local-only baseline: only 0 of 4 replies were valid"):
        _run(tmp_path, Tampering(raise_on=("query.local_only", None)), ["rounds=1"])


def test_min_valid_fraction_thresholds():
    cfg = load_config(TINY, ["strategy.min_valid_fraction=0.3"])
    strategy = FedMD(cfg, cfg.data.proxy_size, 10)
    strategy._require_valid(1, "round 1 train", 3, 10)  # 0.3 x 10 = 3 (not 3.0000000004)
    with pytest.raises(RunFailed, match="only 2 of 10 replies were valid.*needs 3"):
        strategy._require_valid(1, "round 1 train", 2, 10)
    zero = FedMD(load_config(TINY, ["strategy.min_valid_fraction=0"]), 400, 10)
    zero._require_valid(1, "round 1 train", 0, 10)  # no per-round check at 0
    with pytest.raises(RunFailed, match="needs 1"):
        zero._require_valid("baseline", "local-only baseline", 0, 10, floor=True)
    for bad in ("-0.1", "1.5"):
        with pytest.raises(Exception, match="min_valid_fraction"):
            load_config(TINY, [f"strategy.min_valid_fraction={bad}"])


def test_min_valid_fraction_zero_still_fails_a_run_without_any_valid_train_reply(tmp_path):
    with pytest.raises(RunFailed, match=r"^no train reply was valid in rounds 1-1; .*client_error"):
        _run(
            tmp_path,
            Tampering(raise_on=("train", None)),
            ["rounds=1", "strategy.min_valid_fraction=0", "baselines.local_only=false"],
        )


RAISING_LOSS = textwrap.dedent(
    """
    import sys
    import fedkd
    from fedkd.cli import main

    @fedkd.register_loss("test_raises")
    def raises(student_logits, teacher_logits, temperature):
        raise RuntimeError("this loss always fails")

    sys.argv = ["fedkd", *sys.argv[1:]]
    main()
    """
)


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    return [line for line in out.splitlines() if line.startswith("error:")]


def test_cli_run_where_every_reply_fails_exits_1_with_one_line(tmp_path):
    out = tmp_path / "run"
    args = ["run", str(TINY), "--out", str(out), "--set", "distill.loss=test_raises"]
    proc = subprocess.run(
        [sys.executable, "-c", RAISING_LOSS, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = _error_lines(proc)
    assert len(errors) == 1, proc.stdout + proc.stderr
    assert "round 1 train: only 0 of 4 replies were valid" in errors[0]
    assert "client_error x4" in errors[0] and "this loss always fails" in errors[0]
    assert (out / "metrics.jsonl").read_text() == "" and not (out / "summary.json").exists()


def test_cli_max_reply_bytes_1_rejects_everything_and_exits_1(tmp_path):
    proc = subprocess.run(
        fedkd_cmd(
            "run", str(TINY), "--out", str(tmp_path / "run"), "--set", "strategy.max_reply_bytes=1"
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = _error_lines(proc)
    assert len(errors) == 1, proc.stdout + proc.stderr
    assert "discovery: only 0 of 4 replies were valid" in errors[0]
    assert "oversized x4" in errors[0] and "exceeds the 1-byte limit" in errors[0]
    # the logged warning carries the level once (logging's own "WARNING:fedkd:" prefix not)
    assert "rejected 4 replies" in proc.stderr and "WARNING:fedkd" not in proc.stderr


# ---------------------------------------------------------------- slow clients
def test_a_slow_client_times_out_alone(tmp_path):
    # one worker: partition 0 is first and holds it past its deadline; before, every reply
    # of its round (and the whole baseline after a hang) counted as no reply. Partition 0
    # then stays busy with that call (no reply) until it ends.
    result = _run(
        tmp_path,
        Tampering(sleep={("train", 0, 1): 7.0}),
        ["rounds=2", "strategy.round_timeout_s=5"],
        workers=1,
    )
    rejections = result.summary["rejections"]
    assert rejections and all(r["partition"] == 0 and r["kind"] == "no_reply" for r in rejections)
    assert result.metrics[0]["replies_ok"] == 3
    assert result.metrics[1]["replies_ok"] >= 3
    clients = {c["client"]: c for c in json.loads((tmp_path / "clients.json").read_text())}
    assert all(clients[p]["local_only_accuracy"] is not None for p in (1, 2, 3))
    assert result.summary["final"]["student_accuracy_mean"] is not None


def test_device_crashes_and_void_rounds_are_not_validation_failures(tmp_path):
    import fedkd
    from fedkd.devices import fails

    # 70% simulated crashes: 2-3 valid replies of 8 per round, under the default 0.5
    crashes = [f"devices.tiers[{i}].failure_prob=0.7" for i in range(3)]
    crashes += [f"devices.tiers[{i}].availability=1.0" for i in range(3)]
    result = fedkd.run(
        EDGE_TINY,
        out=tmp_path / "crashes",
        overrides=[*crashes, "rounds=1", "baselines.local_only=false"],
    )
    row = result.metrics[0]
    crashed = sum(fails(0.7, 0, p, 1) for p in range(8))
    assert crashed == 6 and row["failed"] == crashed
    assert row["replies_ok"] == row["kept"] == 8 - crashed - row["dropped_late"] < 4
    # every reply too late for the deadline: void rounds, not a failed run
    void = fedkd.run(
        EDGE_TINY,
        out=tmp_path / "void",
        overrides=["devices.deadline_s=0.001", "rounds=1", "baselines.local_only=false"],
    )
    assert void.metrics[0]["void"] and void.metrics[0]["replies_ok"] == 0


# ---------------------------------------------------------------- the rules themselves
def test_metric_rules_name_the_metric_the_value_and_the_range():
    acc = next(r for r in EVALUATE_RULES if r.key == keys.TEST_ACCURACY)
    assert acc.check(MetricRecord({keys.TEST_ACCURACY: 0.5})) is None
    assert acc.check(MetricRecord({keys.TEST_ACCURACY: 1.0 + 1e-9})) == (
        "out_of_range",
        "metric 'test-accuracy' = 1.000000001 is outside the allowed range: "
        "a finite number in [0, 1]",
    )
    assert acc.check(MetricRecord({}))[0] == "missing_record"
    assert acc.check(MetricRecord({keys.TEST_ACCURACY: [0.5]}))[0] == "bad_metric"
    size = next(r for r in TRAIN_RULES if r.key == keys.NUM_EXAMPLES)
    assert size.check(MetricRecord({keys.NUM_EXAMPLES: 3.0})) is None  # a whole number
    assert size.check(MetricRecord({keys.NUM_EXAMPLES: 3.5}))[0] == "bad_metric"
    assert MetricRule("x", required=False).check(MetricRecord({})) is None
    assert check_histogram(MetricRecord({keys.CLASS_HISTOGRAM: [1, 2]}), 2, 3) is None
    assert check_histogram(MetricRecord({keys.CLASS_HISTOGRAM: [1.5, 1.5]}), 2, 3) == (
        "bad_histogram",
        "metric 'class-histogram'[0] = 1.5; allowed: an integer >= 0",
    )
