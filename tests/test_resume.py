"""Resume: a run killed with SIGKILL mid-round and resumed ends exactly as an uninterrupted
run; checkpoints cannot run code; a resume refuses a changed config, does nothing on a
finished run, and one process at a time holds a run directory."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import pickle
import random
import shutil
import signal
import subprocess
import time
from collections import OrderedDict, defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

import fedkd
from fedkd.checkpoint import latest_checkpoint, rng_states, save_checkpoint, set_rng_states
from fedkd.errors import ConfigError
from fedkd.state_store import ClientStateStore

from .conftest import TINY, fedkd_cmd, without_keys

# times, and whether teachers came from the cache (the first run trained them)
TIME_KEYS = {"round_time_s", "wall_time_s", "cached"}
OVERRIDES = [
    "rounds=5",
    "strategy.name=hybrid",
    "distill.local_epochs=3",
    "baselines.local_only=false",
]


def _strip(obj):
    return without_keys(obj, TIME_KEYS)


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


# --------------------------------------------------------------------------------------
# checkpoint format: nothing in a run directory can run code; unknown types fail at save
# --------------------------------------------------------------------------------------


class _Evil:
    """Unpickling this creates ``marker``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _interrupted_run(out: Path, rounds: int, after: int = 1) -> Path:
    """A run directory killed (in-process) after round ``after`` of ``rounds``."""

    def stop(event, info):
        if event == "round" and info["round"] >= after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fedkd.run(
            TINY,
            out=out,
            overrides=[f"rounds={rounds}", "baselines.local_only=false"],
            progress=stop,
        )
    assert [p.name for p in (out / "checkpoint").iterdir()] == [f"server-r{after}.npz"]
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (2 rounds, hybrid: its checkpoint holds a consensus)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    fedkd.run(TINY, out=out, overrides=["strategy.name=hybrid", "baselines.local_only=false"])
    return out


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory):
    """A run of 400 rounds stopped after round 1 (a resume of it runs for a long while)."""
    return _interrupted_run(tmp_path_factory.mktemp("unfinished") / "run", rounds=400)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _one_line_error(res, *needles: str) -> None:
    out = res.stderr if isinstance(res.stderr, str) else res.stderr.decode()
    assert res.returncode == 2, out
    assert "Traceback" not in out, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for needle in needles:
        assert needle in lines[0], lines[0]


def _cli(*args: str):
    """The CLI in this process (exit code, stderr); hostile payloads would run here too."""
    from typer.testing import CliRunner

    from fedkd.cli import app

    res = CliRunner().invoke(app, list(args))
    res.returncode = res.exit_code  # same shape as subprocess results
    return res


def _hostile_files(marker: Path) -> dict[str, bytes]:
    """Checkpoint file contents that run code (create ``marker``) if loaded with pickle."""
    buf = io.BytesIO()
    torch.save({"round": 2, "strategy": _Evil(marker)}, buf)
    torch_zip = buf.getvalue()
    # a real .npz with fedkd's meta and tree, whose array member is a pickled object array
    tree = {"$": "ndarray", "ref": "a0"}
    meta = {"format": "fedkd-checkpoint", "version": 1, "round": 2, "config_sha256": "x"}
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(marker)
    buf = io.BytesIO()
    np.savez(
        buf,
        meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
        tree=np.frombuffer(json.dumps(tree).encode(), np.uint8),
        a0=evil,
    )
    return {
        "server-r2.npz:torch-zip": torch_zip,
        "server-r2.npz:raw-pickle": pickle.dumps(_Evil(marker)),
        "server-r2.npz:object-array": buf.getvalue(),
        "server-r2.pt:old-format": torch_zip,
    }


def test_hostile_payloads_do_run_code_when_unpickled(tmp_path):
    # the payloads below are real attacks: loading them the old way creates the marker
    for i, name in enumerate(_hostile_files(tmp_path / "probe")):
        marker = tmp_path / f"fired{i}"
        data = _hostile_files(marker)[name]
        if name.endswith("object-array"):
            with np.load(io.BytesIO(data), allow_pickle=True) as f:
                f["a0"]
        elif name.endswith("raw-pickle"):
            pickle.loads(data)
        else:
            torch.load(io.BytesIO(data), weights_only=False)
        assert marker.exists(), name


@pytest.mark.parametrize("variant", ["torch-zip", "raw-pickle", "object-array", "old-format"])
def test_crafted_checkpoint_is_refused_and_never_runs(finished, tmp_path, variant):
    run = _copy(finished, tmp_path / "run")
    marker = tmp_path / "PWNED"
    name, data = next((k, v) for k, v in _hostile_files(marker).items() if k.endswith(variant))
    for p in (run / "checkpoint").iterdir():
        p.unlink()
    (run / "checkpoint" / name.split(":")[0]).write_bytes(data)
    before = (run / "summary.json").read_bytes()

    _one_line_error(_cli("run", "--resume", str(run)), "checkpoint")
    _one_line_error(_cli("attack", str(run), "--reference-epochs", "1"), "checkpoint")
    with pytest.raises(ConfigError, match="checkpoint"):
        fedkd.run(resume=run)
    assert not marker.exists()
    assert (run / "summary.json").read_bytes() == before
    assert not (run / "attack.json").exists()


def test_crafted_checkpoint_refused_by_the_real_command_line(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    marker = tmp_path / "PWNED"
    (run / "checkpoint" / "server-r2.npz").write_bytes(
        _hostile_files(marker)["server-r2.npz:torch-zip"]
    )
    for args in (("run", "--resume", str(run)), ("attack", str(run))):
        res = subprocess.run(fedkd_cmd(*args), capture_output=True, text=True, timeout=120)
        _one_line_error(res, "not a readable fedkd checkpoint")
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_truncated_checkpoint_is_one_line(finished, tmp_path, keep):
    run = _copy(finished, tmp_path / "run")
    path = run / "checkpoint" / "server-r2.npz"
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:cut])
    _one_line_error(_cli("run", "--resume", str(run)), str(path))


def test_checkpoint_round_trip_keeps_every_type(tmp_path):
    from flwr.app import ArrayRecord

    from fedkd.traffic import Traffic

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    random.seed(3)
    np.random.seed(4)
    payload = {
        "int_keys": {1000: 0.25, 1001: 1},
        "dollar": {"$": 1, "$x": [None, True]},
        "floats": [0.1, -0.0, float("nan"), float("inf"), -float("inf"), 1e308],
        "np_scalars": [np.float32(1.5), np.int64(-3), np.bool_(True), np.float64(2.0)],
        "containers": (set([3, 1]), frozenset({"a"}), (1, ("x", None)), []),
        "ordered": OrderedDict([("b", 1), ("a", 2)]),
        "arrays": [np.arange(6, dtype=np.int16).reshape(2, 3), np.zeros((0, 10), np.float32)],
        "tensors": [
            torch.randn(2, 2).to(torch.bfloat16),
            torch.tensor(True),
            torch.tensor(3.0),
            torch.arange(4).reshape(2, 2).t(),  # not contiguous
        ],
        "blob": b"\x00\x01pickle?",
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "weights": ArrayRecord(model.state_dict()),
        "traffic": Traffic(down={"train": 5}, up={"train": 7}),
        "rng": rng_states(),
    }
    save_checkpoint(tmp_path, 3, payload, config_sha256="abc")
    loaded = latest_checkpoint(tmp_path)
    assert loaded.pop("round") == 3 and loaded.pop("config_sha256") == "abc"
    _assert_same(loaded, payload)
    # the RNG states restore the same draws
    set_rng_states(payload["rng"])
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_states(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want
    # the optimizer state loads into a fresh optimizer and steps identically
    fresh = torch.optim.Adam(model.parameters(), lr=1e-2)
    fresh.load_state_dict(loaded["opt"])
    assert fresh.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def _assert_same(got, want, where="payload"):
    from flwr.app import ArrayRecord

    assert type(got) is type(want), f"{where}: {type(got)} != {type(want)}"
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            _assert_same(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, set | frozenset):
        assert got == want, where
    elif isinstance(want, np.ndarray | np.generic):
        assert got.dtype == want.dtype and np.array_equal(got, want), where
    elif isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and torch.equal(got, want), where
    elif isinstance(want, ArrayRecord):
        assert list(got) == list(want), where
        for k in want:
            g, w = got[k], want[k]
            assert (g.dtype, tuple(g.shape), g.stype, g.data) == (
                w.dtype,
                tuple(w.shape),
                w.stype,
                w.data,
            ), f"{where}[{k}]"
    elif isinstance(want, float) and want != want:
        assert got != got, where
    elif dataclasses.is_dataclass(want):
        _assert_same(dataclasses.asdict(got), dataclasses.asdict(want), where)
    else:
        assert got == want, where
        if isinstance(want, float):
            assert math.copysign(1, got) == math.copysign(1, want), where


@pytest.mark.parametrize(
    "value",
    [
        object(),
        defaultdict(int),
        lambda: 1,
        np.array([object()], dtype=object),
        torch.nn.Parameter(torch.zeros(1)),
        {1.5: "float key"},
        {(1, 2): "tuple key"},
        datetime.now(),
        Path("x"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_unknown_types_fail_at_save_time(tmp_path, value):
    with pytest.raises(TypeError, match=r"checkpoint: .*payload\.strategy\.bad"):
        save_checkpoint(tmp_path, 1, {"strategy": {"bad": value}}, config_sha256="x")
    assert not (tmp_path / "checkpoint").exists() or not any((tmp_path / "checkpoint").iterdir())


def test_no_pickle_loader_on_run_directories():
    # every load of a file in fedkd/ and strategies/ refuses pickles explicitly
    root = Path(__file__).resolve().parents[1]
    for path in [*root.joinpath("fedkd").rglob("*.py"), *root.joinpath("strategies").rglob("*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if "torch.load(" in code:
                assert "weights_only=True" in code, f"{path}:{n}: {line.strip()}"
            if "np.load(" in code:
                assert "allow_pickle=False" in code, f"{path}:{n}: {line.strip()}"
            assert "pickle.load" not in code, f"{path}:{n}: {line.strip()}"


# --------------------------------------------------------------------------------------
# resume refuses a changed config, is a no-op on a finished run, one process per directory
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num_clients", 5),
        ("seed", 1),
        ("rounds", 3),
        ("strategy.name", "dsfl"),
        ("distill.loss", "mutual"),
    ],
)
def test_resume_refuses_an_edited_config(finished, unfinished, tmp_path, key, value):
    for src in (finished, unfinished):
        run = _copy(src, tmp_path / src.parent.name)
        path = run / "config.json"
        data = json.loads(path.read_text())
        section, _, name = key.rpartition(".")
        (data[section] if section else data)[name] = value
        path.write_text(json.dumps(data, indent=2))
        before = _snapshot(run)
        _one_line_error(_cli("run", "--resume", str(run)), str(run), "config.json was changed")
        with pytest.raises(ConfigError, match="config.json was changed"):
            fedkd.run(resume=run)
        assert _snapshot(run) == before


def test_resume_accepts_the_same_config_rewritten(unfinished, tmp_path):
    # the digest is of the resolved config, not the file's bytes: reformatting is fine
    run = _copy(unfinished, tmp_path / "run")
    data = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(data))
    from fedkd.api import finished_run

    assert finished_run(run) is None  # checked, not finished, not refused


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_resume_of_a_finished_run_does_nothing(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    before = _snapshot(run)
    assert "summary.json" in before and "checkpoint/server-r2.npz" in before
    res = subprocess.run(
        fedkd_cmd("run", "--resume", str(run)), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == f"run {run} already finished all 2 rounds; nothing to do"
    assert _snapshot(run) == before
    again = fedkd.run(resume=run)
    assert again.summary == json.loads(before["summary.json"][0])
    assert len(again.metrics) == 2
    assert _snapshot(run) == before


def _lock_pid(run: Path) -> str:
    try:
        return (run / ".fedkd.lock").read_text().strip()
    except FileNotFoundError:
        return ""


def test_two_resumes_of_one_directory(unfinished, tmp_path):
    run = _copy(unfinished, tmp_path / "run")
    (run / ".fedkd.lock").unlink()  # left by the run that made it; the new holder writes its own
    first = subprocess.Popen(
        fedkd_cmd("run", "--resume", str(run)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while _lock_pid(run) != str(first.pid):
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first resume never took the lock"
            time.sleep(0.05)
        second = subprocess.run(
            fedkd_cmd("run", "--resume", str(run)), capture_output=True, text=True, timeout=120
        )
        _one_line_error(second, f"is locked by another fedkd process (pid {first.pid})")
        # a fresh run into the directory is stopped by the lock too, before it deletes anything
        res = _cli("run", str(TINY), "--out", str(run), "--overwrite")
        _one_line_error(res, f"is locked by another fedkd process (pid {first.pid})")
        assert (run / "config.json").is_file() and (run / "checkpoint").is_dir()
        assert first.poll() is None, "the first resume should still be running"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        first.stderr.close()
    # the kill released the lock: the directory can be resumed again (here: refused cleanly
    # only for a real reason, never for a stale lock file)
    from fedkd.results import RunDirLock

    with RunDirLock(run):
        pass
