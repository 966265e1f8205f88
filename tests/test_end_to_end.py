"""End-to-end runs of small configs through the real ServerApp, ClientApp and Grid."""

import json
import subprocess
import time

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict

import fedkd
from fedkd import keys
from fedkd.client_app import app as real_client_app
from fedkd.engines.inprocess import InProcessGrid
from fedkd.experiment import run_server
from fedkd.validation import load_config

from .conftest import TINY, fedkd_cmd

CONTRACT = [
    "strategy",
    "num_clients",
    "rounds",
    "seed",
    "final.student_accuracy_mean",
    "final.student_accuracy_p10",
    "final.teacher_accuracy",
    "baselines.local_only_accuracy_mean",
    "communication.bytes_down",
    "communication.bytes_up",
    "wall_time_s",
    "virtual_time_s",
    "privacy.epsilon",
    "privacy.delta",
]


def _get(d, dotted):
    for part in dotted.split("."):
        d = d[part]
    return d


def _strip_times(rows):
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rows]


def test_cli_run_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        fedkd_cmd("run", str(TINY), "--out", str(out)), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    for name in [
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "partition.json",
        "clients.json",
        "accuracy.png",
        "client_accuracy_hist.png",
    ]:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in CONTRACT:
        _get(summary, key)  # present (KeyError otherwise)
    assert (
        summary["strategy"] == "multi_teacher"
        and summary["num_clients"] == 4
        and summary["rounds"] == 2
    )
    assert (
        0
        <= summary["final"]["student_accuracy_p10"]
        <= summary["final"]["student_accuracy_mean"]
        <= 1
    )
    assert summary["privacy"]["epsilon"] is None and summary["virtual_time_s"] is None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2] and all(r["replies_ok"] == 4 for r in rows)
    # bytes: every train message carries P x C float32 targets down and P x C logits up
    p, c = summary["dataset"]["split_sizes"]["proxy"], summary["dataset"]["num_classes"]
    assert rows[0]["bytes_down"] >= 4 * p * c * 4 and rows[0]["bytes_up"] >= 4 * p * c * 4
    assert summary["communication"]["bytes_down"] >= sum(r["bytes_down"] for r in rows)
    partition = json.loads((out / "partition.json").read_text())
    sizes = [cl["size"] for cl in partition["clients"]]
    assert len(sizes) == 4 and min(sizes) >= 4
    assert sum(sizes) == summary["dataset"]["split_sizes"]["clients"]
    assert all(sum(cl["histogram"]) == cl["size"] for cl in partition["clients"])
    assert json.loads((out / "config.json").read_text())["num_clients"] == 4
    assert "students: mean / p10 / min" in proc.stderr + proc.stdout


def test_same_seed_same_metrics_and_workers_do_not_matter(tmp_path):
    a = fedkd.run(TINY, out=tmp_path / "a", overrides=["workers=2"])
    b = fedkd.run(TINY, out=tmp_path / "b", overrides=["workers=2"])
    c = fedkd.run(TINY, out=tmp_path / "c", overrides=["workers=1"])
    d = fedkd.run(TINY, out=tmp_path / "d", overrides=["seed=1"])
    assert _strip_times(a.metrics) == _strip_times(b.metrics) == _strip_times(c.metrics)
    assert _strip_times(a.metrics) != _strip_times(d.metrics)

    def lines(p):
        return _strip_times([json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()])  # noqa: E731

    assert lines(tmp_path / "a") == lines(tmp_path / "b")
    assert a.summary["final"] == b.summary["final"]


def test_npz_dataset_of_another_domain_distills_above_local_only(tmp_path):
    from simulations.make_tabular_npz import make

    x, y = make(4000, seed=3)
    path = tmp_path / "tab.npz"
    np.savez(path, x=x, y=y)
    result = fedkd.run(
        TINY,
        out=tmp_path / "run",
        overrides=[
            f"data.name=npz:{path}",
            "teachers.models=['mlp:width=128']",
            "teachers.epochs=20",
            "student.model=mlp:width=32,depth=1",
            "partition.alpha=0.1",
            "rounds=4",
            "distill.local_epochs=3",
        ],
    )
    s = result.summary
    assert s["dataset"]["input_shape"] == [64] and s["dataset"]["num_classes"] == 10
    assert s["final"]["teacher_accuracy"] > 0.8
    assert s["final"]["student_accuracy_mean"] > s["baselines"]["local_only_accuracy_mean"] + 0.2


class Hostile:
    """Wraps the real ClientApp; partitions 1-7 answer train messages badly, each its own way."""

    def __init__(self):
        self.app = real_client_app

    def __call__(self, msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if msg.metadata.message_type != "train" or pid == 0:
            return self.app(msg, context)
        if pid == 1:
            raise RuntimeError("device crashed mid-round")
        if pid == 7:
            time.sleep(4)  # never answers within strategy.round_timeout_s
            return self.app(msg, context)
        reply = self.app(msg, context)
        metrics = reply.content[keys.METRICS]
        logits = reply.content[keys.REPLY_LOGITS][keys.LOGITS].numpy().copy()
        records = {keys.METRICS: metrics}
        if pid == 2:
            logits[0, 0] = np.nan
        elif pid == 3:
            logits = logits[:, :3]
        elif pid == 4:
            logits = logits.astype(np.int32)
        elif pid == 6:
            records["padding"] = ArrayRecord({"junk": Array(np.zeros(400_000, np.float32))})
        if pid != 5:  # 5 drops the logits record entirely
            records[keys.REPLY_LOGITS] = ArrayRecord({keys.LOGITS: Array(logits)})
        return Message(RecordDict(records), reply_to=msg)


def test_hostile_and_broken_replies_are_rejected_and_rounds_go_on(tmp_path):
    cfg = load_config(
        TINY,
        [
            "num_clients=8",
            "workers=4",
            "strategy.round_timeout_s=2",
            "strategy.max_reply_bytes=1000000",
            "strategy.min_valid_fraction=0.1",  # 1 of 8 train replies is valid by design
            "baselines.local_only=false",
        ],
    )
    grid = InProcessGrid(
        Hostile(), cfg.num_clients, {keys.RUN_CONFIG_JSON: cfg.model_dump_json()}, workers=4
    )
    try:
        result = run_server(grid, cfg, tmp_path)
    finally:
        grid.close()
    rows = result.metrics
    assert [r["replies_ok"] for r in rows] == [1, 1]
    kinds = {r["partition"]: r["kind"] for r in rows[0]["rejections"]}
    assert kinds == {
        1: "client_error",
        2: "non_finite",
        3: "bad_shape",
        4: "bad_dtype",
        5: "missing_record",
        6: "oversized",
        7: "no_reply",
    }
    reasons = " | ".join(r["reason"] for r in rows[0]["rejections"])
    assert "device crashed mid-round" in reasons and "exceeds the 1000000-byte limit" in reasons
    s = result.summary
    # partition 7 is still busy with its late train call when its round's evaluate comes:
    # no reply there either (the grid never runs two calls of one node at once)
    assert s["rejected_replies"] == 16
    assert s["rejected_by_kind"] == {k: 4 if k == "no_reply" else 2 for k in kinds.values()}
    # the run completes; every other client is evaluated at the end, misbehaving ones too
    assert rows[-1]["evaluated"] == 7 and s["final"]["student_accuracy_mean"] is not None
    assert (tmp_path / "summary.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "missing CONFIG argument"),
        (["nope.toml"], "config file not found: nope.toml"),
        ([str(TINY), "--num-clients", "0"], "num_clients=0"),
        ([str(TINY), "--resume", "x"], "give no CONFIG"),
        (["BROKEN"], "is not valid TOML"),
        ([str(TINY), "--rounds", "x"], "rounds='x': Input should be a valid integer"),
        ([str(TINY), "--engine", "warp"], "unknown engine; allowed: inprocess"),
        ([str(TINY), "--set", "distill.alpha=2"], "distill.alpha=2"),
        (
            [str(TINY), "--set", "data.name=npz:/nonexistent.npz"],
            "data.name=npz:/nonexistent.npz: file not found",
        ),
        (
            [str(TINY), "--set", "student.model=cnn:width=0"],
            "student.model='cnn:width=0': argument width='0' of model family 'cnn'",
        ),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    if args == ["BROKEN"]:
        broken = tmp_path / "broken.toml"
        broken.write_text("rounds = [1,\n[data\n")
        args = [str(broken)]
    # in-process (typer's runner; the real entry point is pinned in test_bad_input.py)
    import logging

    from typer.testing import CliRunner

    from fedkd.cli import app

    root = logging.getLogger()
    handlers, level, threads = root.handlers[:], root.level, torch.get_num_threads()
    try:
        res = CliRunner().invoke(
            app, ["run", *args, "--out", str(tmp_path / "o")] if args else ["run"]
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        torch.set_num_threads(threads)
    assert res.exit_code == 2, res.output
    crashed = None if isinstance(res.exception, SystemExit) else res.exception
    assert crashed is None and "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], res.output


@pytest.mark.parametrize(
    "fusion", ["mean_probs", "accuracy_weighted", "era", "median", "trimmed_mean"]
)
def test_every_teacher_fusion_rule_runs_end_to_end(tmp_path, fusion):
    s = fedkd.run(
        TINY,
        out=tmp_path,
        overrides=[f"strategy.fusion={fusion}", "rounds=1", "baselines.local_only=false"],
    ).summary
    assert s["fusion"] == fusion and 0 <= s["final"]["teacher_accuracy"] <= 1
    assert s["final"]["student_accuracy_mean"] is not None
