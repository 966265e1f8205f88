"""engine = "ray": real Ray actors, on a local instance and on a `ray start --head` cluster.

Every Ray process a test causes is found by the test's own RAY_TMPDIR (a unique folder in
every Ray process's command line) or by the process group it started, and stopped by
PID; nothing is stopped by name.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import fedkd

from ..conftest import ROOT, fedkd_cmd
from ..procs import BIN, Processes, catches_sigint, free_port, sigint_default

EDGE_TINY = ROOT / "tests" / "edge_tiny.toml"
WALL = ("round_time_s", "wall_time_s")


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in WALL} for r in rows]


def _ray_pids(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains ``marker`` (our RAY_TMPDIR)."""
    out = subprocess.run(["ps", "-eww", "-o", "pid=,stat=,args="], capture_output=True, text=True)
    return [
        int(line.split()[0])
        for line in out.stdout.splitlines()
        if marker in line and not line.split()[1].startswith("Z")
    ]


def _session(sid: int) -> list[str]:
    """Live processes of session ``sid`` (Ray's processes, actors included, stay in the
    session of the process that started the local instance)."""
    out = subprocess.run(
        ["ps", "-eww", "-o", "pid=,sid=,stat=,args="], capture_output=True, text=True
    )
    return [
        line
        for line in out.stdout.splitlines()
        if line.split()[1] == str(sid) and not line.split()[2].startswith("Z")
    ]


@pytest.fixture
def ray_tmp():
    # short: Ray's socket paths must stay under 107 bytes
    path = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield path
    for pid in _ray_pids(path):  # anything a failed test left behind, by PID
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def inprocess_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    return fedkd.run(EDGE_TINY, out=out), out


def _env(ray_tmp: str) -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_TMPDIR"] = ray_tmp
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_ray_cluster_started_by_ray_start_head(tmp_path, ray_tmp, inprocess_reference):
    ref, ref_out = inprocess_reference
    procs = Processes(tmp_path)
    port = free_port()
    try:
        head = procs.start(
            "ray-head",
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--block",
                "--port",
                str(port),
                "--node-ip-address",
                "127.0.0.1",
                "--num-cpus",
                "2",
                "--include-dashboard",
                "false",
            ],
            _env(ray_tmp),
        )
        procs.wait_for_port(port, head, "ray-head", timeout=120)
        out = tmp_path / "run"
        run = subprocess.run(
            fedkd_cmd(
                "run",
                str(EDGE_TINY),
                "--engine",
                "ray",
                "--set",
                f"ray.address=127.0.0.1:{port}",
                "--out",
                str(out),
            ),
            capture_output=True,
            text=True,
            timeout=600,
            env=_env(ray_tmp),
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Connecting to existing Ray cluster" in run.stderr  # Ray's own log line
        summary = json.loads((out / "summary.json").read_text())
        assert summary["engine"] == "ray"
        # same seed, same metrics as the in-process engine, round for round and per tier
        assert _rows(out) == _rows(ref_out)
        for name, tier in ref.summary["final"]["by_tier"].items():
            assert summary["final"]["by_tier"][name]["accuracy_mean"] == tier["accuracy_mean"]
        # the driver left the cluster running: the head is still up
        assert head.poll() is None
    finally:
        leftover = procs.stop_all()
    assert leftover == []
    deadline = time.time() + 30
    while _ray_pids(ray_tmp) and time.time() < deadline:
        time.sleep(0.5)
    assert _ray_pids(ray_tmp) == []


def test_local_ray_instance_stops_with_the_run_even_on_ctrl_c(tmp_path, ray_tmp):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        fedkd_cmd("run", str(EDGE_TINY), "--engine", "ray", "--rounds", "50", "--out", str(out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(ray_tmp),
        start_new_session=True,
        preexec_fn=sigint_default,  # pytest may run as a background job (SIGINT ignored)
    )
    try:
        deadline = time.time() + 300
        metrics = out / "metrics.jsonl"
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and metrics.read_text().strip():
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert _ray_pids(ray_tmp), "a local Ray instance should be running"
        assert any("ray::" in line for line in _session(proc.pid)), "actors should be running"
        assert catches_sigint(proc.pid), "the run has no SIGINT handler"
        proc.send_signal(signal.SIGINT)  # Ctrl-C, to the fedkd process only
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for line in _session(proc.pid):  # what outlived it (the test then fails), by PID
            os.kill(int(line.split()[0]), signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err or "interrupted" in (proc.stdout.read() if proc.stdout else "")
    deadline = time.time() + 30
    while _session(proc.pid) and time.time() < deadline:
        time.sleep(0.5)
    assert _session(proc.pid) == [], "Ray processes outlived the run"
    assert _ray_pids(ray_tmp) == []
    # the completed rounds are kept
    assert len(metrics.read_text().splitlines()) >= 1


def test_joining_no_cluster_is_one_line_exit_2(tmp_path, ray_tmp):
    port = free_port()
    run = subprocess.run(
        fedkd_cmd(
            "run",
            str(EDGE_TINY),
            "--engine",
            "ray",
            "--set",
            f"ray.address=127.0.0.1:{port}",
            "--out",
            str(tmp_path / "r"),
        ),
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(ray_tmp),
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "ray.address" in run.stderr and "Traceback" not in run.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
