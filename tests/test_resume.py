"""A run killed with SIGKILL mid-round and resumed ends exactly as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import fedkd
from fedkd.state_store import ClientStateStore

from .conftest import TINY, fedkd_cmd

# times, and whether teachers came from the cache (the first run trained them)
TIME_KEYS = {"round_time_s", "wall_time_s", "cached"}
OVERRIDES = [
    "rounds=5",
    "strategy.name=hybrid",
    "distill.local_epochs=3",
    "baselines.local_only=false",
]


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIME_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _rows(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize(
    ("engine", "loss"),
    # mutual: the peers kept on each device must survive the kill as well
    [("inprocess", "response"), ("vectorized", "response"), ("inprocess", "mutual")],
)
def test_kill_9_then_resume_gives_the_uninterrupted_summary(tmp_path, engine, loss):
    over = [*OVERRIDES, f"engine={engine}", f"distill.loss={loss}"]
    full = fedkd.run(TINY, out=tmp_path / "full", overrides=over)

    run_dir = tmp_path / "killed"
    args = ["run", str(TINY), "--out", str(run_dir)]
    for o in over:
        args += ["--set", o]
    proc = subprocess.Popen(
        fedkd_cmd(*args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while _rows(run_dir / "metrics.jsonl") < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        assert _rows(run_dir / "metrics.jsonl") >= 2
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()

    res = subprocess.run(
        fedkd_cmd("run", "--resume", str(run_dir)), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["resumed_after_round"] >= 1
    resumed.pop("resumed_after_round")
    expected = dict(full.summary)
    expected.pop("resumed_after_round")
    assert _strip(resumed) == _strip(json.loads(json.dumps(expected)))
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert _strip(lines) == _strip(json.loads(json.dumps(full.metrics)))


def test_resume_bad_input_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = subprocess.run(
        fedkd_cmd("run", "--resume", str(empty)), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "config.json" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = subprocess.run(
        fedkd_cmd("run", str(TINY), "--resume", str(empty)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "give no CONFIG" in res.stderr


def test_state_store_commits_rounds_and_recovers_from_a_kill(tmp_path):
    from flwr.app import ConfigRecord, RecordDict

    store = ClientStateStore(tmp_path)

    def state(v: int) -> RecordDict:
        return RecordDict({"s": ConfigRecord({"v": v})})

    store.stage(1000, 1, state(1))
    assert store.load(1000)["s"]["v"] == 1  # staged state is visible within the round
    store.commit(1)
    store.stage(1000, 2, state(2))
    store.stage(1001, 2, state(20))
    # killed before round 2 was checkpointed: a fresh store recovers round 1
    again = ClientStateStore(tmp_path)
    again.recover(1)
    assert again.load(1000)["s"]["v"] == 1
    assert len(again.load(1001)) == 0
    assert list(again.pending.iterdir()) == []
    # killed after the round-2 checkpoint but before the commit: roll forward
    store = ClientStateStore(tmp_path)
    store.stage(1000, 2, state(2))
    ClientStateStore(tmp_path).recover(2)
    assert ClientStateStore(tmp_path).load(1000)["s"]["v"] == 2
