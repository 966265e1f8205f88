"""``fedkd deploy init|register``: certificates, device keys and the commands to deploy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from fedkd.cli.shell import OneLineUsageGroup, fail
from fedkd.errors import FedkdInputError

deploy_app = typer.Typer(
    cls=OneLineUsageGroup,
    no_args_is_help=True,
    help="Certificates, keys and commands for deployment.",
)


@deploy_app.command("init")
def deploy_init(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for certs/, keys/, flwr-home/: new (its parent must exist) or empty; "
            "not a symbolic link.",
        ),
    ] = Path("deploy"),
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="SuperLink IP address or DNS name devices dial (repeatable; default 127.0.0.1).",
        ),
    ] = None,
    devices: Annotated[
        int, typer.Option("--devices", help="Number of device key pairs (1-10000).")
    ] = 2,
    port: Annotated[int, typer.Option("--port", help="SuperLink port (1-65535).")] = 9092,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an earlier 'deploy init' in --out: delete its certs/, keys/ and "
            "flwr-home/ first (no stale key survives).",
        ),
    ] = False,
) -> None:
    """Write a CA, the SuperLink's TLS certificate and one key pair per device; print commands."""
    from fedkd.deploy import check_devices, commands, init_deployment

    hosts = host or ["127.0.0.1"]
    try:
        check_devices(devices)
        dep = init_deployment(
            out, hosts, [f"device-{i}" for i in range(devices)], port, force=force
        )
    except FedkdInputError as err:
        fail(str(err))
    print(
        f"wrote {dep.root}: certs/ (CA, server certificate for {', '.join(dep.hosts)}), "
        f"keys/ ({devices} device{'s' * (devices != 1)}), flwr-home/config.toml"
    )
    print("copy certs/ca.crt and keys/device-I to device I; never copy certs/*.key off the server")
    for where, cmd in commands(dep):
        print(f"[{where}] {cmd}")


@deploy_app.command("register")
def deploy_register(
    folder: Annotated[Path, typer.Argument(help="Folder written by 'fedkd deploy init'.")] = Path(
        "deploy"
    ),
    connection: Annotated[
        str, typer.Option("--connection", help="flwr connection name.")
    ] = "fedkd",
) -> None:
    """Register every device public key under FOLDER/keys with the running SuperLink."""
    from fedkd.deploy import check_connection, fingerprint, public_keys

    try:
        check_connection(connection)
        pubs = public_keys(folder)
    except FedkdInputError as err:
        fail(str(err))
    env = dict(os.environ)
    if "FLWR_HOME" not in env:
        home = (folder / "flwr-home").resolve()
        if not (home / "config.toml").is_file():
            fail(
                f"no flwr-home/config.toml in {folder} and FLWR_HOME is not set; "
                "run 'fedkd deploy init' first or set FLWR_HOME"
            )
        env["FLWR_HOME"] = str(home)
    failed = 0
    for pub in pubs:
        ok, detail = register_key(pub, connection, env)
        failed += not ok
        print(
            f"{pub.name} ({fingerprint(pub.read_bytes())}): "
            f"{'registered' if ok else 'FAILED'} {detail}".rstrip()
        )
    if failed:
        raise typer.Exit(1)


def register_key(pub: Path, connection: str, env: dict[str, str]) -> tuple[bool, str]:
    """``flwr supernode register`` one public key: (ok, flwr's answer as one line)."""
    flwr = Path(sys.executable).parent / "flwr"
    try:
        proc = subprocess.run(
            [str(flwr), "supernode", "register", os.path.abspath(pub), connection],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return False, "no answer within 120 s"
    ok = proc.returncode == 0
    # success: flwr's last line; failure: its error (a boxed panel) as one line
    detail = (proc.stdout.strip().splitlines() or [""])[-1]
    if not ok:
        boxed = proc.stderr.translate(str.maketrans("", "", "\u2502\u256d\u256e\u2570\u256f\u2500"))
        detail = " ".join(boxed.split()) or detail
    return ok, detail
