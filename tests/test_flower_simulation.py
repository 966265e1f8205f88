"""The same apps under Flower's own runtime: `flwr run .` against a real SuperLink.

The test starts a ``flower-superlink`` (simulation mode) in its own process group on free
loopback ports, runs the tiny config with ``flwr run . <federation> --stream`` on 4
simulated SuperNodes (Flower's Ray-backed simulation engine), compares the metrics with
the in-process engine, and ends the SuperLink's process group, also when the test fails.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fedkd

from .conftest import ROOT, TINY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True).stdout
    return [
        line
        for line in out.splitlines()
        if line.split()[0] == str(pgid) and "Z" not in line.split()[1]
    ]


@pytest.fixture
def superlink(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_HOME"] = str(tmp_path / "flwr-home")
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    port = _free_port()
    (tmp_path / "flwr-home").mkdir()
    (tmp_path / "flwr-home" / "config.toml").write_text(
        f'[superlink]\ndefault = "fedkdtest"\n\n[superlink.fedkdtest]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    log = open(tmp_path / "superlink.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(bin_dir / "flower-superlink"),
            "--insecure",
            "--simulation",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--control-api-address",
            f"127.0.0.1:{_free_port()}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "superlink.log").read_text()
                time.sleep(0.5)
        yield env
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        deadline = time.time() + 20
        while _group_alive(proc.pid) and time.time() < deadline:
            time.sleep(0.5)
        leftover = _group_alive(proc.pid)
        if leftover:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        assert not leftover, f"processes left behind: {leftover}"


def test_flwr_run_on_flower_simulation_matches_inprocess(superlink, tmp_path):
    out = tmp_path / "flwr-out"
    run_config = f"config='{TINY}' out='{out}'"
    proc = subprocess.run(
        [
            "flwr",
            "run",
            str(ROOT),
            "fedkdtest",
            "--stream",
            "--federation-config",
            "num-supernodes=4",
            "--run-config",
            run_config,
        ],
        env=superlink,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "summary.json").is_file(), proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clients_answering"] == 4
    assert summary["final"]["student_accuracy_mean"] is not None
    flwr_rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]

    local = fedkd.run(TINY, out=tmp_path / "inprocess")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rows]  # noqa: E731
    # same seed, same clients sampled by partition id, replies fused in partition order:
    # Flower's simulation engine and the in-process engine give identical metrics
    assert strip(flwr_rows) == strip(local.metrics)
    # flwr run must not rewrite the app's pyproject (connections live in FLWR_HOME)
    assert "[tool.flwr.federations]" not in (ROOT / "pyproject.toml").read_text()
