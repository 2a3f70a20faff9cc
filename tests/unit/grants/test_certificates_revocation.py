"""Revoked keys (`podssh serve --revoked-keys`): OpenSSH KRLs written by the real `ssh-keygen -k`,
and plain lists of public keys; what each revokes is what sshd's RevokedKeys would refuse."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from sshserver.grants.certificates import parse_user_certificate
from sshserver.grants.keys import fingerprint
from sshserver.grants.revocation import KRL_MAGIC, RevocationError, RevokedKeysFile, parse_krl, parse_revoked_keys
from tests.support.sshkeygen import blob, krl, make_key, sign


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("krl")


def string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def cert_section(ca_blob: bytes, *subsections: tuple[int, bytes]) -> bytes:
    body = string(ca_blob) + string(b"") + b"".join(bytes([t]) + string(data) for t, data in subsections)
    return bytes([1]) + string(body)


def hand_krl(*sections: bytes) -> bytes:
    """A KRL built by hand, for what ssh-keygen will not write (PROTOCOL.krl)."""
    return KRL_MAGIC + struct.pack(">IQQQ", 1, 1, 0, 0) + string(b"") + string(b"") + b"".join(sections)


def pub(path: Path) -> Path:
    return Path(f"{path}.pub")


def cert_of(d: Path, name: str, *, ca: str = "ca", serial: int = 1, key_id: str = "kid"):
    """(certificate blob, parsed certificate) of a fresh key signed by CA."""
    path = sign(make_key(d, ca), make_key(d, name), serial=serial, key_id=key_id)
    data = blob(path)
    return data, parse_user_certificate(data)


def why(lst, item) -> str | None:
    data, cert = item
    return lst.why_revoked(data, cert)


def test_krl_by_serial_range_and_list(d: Path) -> None:
    make_key(d, "ca")
    lst = parse_revoked_keys(krl(d / "serials.krl", "serial: 5\nserial: 10-20\nserial: 30\n", ca=d / "ca").read_bytes())
    for serial in (5, 10, 15, 20, 30):
        assert why(lst, cert_of(d, f"s{serial}", serial=serial)) == "certificate revoked", serial
    for serial in (4, 6, 9, 21, 29, 31):
        assert why(lst, cert_of(d, f"s{serial}", serial=serial)) is None, serial
    # Another CA's certificate with a revoked serial is not revoked.
    assert why(lst, cert_of(d, "other-ca-15", ca="ca2", serial=15)) is None


def test_krl_serial_bitmap(d: Path) -> None:
    make_key(d, "ca")
    # A dense set of serials: ssh-keygen writes it as a bitmap section.
    spec = "".join(f"serial: {s}\n" for s in range(100, 200, 3))
    data = krl(d / "bitmap.krl", spec, ca=d / "ca").read_bytes()
    lst = parse_krl(data)
    assert any(section.bitmaps for section in lst.certs.values()), "expected a bitmap section"
    assert why(lst, cert_of(d, "b103", serial=103)) == "certificate revoked"
    assert why(lst, cert_of(d, "b104", serial=104)) is None
    assert why(lst, cert_of(d, "b199", serial=199)) == "certificate revoked"


def test_krl_key_id_for_one_ca_and_for_any_ca(d: Path) -> None:
    make_key(d, "ca")
    lst = parse_revoked_keys(krl(d / "ids.krl", "id: bad-laptop\n", ca=d / "ca").read_bytes())
    assert why(lst, cert_of(d, "id1", key_id="bad-laptop")) == "certificate revoked"
    assert why(lst, cert_of(d, "id2", key_id="good-laptop")) is None
    assert why(lst, cert_of(d, "id3", ca="ca2", key_id="bad-laptop")) is None
    # ssh-keygen needs a CA for key IDs, but PROTOCOL.krl allows an empty one: any CA.
    anyca = parse_krl(hand_krl(cert_section(b"", (0x23, string(b"bad-laptop")))))
    assert why(anyca, cert_of(d, "id4", ca="ca2", key_id="bad-laptop")) == "certificate revoked"
    assert why(anyca, cert_of(d, "id5", ca="ca2", key_id="other")) is None


def test_serial_zero_is_never_revoked_by_serial(d: Path) -> None:
    ca_blob = blob(pub(make_key(d, "ca")))
    lst = parse_krl(hand_krl(cert_section(ca_blob, (0x21, struct.pack(">QQ", 0, 5)),
                                          (0x20, struct.pack(">Q", 0)))))
    assert why(lst, cert_of(d, "z0", serial=0)) is None  # as sshd: 0 is "no serial given"
    assert why(lst, cert_of(d, "z1", serial=1)) == "certificate revoked"


def test_krl_explicit_keys_and_fingerprints(d: Path) -> None:
    k1, k2, k3, k4 = (make_key(d, f"plain{i}") for i in range(4))
    spec = (f"key: {pub(k1).read_text()}sha1: {pub(k2).read_text()}sha256: {pub(k3).read_text()}")
    lst = parse_revoked_keys(krl(d / "keys.krl", spec).read_bytes())
    assert lst.keys and lst.sha1 and lst.sha256
    for k in (k1, k2, k3):
        assert lst.why_revoked(blob(pub(k)), None) == "key revoked"
    assert lst.why_revoked(blob(pub(k4)), None) is None
    # `hash:` takes the fingerprint as sshd logs it.
    by_hash = parse_revoked_keys(krl(d / "hash.krl", f"hash: {fingerprint(blob(pub(k4)))}\n").read_bytes())
    assert by_hash.why_revoked(blob(pub(k4)), None) == "key revoked"
    # A plain public key file given to ssh-keygen -k, and an update with -u.
    plain = krl(d / "plain.krl", pub(k4).read_text())
    assert parse_revoked_keys(plain.read_bytes()).why_revoked(blob(pub(k4)), None) == "key revoked"
    krl(plain, pub(k1).read_text(), update=True)
    updated = parse_revoked_keys(plain.read_bytes())
    assert updated.why_revoked(blob(pub(k1)), None) and updated.why_revoked(blob(pub(k4)), None)


def test_a_certificate_is_revoked_through_its_key_or_its_ca(d: Path) -> None:
    data, cert = cert_of(d, "via-key")
    by_key = parse_revoked_keys(krl(d / "via-key.krl", pub(d / "via-key").read_text()).read_bytes())
    assert by_key.why_revoked(data, cert) == "certified key revoked"
    by_ca = parse_revoked_keys(krl(d / "via-ca.krl", pub(d / "ca").read_text()).read_bytes())
    assert by_ca.why_revoked(data, cert) == "CA key revoked"


def test_text_list_of_public_keys(d: Path) -> None:
    k1, k2 = make_key(d, "list1"), make_key(d, "list2", "ecdsa")
    data, cert = cert_of(d, "list3")
    text = (f"# revoked\n\n{pub(k1).read_text()}   {pub(k2).read_text().strip()} trailing comment\n"
            f"{pub(d / 'ca').read_text()}")
    lst = parse_revoked_keys(text.encode())
    assert lst.why_revoked(blob(pub(k1)), None) == "key revoked"
    assert lst.why_revoked(blob(pub(k2)), None) == "key revoked"
    assert lst.why_revoked(data, cert) == "CA key revoked"
    assert lst.why_revoked(blob(pub(make_key(d, "list4"))), None) is None


@pytest.mark.parametrize(("data", "message"), [
    (b"ssh-ed25519\n", "line 1: expected"),
    (b"# ok\nssh-ed25519 !!!notbase64\n", "line 2: not a public key"),
    (b"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGbM\n", "line 1: not a public key"),
    (b"\xff\xfe binary", "neither a KRL nor"),
    (b"SSHKRL\n\0", "truncated"),
    (b"SSHKRL\n\0\0\0\0\2" + bytes(24) + bytes(8), "format version 2"),
    (b"SSHKRL\n\0\0\0\0\1" + bytes(24) + bytes(8) + b"\x09\0\0\0\0", "unknown KRL section type 9"),
])
def test_malformed_files_are_one_line_errors(data: bytes, message: str) -> None:
    with pytest.raises(RevocationError, match=message) as info:
        parse_revoked_keys(data)
    assert "\n" not in str(info.value)


def test_every_truncation_of_a_real_krl_is_refused_or_a_prefix(d: Path) -> None:
    make_key(d, "ca")
    spec = f"serial: 1-3\nid: x\nkey: {pub(make_key(d, 't1')).read_text()}sha256: {pub(make_key(d, 't2')).read_text()}"
    data = krl(d / "trunc.krl", spec, ca=d / "ca").read_bytes()
    full = parse_krl(data)
    assert full.certs and full.keys and full.sha256
    parsed = 0
    for cut in range(len(data)):
        try:
            parse_krl(data[:cut])
        except RevocationError:
            continue
        parsed += 1  # only where a whole section ends: the header and three sections
    assert parsed <= 3


def test_file_is_reread_when_it_changes_and_fails_closed(d: Path, tmp_path: Path) -> None:
    k1, k2 = make_key(d, "f1"), make_key(d, "f2")
    path = tmp_path / "revoked"
    path.write_text(pub(k1).read_text())
    revoked = RevokedKeysFile(path)
    assert revoked.why_revoked(blob(pub(k1)), None) and not revoked.why_revoked(blob(pub(k2)), None)
    krl(path, pub(k2).read_text())  # replaced by a KRL naming the other key
    os.utime(path, ns=(1, 10**18))
    assert not revoked.why_revoked(blob(pub(k1)), None) and revoked.why_revoked(blob(pub(k2)), None)
    path.write_bytes(b"SSHKRL\n\0garbage")  # broken: every key is refused until it is fixed
    assert "cannot be read" in (revoked.why_revoked(blob(pub(k1)), None) or "")
    path.write_text(pub(k1).read_text() + "\n")
    assert revoked.why_revoked(blob(pub(k1)), None) == "key revoked"
    assert revoked.why_revoked(blob(pub(k2)), None) is None


def test_missing_or_broken_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RevocationError, match="cannot read"):
        RevokedKeysFile(tmp_path / "missing")
    (tmp_path / "bad").write_bytes(b"SSHKRL\n\0\0")
    with pytest.raises(RevocationError, match="bad: KRL truncated"):
        RevokedKeysFile(tmp_path / "bad")
