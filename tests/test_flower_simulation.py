"""The same apps under Flower's own runtime: `flwr run .` against a real SuperLink.

The test starts a ``flower-superlink`` (simulation mode) in its own process group on free
loopback ports, runs the tiny config with ``flwr run . <federation> --stream`` on 4
simulated SuperNodes (Flower's Ray-backed simulation engine), compares the metrics with
the in-process engine, and ends the SuperLink's process group, also when the test fails.
"""

import json
import subprocess

import pytest

import fedkd

from .conftest import ROOT, TINY
from .procs import BIN, Processes, flwr_env, free_port


@pytest.fixture
def superlink(tmp_path):
    env = flwr_env(tmp_path / "flwr-home")
    port = free_port()
    (tmp_path / "flwr-home" / "config.toml").write_text(
        f'[superlink]\ndefault = "fedkdtest"\n\n[superlink.fedkdtest]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    procs = Processes(tmp_path)
    try:
        link = procs.start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--simulation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env,
        )
        procs.wait_for_port(port, link, "superlink")
        yield env
    finally:
        leftover = procs.stop_all()
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

    def strip(rows):
        return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rows]

    # same seed, same clients sampled by partition id, replies fused in partition order:
    # Flower's simulation engine and the in-process engine give identical metrics
    assert strip(flwr_rows) == strip(local.metrics)
    # flwr run must not rewrite the app's pyproject (connections live in FLWR_HOME)
    assert "[tool.flwr.federations]" not in (ROOT / "pyproject.toml").read_text()
