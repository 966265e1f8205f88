"""Checks of ``fedkd deploy`` input: hosts, port, device count and names, connection."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from fedkd.errors import FedkdInputError

#: Most device key pairs one ``deploy init`` writes.
MAX_DEVICES = 10_000

_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CONNECTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_HOSTS_ALLOWED = (
    "allowed: an IPv4 or IPv6 address (no zone id) or a DNS name of dot-separated labels of "
    "1-63 letters, digits and inner '-', at most 253 characters"
)


class DeployError(FedkdInputError):
    """A ``fedkd deploy`` input (flag, folder, key file) the user must fix."""


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


def check_devices_names(devices: Sequence[str]) -> list[str]:
    """Validate device names (count, characters, unique), naming the bad one."""
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
