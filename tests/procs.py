"""Start Flower processes for tests and stop exactly those (by process group), never by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flwr_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower CLIs: the venv's bin first on PATH, an isolated FLWR_HOME."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    flwr_home.mkdir(parents=True, exist_ok=True)
    return env


def sigint_default() -> None:
    """``preexec_fn``: SIGINT at its default disposition in the child, as a terminal gives it.

    A shell without job control starts a background job (``pytest ... &``, a CI runner, an
    agent's shell) with SIGINT *ignored*; every child inherits that, and Python then leaves
    SIGINT ignored instead of raising KeyboardInterrupt. A test that sends the child a
    Ctrl-C must not depend on how pytest itself was started.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def catches_sigint(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGINT (bit 2 of SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1)
    return False


def group_alive(pgid: int) -> list[str]:
    """Live (non-zombie) processes in process group ``pgid``."""
    out = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True).stdout
    return [
        line
        for line in out.splitlines()
        if line.split()[0] == str(pgid) and not line.split()[1].startswith("Z")
    ]


class Processes:
    """Processes started in their own sessions; :meth:`stop_all` ends each whole group."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed by the process end
        proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.started.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text()

    def wait_for_port(
        self, port: int, proc: subprocess.Popen, name: str, timeout: float = 60
    ) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                assert proc.poll() is None, f"{name} exited:\n{self.log(name)}"
                time.sleep(0.3)
        raise AssertionError(f"{name} did not open port {port}:\n{self.log(name)}")

    def stop_all(self) -> list[str]:
        """SIGTERM every group, SIGKILL what is left; return what survived (should be [])."""
        for _, proc in reversed(self.started):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 20
        while time.time() < deadline and any(group_alive(p.pid) for _, p in self.started):
            time.sleep(0.3)
        leftover = [line for _, p in self.started for line in group_alive(p.pid)]
        for _, proc in self.started:
            if group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return leftover
