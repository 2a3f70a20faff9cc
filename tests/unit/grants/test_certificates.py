"""User certificates as sshd treats them, checked on certificates made by the real ssh-keygen."""

from __future__ import annotations

import base64
import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType

from sshserver.grants import certificates
from sshserver.grants.certificates import CertificateError, parse_user_certificate, signature_algorithm
from sshserver.grants.keys import fingerprint
from tests.support.sshkeygen import blob, make_key, sign


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certs")


def test_plain_certificate_permits_pty_and_forwarding(d: Path) -> None:
    cert = parse_user_certificate(blob(sign(make_key(d, "ca"), make_key(d, "u1"), serial=42)))
    assert cert.principals == ("alice",) and cert.serial == 42 and cert.key_id == "kid"
    assert cert.permit_pty and cert.permit_port_forwarding
    assert cert.source_addresses is None and cert.force_command is None
    assert cert.ca_fingerprint == fingerprint(blob(Path(f"{d / 'ca'}.pub")))
    assert cert.key_blob == blob(Path(f"{d / 'u1'}.pub")) and cert.ca_blob == blob(Path(f"{d / 'ca'}.pub"))


def test_clear_removes_pty_and_port_forwarding(d: Path) -> None:
    cert = parse_user_certificate(blob(sign(make_key(d, "ca"), make_key(d, "u2"), "clear")))
    assert not cert.permit_pty and not cert.permit_port_forwarding
    only_pty = parse_user_certificate(blob(sign(make_key(d, "ca"), make_key(d, "u3"), "clear", "permit-pty")))
    assert only_pty.permit_pty and not only_pty.permit_port_forwarding


def test_force_command_and_source_address_are_honoured(d: Path) -> None:
    path = sign(make_key(d, "ca"), make_key(d, "u4"), "force-command=echo forced; id",
                "source-address=10.1.2.0/24,192.168.7.7,2001:db8::/32")
    cert = parse_user_certificate(blob(path))
    assert cert.force_command == "echo forced; id"
    assert cert.source_addresses == (ipaddress.ip_network("10.1.2.0/24"), ipaddress.ip_network("192.168.7.7/32"),
                                     ipaddress.ip_network("2001:db8::/32"))
    assert cert.allows_source("10.1.2.200:51000")
    assert cert.allows_source("192.168.7.7:22")
    assert not cert.allows_source("192.168.7.8:22")
    assert not cert.allows_source("10.1.3.1:51000")
    assert cert.allows_source("2001:db8:1::5:40000")  # IPv6 as the gateway writes peers
    assert cert.allows_source("[2001:db8::1]:40000")
    assert not cert.allows_source("2001:db9::1:40000")
    assert cert.allows_source("::ffff:10.1.2.3:40000")  # IPv4-mapped: the IPv4 address it is
    assert not cert.allows_source("garbage")


def test_malformed_source_address_refuses_the_certificate(d: Path) -> None:
    # ssh-keygen validates the list itself, so build one by hand with cryptography.
    ca = ed25519.Ed25519PrivateKey.generate()
    user = ed25519.Ed25519PrivateKey.generate().public_key()

    def build(**options: bytes) -> bytes:
        b = (SSHCertificateBuilder().public_key(user).serial(1).type(SSHCertificateType.USER).key_id(b"k")
             .valid_principals([b"alice"]).valid_after(0).valid_before(2**64 - 1))
        for name, value in options.items():
            b = b.add_critical_option(name.replace("_", "-").encode(), value)
        return base64.b64decode(b.sign(ca).public_bytes().split()[1])

    for bad in (b"10.0.0.0/33", b"10.9.9.9/8", b"not-an-address", b"10.0.0.1,,10.0.0.2", b""):
        with pytest.raises(CertificateError, match="source-address"):
            parse_user_certificate(build(source_address=bad))
    assert parse_user_certificate(build(source_address=b"127.0.0.1")).allows_source("127.0.0.1:5")


@pytest.mark.parametrize("option", ["verify-required", "critical:no-such-option=x"])
def test_unknown_critical_options_are_refused(d: Path, option: str) -> None:
    path = sign(make_key(d, "ca"), make_key(d, f"u-{option[:8]}"), option)
    with pytest.raises(CertificateError, match="unsupported critical options"):
        parse_user_certificate(blob(path))


def test_unknown_ca_is_refused_before_its_signature_is_checked(d: Path) -> None:
    data = bytearray(blob(sign(make_key(d, "ca"), make_key(d, "u6"))))
    data[-1] ^= 0xFF  # a broken CA signature
    with pytest.raises(CertificateError, match="does not verify"):
        parse_user_certificate(bytes(data), known_ca=lambda fp: True)
    asked: list[str] = []
    with pytest.raises(CertificateError, match="unknown CA"):
        parse_user_certificate(bytes(data), known_ca=lambda fp: asked.append(fp) or False)
    assert asked == [fingerprint(blob(Path(f"{d / 'ca'}.pub")))]


def test_sha1_ca_signatures_are_refused(d: Path) -> None:
    ca = make_key(d, "rsaca", "rsa", 2048)
    user = make_key(d, "u7")
    sha1 = blob(sign(ca, user, algorithm="ssh-rsa"))
    assert signature_algorithm(sha1) == "ssh-rsa"
    with pytest.raises(CertificateError, match="SHA-1"):
        parse_user_certificate(sha1)
    for algorithm in ("rsa-sha2-256", "rsa-sha2-512"):
        good = blob(sign(ca, user, algorithm=algorithm))
        assert signature_algorithm(good) == algorithm
        assert parse_user_certificate(good).principals == ("alice",)


def test_signature_algorithm_of_every_key_type(d: Path) -> None:
    for kind, name in (("ed25519", "ssh-ed25519"), ("ecdsa", "ecdsa-sha2-nistp256")):
        ca = make_key(d, f"ca-{kind}", kind)
        for user_kind in ("ed25519", "ecdsa", "rsa"):
            user = make_key(d, f"user-{user_kind}", user_kind, 2048 if user_kind == "rsa" else None)
            assert signature_algorithm(blob(sign(ca, user))) == name


def test_short_rsa_keys_are_refused(d: Path) -> None:
    short = make_key(d, "rsa1024", "rsa", 1024)
    with pytest.raises(CertificateError, match="certified RSA key has 1024 bits"):
        parse_user_certificate(blob(sign(make_key(d, "ca"), short)))
    with pytest.raises(CertificateError, match="CA RSA key has 1024 bits"):
        parse_user_certificate(blob(sign(make_key(d, "rsaca1024", "rsa", 1024), make_key(d, "u8"),
                                         algorithm="rsa-sha2-256")))


def test_host_certificates_cannot_log_in(d: Path) -> None:
    host = make_key(d, "host")
    path = sign(make_key(d, "ca"), host)  # a user certificate first, then the same key as a host one
    assert parse_user_certificate(blob(path))
    subprocess.run(["ssh-keygen", "-q", "-s", str(d / "ca"), "-h", "-I", "h", "-n", "host", f"{host}.pub"],
                   check=True, capture_output=True)
    with pytest.raises(CertificateError, match="host certificate"):
        parse_user_certificate(blob(path))


@pytest.mark.parametrize("error", [NotImplementedError("x"), OverflowError("x"), KeyError("x"), RuntimeError("x")])
def test_anything_cryptography_raises_becomes_a_certificate_error(d: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  error: Exception) -> None:
    data = blob(sign(make_key(d, "ca"), make_key(d, "u9")))

    def boom(_: bytes) -> None:
        raise error

    monkeypatch.setattr(certificates, "load_ssh_public_identity", boom)
    with pytest.raises(CertificateError, match=type(error).__name__):
        parse_user_certificate(data)


def test_truncated_and_garbage_blobs(d: Path) -> None:
    data = blob(sign(make_key(d, "ca"), make_key(d, "u10")))
    for cut in (0, 3, 4, 40, len(data) // 2, len(data) - 1):
        with pytest.raises(CertificateError):
            parse_user_certificate(data[:cut])
    with pytest.raises(CertificateError):
        parse_user_certificate(data + b"\0")
