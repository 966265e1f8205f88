import ipaddress
import stat
import subprocess
import tomllib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedkd.deploy import init_deployment

from .conftest import fedkd_cmd


def test_init_writes_ca_server_cert_with_sans_and_device_keys(tmp_path):
    dep = init_deployment(tmp_path, ["127.0.0.1", "link.example.org"], ["a", "b"], port=9999)
    ca = x509.load_pem_x509_certificate(dep.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(dep.server_cert.read_bytes())
    assert server.issuer == ca.subject
    ca.public_key().verify(
        server.signature, server.tbs_certificate_bytes, ec.ECDSA(server.signature_hash_algorithm)
    )
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["link.example.org"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name in ("a", "b"):
        private = dep.device_keys[name]
        key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
        pub = private.with_suffix(".pub").read_text()
        assert pub.startswith("ecdsa-sha2-nistp384 ")
        assert (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
            == pub.strip()
        )
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "certs" / "ca.key").stat().st_mode) == 0o600
    config = tomllib.loads((dep.flwr_home / "config.toml").read_text())
    assert config == {
        "superlink": {
            "default": "fedkd",
            "fedkd": {"address": "127.0.0.1:9999", "root-certificates": str(dep.ca_cert)},
        }
    }


def test_deploy_init_bad_input_is_one_line(tmp_path):
    proc = subprocess.run(
        fedkd_cmd("deploy", "init", "--out", str(tmp_path), "--devices", "0"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--devices=0: need at least 1 device" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_deploy_register_without_keys_is_one_line(tmp_path):
    proc = subprocess.run(
        fedkd_cmd("deploy", "register", str(tmp_path)), capture_output=True, text=True
    )
    assert proc.returncode == 2 and "no *.pub keys in" in proc.stderr
    assert "Traceback" not in proc.stderr
