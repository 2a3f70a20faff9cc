"""Revoked keys, as sshd's RevokedKeys: a file of public keys (one per line) or an OpenSSH KRL.

No maintained Python library reads KRLs, so this is a small parser of the format in
OpenSSH's PROTOCOL.krl, for every section `ssh-keygen -k` writes: certificates by serial,
serial range, serial bitmap and key ID (for one CA, or for any CA), explicit keys, and SHA1 /
SHA256 fingerprints of keys. KRL signature sections are skipped, as OpenSSH does: the file is
trusted because the operator configured it. Every read is bounded by the data itself, and any
malformed input raises RevocationError (tests/fuzz/test_fuzz_certs.py).

A key is revoked when it, or for a certificate its certified key, its CA key, or the
certificate itself (serial or key ID under its CA), is listed: what sshd checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sshserver.grants.certificates import UserCertificate
from sshserver.grants.keys import blob_type

log = logging.getLogger("podssh.revocation")

KRL_MAGIC = b"SSHKRL\n\0"
KRL_FORMAT_VERSION = 1
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_BITMAP_BITS = 1 << 27  # 16 MiB: bounded by MAX_FILE_BYTES anyway

SECTION_CERTIFICATES = 1
SECTION_EXPLICIT_KEY = 2
SECTION_FINGERPRINT_SHA1 = 3
SECTION_SIGNATURE = 4
SECTION_FINGERPRINT_SHA256 = 5
CERT_SERIAL_LIST = 0x20
CERT_SERIAL_RANGE = 0x21
CERT_SERIAL_BITMAP = 0x22
CERT_KEY_ID = 0x23


class RevocationError(ValueError):
    """A revoked-keys file that cannot be read; the message is one line naming the problem."""


@dataclass
class CertRevocations:
    """What one certificate section revokes, for one CA (or for any CA: ca_blob b"")."""

    serials: set[int] = field(default_factory=set)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    bitmaps: list[tuple[int, int]] = field(default_factory=list)  # (first serial, bits)
    key_ids: set[str] = field(default_factory=set)

    def revokes(self, cert: UserCertificate) -> bool:
        if cert.key_id in self.key_ids:
            return True
        if cert.serial == 0:  # the default when the CA gave none: never revoked by serial (as sshd)
            return False
        serial = cert.serial
        return (serial in self.serials or any(lo <= serial <= hi for lo, hi in self.ranges)
                or any(serial >= first and bits >> (serial - first) & 1 for first, bits in self.bitmaps))


@dataclass
class RevocationList:
    keys: set[bytes] = field(default_factory=set)  # plain public key blobs
    sha1: set[bytes] = field(default_factory=set)
    sha256: set[bytes] = field(default_factory=set)
    certs: dict[bytes, CertRevocations] = field(default_factory=dict)  # by CA key blob; b"": any CA

    def revokes_key(self, blob: bytes) -> bool:
        return (blob in self.keys or hashlib.sha256(blob).digest() in self.sha256
                or hashlib.sha1(blob).digest() in self.sha1)  # a KRL may name keys by SHA1

    def revokes_certificate(self, cert: UserCertificate) -> bool:
        if self.revokes_key(cert.key_blob) or self.revokes_key(cert.ca_blob):
            return True
        return any(section.revokes(cert) for ca in (cert.ca_blob, b"")
                   if (section := self.certs.get(ca)) is not None)

    def why_revoked(self, blob: bytes, cert: UserCertificate | None) -> str | None:
        """Why this key (certificate blob plus its parsed certificate, or plain key) is revoked."""
        if cert is None:
            return "key revoked" if self.revokes_key(blob) else None
        if self.revokes_key(blob) or self.revokes_key(cert.key_blob):
            return "certified key revoked"
        if self.revokes_key(cert.ca_blob):
            return "CA key revoked"
        if self.revokes_certificate(cert):
            return "certificate revoked"
        return None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise RevocationError("KRL truncated")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def string(self) -> bytes:
        return self.take(self.u32())


def parse_krl(data: bytes) -> RevocationList:
    r = _Reader(data)
    if r.take(len(KRL_MAGIC)) != KRL_MAGIC:
        raise RevocationError("not a KRL (bad magic)")
    if (version := r.u32()) != KRL_FORMAT_VERSION:
        raise RevocationError(f"unsupported KRL format version {version}")
    r.u64(), r.u64(), r.u64()  # krl_version, generated_date, flags
    r.string(), r.string()  # reserved, comment
    krl = RevocationList()
    while not r.done():
        kind, body = r.u8(), _Reader(r.string())
        if kind == SECTION_CERTIFICATES:
            _certificate_section(body, krl)
        elif kind == SECTION_EXPLICIT_KEY:
            while not body.done():
                blob = body.string()
                _check_key_blob(blob)
                krl.keys.add(blob)
        elif kind in (SECTION_FINGERPRINT_SHA1, SECTION_FINGERPRINT_SHA256):
            size, target = (20, krl.sha1) if kind == SECTION_FINGERPRINT_SHA1 else (32, krl.sha256)
            while not body.done():
                digest = body.string()
                if len(digest) != size:
                    raise RevocationError(f"KRL fingerprint of {len(digest)} bytes, expected {size}")
                target.add(digest)
        elif kind == SECTION_SIGNATURE:
            continue  # see the module docstring
        else:
            raise RevocationError(f"unknown KRL section type {kind}")
    return krl


def _certificate_section(body: _Reader, krl: RevocationList) -> None:
    ca = body.string()
    if ca:
        _check_key_blob(ca)
    body.string()  # reserved
    section = krl.certs.setdefault(ca, CertRevocations())
    while not body.done():
        kind, sub = body.u8(), _Reader(body.string())
        if kind == CERT_SERIAL_LIST:
            while not sub.done():
                section.serials.add(sub.u64())
        elif kind == CERT_SERIAL_RANGE:
            lo, hi = sub.u64(), sub.u64()
            if lo > hi or not sub.done():
                raise RevocationError("malformed KRL serial range")
            section.ranges.append((lo, hi))
        elif kind == CERT_SERIAL_BITMAP:
            offset, bits = sub.u64(), sub.string()  # mpint: big-endian, bit i = serial offset+i
            if not sub.done() or len(bits) * 8 > MAX_BITMAP_BITS:
                raise RevocationError("malformed KRL serial bitmap")
            section.bitmaps.append((offset, int.from_bytes(bits, "big")))
        elif kind == CERT_KEY_ID:
            while not sub.done():
                section.key_ids.add(sub.string().decode("utf-8", "replace"))
        else:
            raise RevocationError(f"unknown KRL certificate section type {kind:#x}")


def _check_key_blob(blob: bytes) -> None:
    try:
        blob_type(blob)
    except ValueError as exc:
        raise RevocationError(f"malformed key in KRL: {exc}") from None


def parse_key_list(text: str) -> RevocationList:
    """Public keys, one per line as in authorized_keys but without options; # comments."""
    krl = RevocationList()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            raise RevocationError(f"line {number}: expected '<type> <base64> [comment]'")
        try:
            blob = base64.b64decode(fields[1], validate=True)
            if blob_type(blob) != fields[0]:
                raise ValueError("key type does not match its data")
        except (binascii.Error, ValueError) as exc:
            raise RevocationError(f"line {number}: not a public key ({exc})") from None
        krl.keys.add(blob)
    return krl


def parse_revoked_keys(data: bytes) -> RevocationList:
    if data.startswith(KRL_MAGIC):
        return parse_krl(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RevocationError("neither a KRL nor a text list of public keys") from None
    return parse_key_list(text)


class RevokedKeysFile:
    """The file given to `--revoked-keys`, re-read when it changes (checked at each login).

    Loading at start raises RevocationError (the process refuses to start). A later change
    that makes it unreadable or malformed revokes every key until it is fixed, as sshd refuses
    all public keys when its RevokedKeys file cannot be read: failing open would quietly
    readmit revoked keys. Called from Transport threads; the lock covers the reload only.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp = self._stat()
        if self._stamp is None:
            raise RevocationError(f"cannot read revoked keys file {path}")
        self._list: RevocationList | None = self._read()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> RevocationList:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise RevocationError(f"cannot read revoked keys file {self.path}: {exc.strerror}") from None
        if len(data) > MAX_FILE_BYTES:
            raise RevocationError(f"revoked keys file {self.path} is larger than {MAX_FILE_BYTES} bytes")
        try:
            return parse_revoked_keys(data)
        except RevocationError as exc:
            raise RevocationError(f"{self.path}: {exc}") from None

    def current(self) -> RevocationList | None:
        """The list in force; None means the file is broken and every key counts as revoked."""
        stamp = self._stat()
        if stamp == self._stamp:
            return self._list
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._list = self._read()
                    fields = {"path": str(self.path), "keys": len(self._list.keys)}
                    log.info("revoked_keys_loaded", extra={"fields": fields})
                except RevocationError as exc:
                    self._list = None
                    log.error("revoked_keys_unreadable", extra={"fields": {"error": str(exc)[:300]}})
                self._stamp = stamp
            return self._list

    def why_revoked(self, blob: bytes, cert: UserCertificate | None) -> str | None:
        current = self.current()
        if current is None:
            return "the revoked keys file cannot be read: every key is refused"
        return current.why_revoked(blob, cert)
