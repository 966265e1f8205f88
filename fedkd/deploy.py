"""Deployment helpers: TLS certificates and SuperNode keys (``cryptography``), commands.

``fedkd deploy init`` writes, under one folder:

* ``certs/ca.crt``, ``certs/ca.key``: a private certificate authority;
* ``certs/server.crt``, ``certs/server.key``: the SuperLink's certificate, with every
  ``--host`` (IP address or DNS name) as subjectAltName;
* ``keys/<device>``, ``keys/<device>.pub``: one ECDSA P-384 key pair per device, in
  OpenSSH format (what ``ssh-keygen -t ecdsa -b 384`` writes), for SuperNode authentication;
* ``flwr-home/config.toml``: a Flower CLI connection to the SuperLink over TLS;

and prints the SuperLink, registration, SuperNode and ``flwr run`` commands.

Files are written defensively: the output folder must be new or empty (``force=True``
replaces an earlier ``deploy init``), it must not be a symbolic link, every file is created
with ``O_CREAT | O_EXCL | O_NOFOLLOW`` relative to an already opened folder (so a planted
link is never followed), private keys are created with mode 0600 and folders with 0700
(no window with wider modes), and TOML is written with ``tomli_w``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import re
import shlex
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedkd.errors import FedkdInputError

#: Entries ``init_deployment`` writes directly under its output folder.
GENERATED = ("certs", "keys", "flwr-home")
#: Most device key pairs one ``deploy init`` writes.
MAX_DEVICES = 10_000

_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CONNECTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_HOSTS_ALLOWED = (
    "allowed: an IPv4 or IPv6 address (no zone id) or a DNS name of dot-separated labels of "
    "1-63 letters, digits and inner '-', at most 253 characters"
)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC


class DeployError(FedkdInputError):
    """A ``fedkd deploy`` input (flag, folder, key file) the user must fix."""


# ----------------------------------------------------------------- input checks


def check_host(host: str) -> str:
    """Validate one ``--host``: an IP address or an RFC 1123 DNS name.

    Parameters
    ----------
    host
        What the devices dial to reach the SuperLink.

    Returns
    -------
    str
        The host, IP addresses in canonical form (``::1``, not ``0:0::1``).

    Raises
    ------
    DeployError
        For anything else (spaces, quotes, control characters, zone ids, ``0.0.0.0``, ...),
        naming ``--host``, the value and what is allowed.

    """
    if not isinstance(host, str):
        raise DeployError(f"--host={host!r}: not a string; {_HOSTS_ALLOWED}")
    if "%" not in host:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            if ip.is_unspecified:
                raise DeployError(
                    f"--host={host!r}: the unspecified address is what the SuperLink listens "
                    "on, not an address devices can dial; give the server's own address"
                )
            return str(ip)
    labels = host.split(".")
    if (
        0 < len(host) <= 253
        and all(_DNS_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # '1.2.3' or '010.0.0.1': a malformed IPv4, not a name
    ):
        return host
    raise DeployError(f"--host={host!r}: not an IP address or DNS name; {_HOSTS_ALLOWED}")


def check_port(port: int) -> int:
    """Validate a TCP port (1-65535); raise :class:`DeployError` naming ``--port``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise DeployError(f"--port={port!r}: allowed an integer 1-65535")
    return port


def check_devices(count: int) -> int:
    """Validate a number of devices (1-:data:`MAX_DEVICES`), naming ``--devices``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise DeployError(f"--devices={count!r}: need at least 1 device (allowed 1-{MAX_DEVICES})")
    if count > MAX_DEVICES:
        raise DeployError(f"--devices={count!r}: allowed 1-{MAX_DEVICES}")
    return count


def check_connection(name: str) -> str:
    """Validate a Flower connection name (it becomes a ``flwr`` argument)."""
    if not _CONNECTION.fullmatch(name):
        raise DeployError(
            f"--connection={name!r}: allowed 1-64 letters, digits, '_' and '-', starting with a "
            "letter or digit"
        )
    return name


def _check_devices_names(devices: Sequence[str]) -> list[str]:
    names = list(devices)
    check_devices(len(names))
    for name in names:
        if (
            not isinstance(name, str)
            or not _DEVICE_NAME.fullmatch(name)
            or name.endswith(".pub")
            or set(name) == {"."}
        ):
            raise DeployError(
                f"device name {name!r}: allowed 1-64 letters, digits, '_', '.' and '-', "
                "starting with a letter or digit, not ending in '.pub'"
            )
    if len(set(names)) != len(names):
        raise DeployError(f"device names {names!r}: each name must be unique")
    return names


def address(host: str, port: int) -> str:
    """``host:port`` as Flower dials it (IPv6 in brackets: ``[::1]:9092``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ----------------------------------------------------------------- certificates and keys


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedkd"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(days: int = 365) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed certificate authority (ECDSA P-384)."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedkd CA"))
        .issuer_name(_name("fedkd CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, hosts: list[str], days: int = 365
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate signed by the CA, valid for every host in ``hosts``.

    Every host goes through :func:`check_host`. Hosts that are IP addresses become
    ``IPAddress`` subjectAltNames, the others ``DNSName``; TLS clients check the address
    they dial against these.
    """
    if not hosts:
        raise DeployError("--host: give at least one host (IP address or DNS name)")
    hosts = list(dict.fromkeys(check_host(h) for h in hosts))
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def make_device_key() -> tuple[bytes, bytes]:
    """An ECDSA P-384 key pair in OpenSSH format: ``(private, public)`` bytes."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public + b"\n"


def fingerprint(public_openssh: bytes) -> str:
    """``SHA256:...`` fingerprint of an OpenSSH public key line, as ``ssh-keygen -l`` prints."""
    blob = base64.b64decode(public_openssh.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# ----------------------------------------------------------------- file system, no links


def _open_dir(name: str | Path, dir_fd: int | None = None) -> int:
    """Open a folder without following a link in its last component."""
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _mkdir_private(name: str, dir_fd: int) -> int:
    """Create folder ``name`` (mode 0700) inside ``dir_fd`` and open it, without links."""
    os.mkdir(name, mode=0o700, dir_fd=dir_fd)
    return _open_dir(name, dir_fd)


def write_new_file(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Create file ``name`` inside the open folder ``dir_fd`` with ``mode`` from the start.

    ``O_CREAT | O_EXCL | O_NOFOLLOW``: an existing file or a (planted) symbolic link at
    ``name`` raises :class:`FileExistsError` and is left untouched; nothing is followed.
    """
    fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
    with open(fd, "wb", closefd=True) as f:
        f.write(data)


def _find_link(dir_fd: int, name: str, rel: str) -> str | None:
    """The first symbolic link at or under ``name`` (relative path), or None."""
    st = os.lstat(name, dir_fd=dir_fd)
    if stat.S_ISLNK(st.st_mode):
        return rel
    if not stat.S_ISDIR(st.st_mode):
        return None
    fd = _open_dir(name, dir_fd)
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                found = _find_link(fd, entry.name, f"{rel}/{entry.name}")
                if found:
                    return found
    finally:
        os.close(fd)
    return None


def _prepare_root(out: Path, force: bool) -> int:
    """Create or check the output folder; return an open descriptor of it."""
    shown = f"--out={str(out)!r}"
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        try:
            os.mkdir(out, mode=0o700)
        except FileNotFoundError:
            raise DeployError(
                f"{shown}: its parent folder does not exist; create it first"
            ) from None
        except OSError as err:
            raise DeployError(f"{shown}: cannot create the folder: {err.strerror}") from None
    except OSError as err:
        raise DeployError(f"{shown}: cannot read: {err.strerror}") from None
    else:
        if stat.S_ISLNK(st.st_mode):
            raise DeployError(
                f"{shown}: is a symbolic link; give the real folder (links are not followed)"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise DeployError(f"{shown}: exists and is not a folder")
    try:
        fd = _open_dir(out)
    except OSError as err:
        raise DeployError(f"{shown}: cannot open the folder: {err.strerror}") from None
    try:
        entries = sorted(os.listdir(fd))
        if entries and not force:
            listed = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise DeployError(
                f"{shown}: folder is not empty ({listed}); pass --force to replace an earlier "
                "'fedkd deploy init' there, or choose a new folder"
            )
        foreign = [e for e in entries if e not in GENERATED]
        if foreign:
            raise DeployError(
                f"{shown}: holds {foreign[0]!r}, which 'fedkd deploy init' does not write; "
                f"--force only replaces {', '.join(GENERATED)}: move it away or choose a new folder"
            )
        for entry in entries:
            link = _find_link(fd, entry, entry)
            if link:
                raise DeployError(
                    f"{shown}: holds a symbolic link {link!r}; refusing to replace a folder with "
                    "links in it (remove the link yourself)"
                )
        for entry in entries:
            if stat.S_ISDIR(os.lstat(entry, dir_fd=fd).st_mode):
                shutil.rmtree(entry, dir_fd=fd)
            else:
                os.unlink(entry, dir_fd=fd)
    except DeployError:
        os.close(fd)
        raise
    except OSError as err:
        os.close(fd)
        where = f" ({err.filename})" if err.filename else ""
        raise DeployError(f"{shown}: cannot clear the folder{where}: {err.strerror}") from None
    return fd


# ----------------------------------------------------------------- the deployment folder


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
    names = _check_devices_names(devices)
    out = Path(out)
    root_fd = _prepare_root(out, force)
    root = Path(os.path.realpath(out))
    connection = address(hosts[0], port)
    current = root
    try:
        ca_key, ca_cert = make_ca()
        server_key, server_cert = make_server_cert(ca_key, ca_cert, hosts)
        current = root / "certs"
        certs_fd = _mkdir_private("certs", root_fd)
        try:
            pem = serialization.Encoding.PEM
            write_new_file(certs_fd, "ca.crt", ca_cert.public_bytes(pem))
            write_new_file(certs_fd, "ca.key", _pem_key(ca_key), mode=0o600)
            write_new_file(certs_fd, "server.crt", server_cert.public_bytes(pem))
            write_new_file(certs_fd, "server.key", _pem_key(server_key), mode=0o600)
        finally:
            os.close(certs_fd)
        current = root / "keys"
        keys_fd = _mkdir_private("keys", root_fd)
        device_keys = {}
        try:
            for name in names:
                private, public = make_device_key()
                write_new_file(keys_fd, name, private, mode=0o600)
                write_new_file(keys_fd, f"{name}.pub", public)
                device_keys[name] = root / "keys" / name
        finally:
            os.close(keys_fd)
        current = root / "flwr-home"
        home_fd = _mkdir_private("flwr-home", root_fd)
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
