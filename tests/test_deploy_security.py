"""Attacks on ``fedkd deploy init`` / ``register``: injection, links, modes, stale keys, quoting.

No SuperLink is started here (tests/test_deployment.py does the real deployment); the CLI
runs in-process through typer's CliRunner, except where the real entry point is the point.
"""

import os
import shlex
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from fedkd.cli import app
from fedkd.deploy import (
    DeployError,
    check_host,
    commands,
    fingerprint,
    init_deployment,
    public_keys,
    write_new_file,
)

from .conftest import fedkd_cmd
from .procs import free_port

INJECTED_HOST = '127.0.0.1:9092"\ninsecure = true\n#'


def cli(*args: str):
    return CliRunner().invoke(app, ["deploy", *args])


def assert_one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # not an unexpected exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def read_config(dep_root: Path) -> dict:
    with open(dep_root / "flwr-home" / "config.toml", "rb") as f:
        return tomllib.load(f)


# ----------------------------------------------------------------- 1. host / TOML injection


def test_injected_host_is_refused_naming_flag_and_value(tmp_path):
    out = tmp_path / "d"
    result = cli("init", "--out", str(out), "--host", INJECTED_HOST)
    line = assert_one_line_error(result, "--host=", repr(INJECTED_HOST), "allowed")
    assert "IP" in line and "DNS" in line
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(
    "host",
    [
        INJECTED_HOST,
        "a b",
        "link.example.org\n",
        'x"y',
        "",
        " 127.0.0.1",
        "-lead.example.org",
        "trail-.example.org",
        "a..b",
        "under_score.example",
        "é.example",
        "fe80::1%eth0",
        "fe80::1%a\ninsecure = true",
        "[::1]",
        "127.0.0.1:9092",
        "1.2.3",
        "256.1.1.1",
        "010.0.0.1",
        "0.0.0.0",
        "::",
        "a" * 64 + ".example",
        ".".join(["a" * 63] * 4),  # 255 characters
    ],
)
def test_check_host_rejects(host):
    with pytest.raises(DeployError, match="--host="):
        check_host(host)


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("link.example.org", "link.example.org"),
        ("a-b.c0.example", "a-b.c0.example"),
        ("localhost", "localhost"),
        (".".join(["a" * 63] * 3 + ["a" * 61]), ".".join(["a" * 63] * 3 + ["a" * 61])),  # 253
    ],
)
def test_check_host_accepts(host, canonical):
    assert check_host(host) == canonical


def test_config_toml_is_real_toml_even_for_a_hostile_folder_name(tmp_path):
    # the folder name lands in root-certificates: a quote + newline must stay inside the string
    out = tmp_path / 'd"\ninsecure = true\n["x'
    dep = init_deployment(out, ["::1", "link.example.org"], ["dev"], port=9999)
    config = read_config(dep.root)
    assert config["superlink"]["default"] == "fedkd"
    assert config["superlink"]["fedkd"] == {
        "address": "[::1]:9999",
        "root-certificates": str(dep.root / "certs" / "ca.crt"),
    }
    assert set(config) == {"superlink"} and set(config["superlink"]) == {"default", "fedkd"}
    assert Path(config["superlink"]["fedkd"]["root-certificates"]).is_file()


# ----------------------------------------------------------------- 2. symbolic links


def test_output_folder_that_is_a_symlink_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "deploy"
    link.symlink_to(target)
    for extra in ([], ["--force"]):
        assert_one_line_error(cli("init", "--out", str(link), *extra), "--out=", "symbolic link")
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("force", [False, True])
def test_planted_symlink_is_not_followed(tmp_path, force):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "deploy"
    (out / "certs").mkdir(parents=True)
    (out / "certs" / "ca.key").symlink_to(victim)
    result = cli("init", "--out", str(out), *(["--force"] if force else []))
    assert_one_line_error(result, "--out=", "symbolic link 'certs/ca.key'" if force else "--force")
    assert victim.read_text() == "precious\n"
    assert (out / "certs" / "ca.key").is_symlink()  # left for the user to look at


def test_planted_symlinked_subfolder_is_not_followed(tmp_path):
    outside = tmp_path / "ssh"
    outside.mkdir()
    (outside / "id").write_text("mine\n")
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "keys").symlink_to(outside)
    assert_one_line_error(cli("init", "--out", str(out), "--force"), "symbolic link 'keys'")
    assert [p.name for p in outside.iterdir()] == ["id"]
    assert (outside / "id").read_text() == "mine\n"


def test_link_planted_while_writing_is_not_written_through(tmp_path):
    # the race after the checks: each file is created O_EXCL | O_NOFOLLOW in an open folder
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "ca.key").symlink_to(victim)
    (folder / "dangling").symlink_to(tmp_path / "does-not-exist")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in ("ca.key", "dangling"):
            with pytest.raises(FileExistsError):
                write_new_file(fd, name, b"attacker-chosen", mode=0o600)
    finally:
        os.close(fd)
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "does-not-exist").exists()


def test_register_refuses_symlinked_public_key(tmp_path):
    dep = init_deployment(tmp_path / "d", ["127.0.0.1"], ["dev"])
    elsewhere = tmp_path / "other.pub"
    elsewhere.write_bytes((dep.root / "keys" / "dev.pub").read_bytes())
    (dep.root / "keys" / "evil.pub").symlink_to(elsewhere)
    assert_one_line_error(cli("register", str(dep.root)), "evil.pub", "symbolic link")


# ----------------------------------------------------------------- 3. file modes


def test_keys_are_private_from_the_start_even_under_umask_0(tmp_path):
    old = os.umask(0)  # an umask that would leave a plain open()/mkdir() world-readable
    try:
        dep = init_deployment(tmp_path / "d", ["127.0.0.1"], ["a", "b"])
    finally:
        os.umask(old)

    def mode(p: Path) -> int:
        return stat.S_IMODE(os.lstat(p).st_mode)

    for folder in (dep.root, dep.root / "certs", dep.root / "keys", dep.flwr_home):
        assert mode(folder) == 0o700, folder
    for private in (dep.root / "certs" / "ca.key", dep.server_key, *dep.device_keys.values()):
        assert mode(private) == 0o600, private
    for public in (dep.ca_cert, dep.server_cert, dep.flwr_home / "config.toml"):
        assert mode(public) == 0o644, public
    for key in dep.device_keys.values():
        assert mode(key.with_name(key.name + ".pub")) == 0o644


# ----------------------------------------------------------------- 4. re-init, --force, stale keys


def test_second_init_is_refused_and_keeps_the_ca(tmp_path):
    out = tmp_path / "d"
    assert cli("init", "--out", str(out)).exit_code == 0
    ca = (out / "certs" / "ca.crt").read_bytes()
    assert_one_line_error(cli("init", "--out", str(out)), "--out=", "not empty", "--force")
    assert (out / "certs" / "ca.crt").read_bytes() == ca


def test_force_refuses_files_it_did_not_write(tmp_path):
    out = tmp_path / "d"
    assert cli("init", "--out", str(out)).exit_code == 0
    (out / "notes.txt").write_text("mine\n")
    assert_one_line_error(cli("init", "--out", str(out), "--force"), "'notes.txt'")
    assert (out / "notes.txt").read_text() == "mine\n"


def test_forced_reinit_leaves_no_stale_key_for_register(tmp_path, monkeypatch):
    out = tmp_path / "d"
    port = free_port()  # nothing listens there: every registration fails, fast
    assert cli("init", "--out", str(out), "--devices", "3", "--port", str(port)).exit_code == 0
    old_ca = (out / "certs" / "ca.crt").read_bytes()
    old_pubs = {p.name: p.read_bytes() for p in (out / "keys").glob("*.pub")}
    (out / "flwr-home" / "state.db").write_text("left by flwr")  # flwr may write here
    result = cli("init", "--out", str(out), "--devices", "1", "--port", str(port), "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "keys").iterdir()) == ["device-0", "device-0.pub"]
    assert sorted(p.name for p in (out / "flwr-home").iterdir()) == ["config.toml"]
    assert (out / "certs" / "ca.crt").read_bytes() != old_ca
    new_pub = (out / "keys" / "device-0.pub").read_bytes()
    assert new_pub != old_pubs["device-0.pub"]
    private = serialization.load_ssh_private_key(
        (out / "keys" / "device-0").read_bytes(), password=None
    )
    assert (
        private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        == new_pub.strip()
    )
    # what register sends: only the new key
    assert public_keys(out) == [out / "keys" / "device-0.pub"]
    monkeypatch.delenv("FLWR_HOME", raising=False)  # register uses out/flwr-home
    reg = cli("register", str(out))
    lines = [line for line in reg.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, reg.output
    assert lines[0].startswith(f"device-0.pub ({fingerprint(new_pub)}): FAILED")
    assert reg.exit_code == 1


def test_fingerprint_matches_ssh_keygen(tmp_path):
    dep = init_deployment(tmp_path / "d", ["127.0.0.1"], ["dev"])
    pub = dep.root / "keys" / "dev.pub"
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True
    )
    assert listed.stdout.split()[1] == fingerprint(pub.read_bytes())


# ----------------------------------------------------------------- 5. shell quoting


def test_printed_commands_round_trip_through_a_shell(tmp_path):
    out = tmp_path / "my deploy $HOME;echo pwned 'q\" `x`"
    result = cli("init", "--out", str(out), "--devices", "2", "--host", "::1")
    assert result.exit_code == 0, result.output
    root = out.resolve()
    printed = [line for line in result.stdout.splitlines() if line.startswith("[")]
    cmds = {}
    for line in printed:
        where, cmd = line[1:].split("] ", 1)
        args = shlex.split(cmd, comments=True)
        cmds.setdefault((where, args[0] if "=" not in args[0] else args[1]), []).append(args)
    link = cmds[("server", "flower-superlink")][0]
    assert link[link.index("--ssl-ca-certfile") + 1] == str(root / "certs" / "ca.crt")
    assert link[link.index("--ssl-keyfile") + 1] == str(root / "certs" / "server.key")
    assert cmds[("server", "fedkd")][0] == ["fedkd", "deploy", "register", str(root)]
    regs = cmds[("server", "flwr")]
    assert regs[0][:5] == [
        f"FLWR_HOME={root / 'flwr-home'}",
        "flwr",
        "supernode",
        "register",
        str(root / "keys" / "device-0.pub"),
    ]
    assert regs[-1][-1] == "config='simulations/quickstart.toml' out='runs/deployed'"
    node = cmds[("device-1", "flower-supernode")][0]
    assert node[node.index("--superlink") + 1] == "[::1]:9092"
    assert node[node.index("--node-config") + 1] == "partition-id=1 num-partitions=2"
    # and a real POSIX shell sees the same arguments (nothing expanded, nothing run)
    superlink_line = next(line for line in printed if "flower-superlink" in line)
    cmd = superlink_line.split("] ", 1)[1].replace("flower-superlink", "printf '%s\\0'", 1)
    shell = subprocess.run(["sh", "-c", cmd], capture_output=True, check=True)
    assert shell.stdout.decode().split("\0")[:-1] == link[1:]
    assert not (Path.cwd() / "pwned").exists()


def test_commands_quote_a_path_with_a_newline(tmp_path):
    dep = init_deployment(tmp_path / "a\nb", ["127.0.0.1"], ["dev"])
    split = [shlex.split(cmd, comments=True) for _, cmd in commands(dep)]
    assert ["fedkd", "deploy", "register", str(dep.root)] in split
    runs = [args for args in split if args[1:3] == ["flwr", "run"]]
    assert runs and runs[0][0] == f"FLWR_HOME={dep.flwr_home}"


# ----------------------------------------------------------------- every bad input: one line


def _existing_file(tmp: Path) -> list[str]:
    (tmp / "file").write_text("x")
    return ["init", "--out", str(tmp / "file")]


def _symlink_out(tmp: Path) -> list[str]:
    (tmp / "real").mkdir()
    (tmp / "link").symlink_to(tmp / "real")
    return ["init", "--out", str(tmp / "link")]


def _deployed(tmp: Path) -> Path:
    return init_deployment(tmp / "d", ["127.0.0.1"], ["dev"]).root


def _corrupt_pub(tmp: Path) -> list[str]:
    root = _deployed(tmp)
    (root / "keys" / "dev.pub").write_text('ssh-rsa AAAA"; rm -rf /\n')
    return ["register", str(root)]


def _binary_pub(tmp: Path) -> list[str]:
    root = _deployed(tmp)
    (root / "keys" / "x.pub").write_bytes(b"\x00\xff" * 10)
    return ["register", str(root)]


def _no_flwr_home(tmp: Path) -> list[str]:
    root = _deployed(tmp)
    (root / "flwr-home" / "config.toml").unlink()
    return ["register", str(root)]


BAD = {
    "host-space": (lambda t: ["init", "--out", str(t / "d"), "--host", "a b"], "--host="),
    "host-inject": (lambda t: ["init", "--out", str(t / "d"), "--host", INJECTED_HOST], "--host="),
    "host-empty": (lambda t: ["init", "--out", str(t / "d"), "--host", ""], "--host="),
    "host-zone": (lambda t: ["init", "--out", str(t / "d"), "--host", "fe80::1%lo"], "--host="),
    "host-unspecified": (lambda t: ["init", "--out", str(t / "d"), "--host", "0.0.0.0"], "--host"),
    "host-no-value": (lambda t: ["init", "--out", str(t / "d"), "--host"], "--host"),
    "port-0": (lambda t: ["init", "--out", str(t / "d"), "--port", "0"], "--port=0"),
    "port-big": (lambda t: ["init", "--out", str(t / "d"), "--port", "65536"], "--port=65536"),
    "port-text": (lambda t: ["init", "--out", str(t / "d"), "--port", "http"], "--port"),
    "devices-0": (lambda t: ["init", "--out", str(t / "d"), "--devices", "0"], "--devices=0"),
    "devices-neg": (lambda t: ["init", "--out", str(t / "d"), "--devices", "-2"], "--devices=-2"),
    "devices-big": (
        lambda t: ["init", "--out", str(t / "d"), "--devices", "10001"],
        "--devices=10001",
    ),
    "devices-text": (lambda t: ["init", "--out", str(t / "d"), "--devices", "two"], "--devices"),
    "out-no-parent": (lambda t: ["init", "--out", str(t / "no" / "such")], "parent folder"),
    "out-is-file": (_existing_file, "not a folder"),
    "out-symlink": (_symlink_out, "symbolic link"),
    "out-unwritable": (lambda t: ["init", "--out", "/sys/fedkd-deploy-test"], "--out="),
    "unknown-option": (lambda t: ["init", "--hots", "x"], "--hots"),
    "unknown-command": (lambda t: ["inti"], "inti"),
    "register-missing": (lambda t: ["register", str(t / "nowhere")], "no such folder"),
    "register-empty": (lambda t: ["register", str(t)], "no *.pub keys"),
    "register-corrupt-key": (_corrupt_pub, "not an OpenSSH ECDSA public key"),
    "register-binary-key": (_binary_pub, "not an OpenSSH ECDSA public key"),
    "register-connection": (
        lambda t: ["register", str(_deployed(t)), "--connection", "a b"],
        "--connection=",
    ),
    "register-no-flwr-home": (_no_flwr_home, "FLWR_HOME"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, case):
    monkeypatch.delenv("FLWR_HOME", raising=False)
    make_args, needle = BAD[case]
    if case == "out-unwritable" and not Path("/sys").is_dir():
        pytest.skip("needs a /sys that refuses mkdir")
    args = make_args(tmp_path)
    assert_one_line_error(cli(*args), needle)


def test_real_entry_point_prints_one_line_for_a_usage_error(tmp_path):
    # typer's usage errors (a boxed panel by default); the --devices=0 path through the real
    # entry point is tests/test_deploy_helpers.py's
    proc = subprocess.run(
        fedkd_cmd("deploy", "init", "--out", str(tmp_path / "d"), "--devices", "two"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "'--devices'" in lines[0] and "'two'" in lines[0]
    assert not (tmp_path / "d").exists()


def test_certificate_sans_are_the_validated_hosts(tmp_path):
    dep = init_deployment(tmp_path / "d", ["2001:DB8::1", "Link.Example.org", "2001:db8::1"], ["a"])
    cert = x509.load_pem_x509_certificate(dep.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["2001:db8::1"]
    assert san.get_values_for_type(x509.DNSName) == ["Link.Example.org"]
    assert dep.address == "[2001:db8::1]:9092"
