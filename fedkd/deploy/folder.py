"""The deployment folder: :func:`init_deployment` writes it, :func:`public_keys` reads it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedkd.deploy.crypto import make_ca, make_device_key, make_server_cert, pem_key
from fedkd.deploy.inputs import DeployError, address, check_devices_names, check_host, check_port
from fedkd.deploy.safe_files import mkdir_private, prepare_root, write_new_file


@dataclass(frozen=True)
class Deployment:
    """Paths written by :func:`init_deployment`."""

    root: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    device_keys: dict[str, Path]
    flwr_home: Path
    address: str
    port: int = 9092
    hosts: tuple[str, ...] = field(default=())


def init_deployment(
    out: str | Path,
    hosts: list[str],
    devices: list[str],
    port: int = 9092,
    force: bool = False,
) -> Deployment:
    """Write CA, server certificate, device keys and a Flower CLI connection under ``out``.

    Parameters
    ----------
    out
        Output folder: created (mode 0700; its parent must exist) or an existing empty
        folder. It must not be a symbolic link.
    hosts
        What devices dial: IP addresses or DNS names (:func:`check_host`); all become
        subjectAltNames of the server certificate, the first one goes into the connection.
    devices
        One name per device key pair (``keys/NAME``, ``keys/NAME.pub``).
    port
        The SuperLink's port (1-65535).
    force
        Replace an earlier ``deploy init`` in ``out``: its ``certs/``, ``keys/`` and
        ``flwr-home/`` are deleted first, so no stale key survives. Refused when ``out``
        holds anything else or a symbolic link.

    Returns
    -------
    Deployment
        The paths written.

    Raises
    ------
    DeployError
        Bad host, port, device names, or an output folder that is not new/empty, is a link,
        or cannot be written; one line naming the flag and the value.

    """
    if not hosts:
        raise DeployError("--host: give at least one host (IP address or DNS name)")
    hosts = list(dict.fromkeys(check_host(h) for h in hosts))
    check_port(port)
    names = check_devices_names(devices)
    out = Path(out)
    root_fd = prepare_root(out, force)
    root = Path(os.path.realpath(out))
    connection = address(hosts[0], port)
    current = root
    try:
        ca_key, ca_cert = make_ca()
        server_key, server_cert = make_server_cert(ca_key, ca_cert, hosts)
        current = root / "certs"
        _write_certs(root_fd, ca_key, ca_cert, server_key, server_cert)
        current = root / "keys"
        device_keys = _write_device_keys(root_fd, root, names)
        current = root / "flwr-home"
        _write_flwr_home(root_fd, root, connection)
    except FileExistsError as err:
        raise DeployError(
            f"--out={str(out)!r}: {current.name}/{err.filename or ''} appeared while writing "
            "(a file or symbolic link planted there); refusing to write through it"
        ) from None
    except OSError as err:
        raise DeployError(f"--out={str(out)!r}: cannot write {current}: {err.strerror}") from None
    finally:
        os.close(root_fd)
    return Deployment(
        root,
        root / "certs" / "ca.crt",
        root / "certs" / "server.crt",
        root / "certs" / "server.key",
        device_keys,
        root / "flwr-home",
        connection,
        port,
        tuple(hosts),
    )


def _write_certs(
    root_fd: int,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    server_key: ec.EllipticCurvePrivateKey,
    server_cert: x509.Certificate,
) -> None:
    """``certs/``: the CA and the server certificate, the private keys with mode 0600."""
    certs_fd = mkdir_private("certs", root_fd)
    try:
        pem = serialization.Encoding.PEM
        write_new_file(certs_fd, "ca.crt", ca_cert.public_bytes(pem))
        write_new_file(certs_fd, "ca.key", pem_key(ca_key), mode=0o600)
        write_new_file(certs_fd, "server.crt", server_cert.public_bytes(pem))
        write_new_file(certs_fd, "server.key", pem_key(server_key), mode=0o600)
    finally:
        os.close(certs_fd)


def _write_device_keys(root_fd: int, root: Path, names: list[str]) -> dict[str, Path]:
    """``keys/``: one key pair per device; returns each device's private key path."""
    keys_fd = mkdir_private("keys", root_fd)
    device_keys = {}
    try:
        for name in names:
            private, public = make_device_key()
            write_new_file(keys_fd, name, private, mode=0o600)
            write_new_file(keys_fd, f"{name}.pub", public)
            device_keys[name] = root / "keys" / name
    finally:
        os.close(keys_fd)
    return device_keys


def _write_flwr_home(root_fd: int, root: Path, connection: str) -> None:
    """``flwr-home/config.toml``: the Flower CLI connection ``fedkd`` over TLS."""
    home_fd = mkdir_private("flwr-home", root_fd)
    config = {
        "superlink": {
            "default": "fedkd",
            "fedkd": {
                "address": connection,
                "root-certificates": str(root / "certs" / "ca.crt"),
            },
        }
    }
    try:
        write_new_file(home_fd, "config.toml", tomli_w.dumps(config).encode())
    finally:
        os.close(home_fd)


def public_keys(folder: str | Path) -> list[Path]:
    """The device public keys ``deploy register`` sends: ``FOLDER/keys/*.pub``, checked.

    Every key must be a regular file (not a link) holding one OpenSSH ECDSA public key.

    Raises
    ------
    DeployError
        A missing folder, no keys, a link, or a file that is not an ECDSA public key.

    """
    folder = Path(folder)
    shown = f"FOLDER={str(folder)!r}"
    if not folder.is_dir():
        raise DeployError(
            f"{shown}: no such folder; give the folder 'fedkd deploy init --out' wrote"
        )
    keys_dir = folder / "keys"
    if keys_dir.is_symlink():
        raise DeployError(f"{shown}: keys/ is a symbolic link; links are not followed")
    pubs = sorted(keys_dir.glob("*.pub")) if keys_dir.is_dir() else []
    if not pubs:
        raise DeployError(f"no *.pub keys in {keys_dir}; run 'fedkd deploy init' first")
    for pub in pubs:
        st = os.lstat(pub)
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise DeployError(f"{pub}: is {kind}; allowed: regular OpenSSH public key files")
        data = pub.read_bytes() if st.st_size <= 16384 else b""
        try:
            key = serialization.load_ssh_public_key(data.strip())
        except (ValueError, TypeError, IndexError, UnsupportedAlgorithm):
            key = None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise DeployError(
                f"{pub}: not an OpenSSH ECDSA public key (allowed: one line as "
                "'ssh-keygen -t ecdsa' writes; 'fedkd deploy init' writes these)"
            )
    return pubs
