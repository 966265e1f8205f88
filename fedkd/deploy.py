"""Deployment helpers: TLS certificates and SuperNode keys (``cryptography``), commands.

``fedkd deploy init`` writes, under one folder:

* ``certs/ca.crt``, ``certs/ca.key``: a private certificate authority;
* ``certs/server.crt``, ``certs/server.key``: the SuperLink's certificate, with every
  ``--host`` (IP address or DNS name) as subjectAltName;
* ``keys/<device>``, ``keys/<device>.pub``: one ECDSA P-384 key pair per device, in
  OpenSSH format (what ``ssh-keygen -t ecdsa -b 384`` writes), for SuperNode authentication;
* ``flwr-home/config.toml``: a Flower CLI connection to the SuperLink over TLS;

and prints the SuperLink, registration, SuperNode and ``flwr run`` commands.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


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

    Hosts that parse as IP addresses become ``IPAddress`` subjectAltNames, the others
    ``DNSName``; TLS clients check the address they dial against these.
    """
    if not hosts:
        raise ValueError("give at least one host (IP address or DNS name) for the server")
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


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


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


def init_deployment(
    out: str | Path, hosts: list[str], devices: list[str], port: int = 9092
) -> Deployment:
    """Write CA, server certificate, device keys and a Flower CLI connection under ``out``."""
    root = Path(out).resolve()
    ca_key, ca_cert = make_ca()
    server_key, server_cert = make_server_cert(ca_key, ca_cert, hosts)
    certs = root / "certs"
    _write(certs / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(certs / "ca.key", _pem_key(ca_key), private=True)
    _write(certs / "server.crt", server_cert.public_bytes(serialization.Encoding.PEM))
    _write(certs / "server.key", _pem_key(server_key), private=True)
    device_keys = {}
    for name in devices:
        private, public = make_device_key()
        _write(root / "keys" / name, private, private=True)
        _write(root / "keys" / f"{name}.pub", public)
        device_keys[name] = root / "keys" / name
    address = f"{hosts[0]}:{port}"
    flwr_home = root / "flwr-home"
    _write(
        flwr_home / "config.toml",
        (
            '[superlink]\ndefault = "fedkd"\n\n[superlink.fedkd]\n'
            f'address = "{address}"\nroot-certificates = "{certs / "ca.crt"}"\n'
        ).encode(),
    )
    return Deployment(
        root,
        certs / "ca.crt",
        certs / "server.crt",
        certs / "server.key",
        device_keys,
        flwr_home,
        address,
    )


def commands(dep: Deployment, port: int = 9092) -> list[tuple[str, str]]:
    """``(where, command)`` pairs to start the federation described by ``dep``."""
    c = dep.root / "certs"
    lines = [
        (
            "server",
            f"flower-superlink --ssl-ca-certfile {c / 'ca.crt'} --ssl-certfile "
            f"{c / 'server.crt'} --ssl-keyfile {c / 'server.key'} --enable-supernode-auth "
            f"--host 0.0.0.0 --port {port}",
        ),
    ]
    lines.append(("server", f"fedkd deploy register {dep.root}   # = for each device:"))
    for key in dep.device_keys.values():
        lines.append(
            ("server", f"FLWR_HOME={dep.flwr_home} flwr supernode register {key}.pub fedkd")
        )
    for i, (name, key) in enumerate(dep.device_keys.items()):
        lines.append(
            (
                name,
                f"flower-supernode --superlink {dep.address} --root-certificates ca.crt "
                f"--auth-supernode-private-key {key.name} "
                f'--node-config "partition-id={i} num-partitions={len(dep.device_keys)}"  '
                "# or --node-config 'data-path=\"/path/to/own.npz\"'",
            )
        )
    lines.append(
        (
            "server",
            f"FLWR_HOME={dep.flwr_home} flwr run . fedkd --stream "
            "--run-config \"config='simulations/quickstart.toml' out='runs/deployed'\"",
        )
    )
    return lines
