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

Files: :mod:`~fedkd.deploy.inputs` (flag checks), :mod:`~fedkd.deploy.crypto`
(certificates, keys), :mod:`~fedkd.deploy.safe_files` (no-link writes),
:mod:`~fedkd.deploy.folder` (:func:`init_deployment`, :func:`public_keys`),
:mod:`~fedkd.deploy.commands`.
"""

from fedkd.deploy.commands import commands
from fedkd.deploy.crypto import fingerprint, make_ca, make_device_key, make_server_cert
from fedkd.deploy.folder import Deployment, init_deployment, public_keys
from fedkd.deploy.inputs import (
    MAX_DEVICES,
    DeployError,
    address,
    check_connection,
    check_devices,
    check_host,
    check_port,
)
from fedkd.deploy.safe_files import GENERATED, write_new_file

__all__ = [
    "GENERATED",
    "MAX_DEVICES",
    "DeployError",
    "Deployment",
    "address",
    "check_connection",
    "check_devices",
    "check_host",
    "check_port",
    "commands",
    "fingerprint",
    "init_deployment",
    "make_ca",
    "make_device_key",
    "make_server_cert",
    "public_keys",
    "write_new_file",
]
