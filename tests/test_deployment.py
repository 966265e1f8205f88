"""fedkd's apps on Flower's deployment runtime: a SuperLink and SuperNodes on 127.0.0.1.

Each test starts its processes in their own process groups and stops exactly those,
also when it fails.
"""

import json
import subprocess
import time

import numpy as np
import pytest

from .conftest import ROOT, TINY, fedkd_cmd
from .procs import BIN, Processes, flwr_env, free_port

RUN_OVERRIDES = "num_clients=2;rounds=1;baselines.local_only=false;strategy.wait_for_clients_s=60"


@pytest.fixture
def procs(tmp_path):
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        leftover = p.stop_all()
        assert not leftover, f"processes left behind: {leftover}"


def _flwr_run(env, federation, out):
    run_config = f"config='{TINY}' overrides='{RUN_OVERRIDES}' out='{out}'"
    return subprocess.run(
        ["flwr", "run", str(ROOT), federation, "--stream", "--run-config", run_config],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _check_finished(out):
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clients_answering"] == 2
    assert summary["final"]["student_accuracy_mean"] is not None
    assert summary["final"]["clients_evaluated"] == 2
    return summary


def test_superlink_and_two_supernodes_insecure(tmp_path, procs):
    start = time.time()
    env = flwr_env(tmp_path / "flwr-home")
    port = free_port()
    (tmp_path / "flwr-home" / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    link = procs.start(
        "superlink",
        [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port)],
        env,
    )
    procs.wait_for_port(port, link, "superlink")
    # device 0: a simulated partition; device 1: its own data file (any npz of the same shape)
    own = tmp_path / "device1.npz"
    rng = np.random.default_rng(0)
    np.savez(own, x=rng.normal(size=(60, 40)).astype(np.float32), y=rng.integers(0, 10, 60))
    for i, node_config in enumerate(
        ["partition-id=0 num-partitions=2", f'data-path="{own}" partition-id=1']
    ):
        procs.start(
            f"supernode{i}",
            [
                str(BIN / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{port}",
                "--port",
                str(free_port()),
                "--node-config",
                node_config,
            ],
            env,
        )
    time.sleep(1)
    for i in (0, 1):
        assert procs.started[i + 1][1].poll() is None, procs.log(f"supernode{i}")
    out = tmp_path / "out"
    proc = _flwr_run(env, "local", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = _check_finished(out)
    partition = json.loads((out / "partition.json").read_text())
    sizes = {c["client"]: c["size"] for c in partition["clients"]}
    assert sizes[1] == 60  # the device reported its own file's size
    assert time.time() - start < 120
    assert summary["rejected_replies"] == 0


def test_tls_and_supernode_authentication(tmp_path, procs):
    port = free_port()
    dep = tmp_path / "deploy"
    made = subprocess.run(
        fedkd_cmd(
            "deploy",
            "init",
            "--out",
            str(dep),
            "--host",
            "127.0.0.1",
            "--devices",
            "3",
            "--port",
            str(port),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert "flower-superlink --ssl-ca-certfile" in made.stdout
    assert (dep / "keys" / "device-0.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    env = flwr_env(dep / "flwr-home")
    certs = dep / "certs"
    link = procs.start(
        "superlink",
        [
            str(BIN / "flower-superlink"),
            "--ssl-ca-certfile",
            str(certs / "ca.crt"),
            "--ssl-certfile",
            str(certs / "server.crt"),
            "--ssl-keyfile",
            str(certs / "server.key"),
            "--enable-supernode-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env,
    )
    procs.wait_for_port(port, link, "superlink")
    # device-2 stays unregistered: move its public key out of the folder `register` reads
    (dep / "keys" / "device-2.pub").rename(tmp_path / "device-2.pub")
    reg = subprocess.run(
        fedkd_cmd("deploy", "register", str(dep)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reg.returncode == 0, reg.stdout + reg.stderr
    assert reg.stdout.count(": registered") == 2, reg.stdout
    listed = subprocess.run(
        ["flwr", "supernode", "list", "fedkd"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr

    def supernode(i, pid):
        return procs.start(
            f"supernode{i}",
            [
                str(BIN / "flower-supernode"),
                "--superlink",
                f"127.0.0.1:{port}",
                "--root-certificates",
                str(certs / "ca.crt"),
                "--auth-supernode-private-key",
                str(dep / "keys" / f"device-{i}"),
                "--port",
                str(free_port()),
                "--node-config",
                f"partition-id={pid} num-partitions=2",
            ],
            env,
        )

    supernode(0, 0)
    supernode(1, 1)
    intruder = supernode(2, 1)
    assert intruder.wait(timeout=90) != 0
    log = procs.log("supernode2")
    assert "Failed to activate SuperNode" in log and "305" in log
    out = tmp_path / "out"
    proc = _flwr_run(env, "fedkd", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_finished(out)
