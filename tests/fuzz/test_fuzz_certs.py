"""Fuzzing the certificate parser and the revoked-keys (KRL / key list) parser: arbitrary blobs and
mutations of real ssh-keygen output. Only CertificateError / RevocationError may come out."""

from __future__ import annotations

import contextlib
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sshserver.grants.certificates import CertificateError, parse_user_certificate
from sshserver.grants.revocation import RevocationError, parse_revoked_keys
from tests.fuzz.settings import FUZZ
from tests.support.sshkeygen import blob, krl, make_key, sign


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    d = tmp_path_factory.mktemp("fuzz-certs")
    ca, rsa_ca, ec_ca = make_key(d, "ca"), make_key(d, "rsaca", "rsa", 2048), make_key(d, "ecca", "ecdsa")
    users = [make_key(d, "u-ed"), make_key(d, "u-ec", "ecdsa"), make_key(d, "u-rsa", "rsa", 2048)]
    certs = [
        blob(sign(ca, users[0], "source-address=10.0.0.0/8,::1/128", "force-command=id")),
        blob(sign(rsa_ca, users[1], "clear", algorithm="rsa-sha2-512")),
        blob(sign(ec_ca, users[2], "permit-pty")),
    ]
    spec = (f"serial: 1-9\nserial: 20\nid: x\nkey: {Path(f'{users[1]}.pub').read_text()}"
            f"sha1: {Path(f'{users[2]}.pub').read_text()}sha256: {Path(f'{users[0]}.pub').read_text()}")
    krls = [krl(d / "a.krl", spec, ca=ca).read_bytes(),
            krl(d / "b.krl", "".join(f"serial: {s}\n" for s in range(100, 300, 3)), ca=ca).read_bytes()]
    keylist = "".join(Path(f"{u}.pub").read_text() for u in users).encode()
    return {"certs": certs, "krls": [*krls, keylist], "dir": d}


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Applies (kind, position, value) edits: overwrite a byte, delete one, insert one, or
    overwrite a 32-bit length field with an extreme value."""
    out = bytearray(data)
    for kind, pos, value in edits:
        if not out:
            break
        i = pos % len(out)
        if kind == 0:
            out[i] = value & 0xFF
        elif kind == 1:
            del out[i]
        elif kind == 2:
            out.insert(i, value & 0xFF)
        else:
            out[i:i + 4] = struct.pack(">I", (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, value)[value % 5] & 0xFFFFFFFF)
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 1 << 32)), min_size=1,
                 max_size=8)


def _parse_cert(data: bytes, known: bool) -> None:
    with contextlib.suppress(CertificateError):
        parse_user_certificate(data, known_ca=(lambda fp: known))


def _parse_revoked(data: bytes) -> None:
    with contextlib.suppress(RevocationError):
        parse_revoked_keys(data)


@FUZZ
@given(data=st.binary(max_size=2048), known=st.booleans())
def test_arbitrary_blobs_only_raise_certificate_error(data: bytes, known: bool) -> None:
    _parse_cert(data, known)
    _parse_cert(struct.pack(">I", 32) + b"ssh-ed25519-cert-v01@openssh.com" + data, known)


@FUZZ
@given(which=st.integers(0, 2), edits=EDITS, known=st.booleans())
def test_mutated_real_certificates_only_raise_certificate_error(seeds: dict, which: int, edits: list,
                                                                 known: bool) -> None:
    _parse_cert(_mutate(seeds["certs"][which], edits), known)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_revoked_keys_files_only_raise_revocation_error(data: bytes) -> None:
    _parse_revoked(data)
    _parse_revoked(b"SSHKRL\n\0" + data)
    _parse_revoked(b"SSHKRL\n\0\0\0\0\1" + bytes(24) + bytes(8) + data)


@FUZZ
@given(which=st.integers(0, 2), edits=EDITS)
def test_mutated_real_krls_only_raise_revocation_error(seeds: dict, which: int, edits: list) -> None:
    _parse_revoked(_mutate(seeds["krls"][which], edits))


def test_seeds_are_valid(seeds: dict) -> None:
    for cert in seeds["certs"]:
        assert parse_user_certificate(cert, known_ca=lambda fp: True).principals == ("alice",)
    for data in seeds["krls"]:
        parse_revoked_keys(data)
    listed = subprocess.run(["ssh-keygen", "-Q", "-l", "-f", str(seeds["dir"] / "a.krl")], capture_output=True)
    assert listed.returncode == 0
