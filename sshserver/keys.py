"""Public keys as written in authorized_keys lines, and their SHA256 fingerprints."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import load_ssh_public_identity

KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})
CERT_SUFFIX = "-cert-v01@openssh.com"


class InvalidKeyError(ValueError):
    """An authorized_keys line that cannot be used."""


@dataclass(frozen=True)
class PublicKey:
    key_type: str
    blob: bytes
    comment: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    def line(self) -> str:
        return f"{self.key_type} {base64.b64encode(self.blob).decode()}"


def fingerprint(blob: bytes) -> str:
    """SHA256 fingerprint as `ssh-keygen -lf` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def blob_type(blob: bytes) -> str:
    if len(blob) < 4:
        raise InvalidKeyError("key blob too short")
    (n,) = struct.unpack(">I", blob[:4])
    if n > len(blob) - 4:
        raise InvalidKeyError("key blob is truncated")
    return blob[4 : 4 + n].decode("ascii", "replace")


def parse_public_key(line: str) -> PublicKey:
    """Parses `type base64 [comment]`; authorized_keys options are not accepted."""
    fields = line.strip().split(None, 2)
    if len(fields) < 2:
        raise InvalidKeyError("expected '<type> <base64> [comment]'")
    key_type, data = fields[0], fields[1]
    if key_type not in KEY_TYPES:
        if key_type.endswith(CERT_SUFFIX):
            raise InvalidKeyError(f"{key_type} is a certificate; list its CA under certificateAuthorities")
        raise InvalidKeyError(f"unsupported key type {key_type[:40]!r}")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKeyError("key data is not valid base64") from None
    if blob_type(blob) != key_type:
        raise InvalidKeyError(f"key data is a {blob_type(blob)!r} key, not {key_type!r}")
    if not key_type.startswith("sk-"):
        try:
            load_ssh_public_identity(f"{key_type} {data}".encode())
        except (ValueError, TypeError) as exc:  # structure or curve errors
            raise InvalidKeyError(f"malformed {key_type} key: {exc}") from None
    return PublicKey(key_type, blob, fields[2] if len(fields) > 2 else "")
