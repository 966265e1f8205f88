"""The shell commands that start a deployed federation (every value shell-quoted)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from fedkd.deploy.folder import Deployment


def _quote(arg: str) -> str:
    """``shlex.quote``, but ``"..."`` for a value with ``'`` and nothing a shell expands there."""
    quoted = shlex.quote(arg)
    if quoted != arg and "'" in arg and not set(arg) & set('"$`\\!'):
        return f'"{arg}"'
    return quoted


def _join(args: Sequence[str]) -> str:
    return " ".join(_quote(a) for a in args)


def commands(dep: Deployment, port: int | None = None) -> list[tuple[str, str]]:
    """``(where, command)`` pairs to start the federation described by ``dep``.

    Every path and value is shell-quoted (``shlex``), so each command pastes into a POSIX
    shell as it is, whatever characters the output folder holds.
    """
    port = dep.port if port is None else port
    c = dep.root / "certs"
    home = f"FLWR_HOME={_quote(str(dep.flwr_home))}"
    lines = [
        (
            "server",
            _join(
                [
                    "flower-superlink",
                    "--ssl-ca-certfile",
                    str(c / "ca.crt"),
                    "--ssl-certfile",
                    str(c / "server.crt"),
                    "--ssl-keyfile",
                    str(c / "server.key"),
                    "--enable-supernode-auth",
                    "--host",
                    "0.0.0.0",
                    "--port",
                    str(port),
                ]
            ),
        ),
        (
            "server",
            _join(["fedkd", "deploy", "register", str(dep.root)]) + "   # = for each device:",
        ),
    ]
    for key in dep.device_keys.values():
        register = ["flwr", "supernode", "register", f"{key}.pub", "fedkd"]
        lines.append(("server", f"{home} {_join(register)}"))
    n = len(dep.device_keys)
    for i, (name, key) in enumerate(dep.device_keys.items()):
        node = [
            "flower-supernode",
            "--superlink",
            dep.address,
            "--root-certificates",
            "ca.crt",
            "--auth-supernode-private-key",
            key.name,
            "--node-config",
            f"partition-id={i} num-partitions={n}",
        ]
        lines.append((name, _join(node) + "  # or --node-config 'data-path=\"/path/to/own.npz\"'"))
    run = [
        "flwr",
        "run",
        ".",
        "fedkd",
        "--stream",
        "--run-config",
        "config='simulations/quickstart.toml' out='runs/deployed'",
    ]
    lines.append(("server", f"{home} {_join(run)}"))
    return lines
