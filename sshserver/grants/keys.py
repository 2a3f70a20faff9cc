"""Public keys as written in authorized_keys lines, and their SHA256 fingerprints."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_identity

KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})
CERT_SUFFIX = "-cert-v01@openssh.com"
# The CRD's maxLength for one line: a 16384-bit RSA key is about 2.8 KB of base64.
MAX_LINE = 4096
# RSA moduli as OpenSSH takes them: at least 2048 bits (smaller ones are factorable or close to it),
# at most 16384 bits (OpenSSH's SSH_RSA_MAXIMUM_MODULUS_SIZE; larger ones only cost CPU per login).
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384


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


def _check_structure(key_type: str, data: str) -> None:
    """Lets cryptography parse the key (every field, the curve point, no trailing bytes).

    Any exception it raises is the key's fault, whatever its class: a compressed ECDSA point raises
    NotImplementedError, other oddities ValueError, TypeError or UnsupportedAlgorithm. All of them
    become InvalidKeyError so that one bad line never escapes as anything else."""
    try:
        key = load_ssh_public_identity(f"{key_type} {data}".encode())
    except Exception as exc:  # see the docstring
        detail = str(exc) or type(exc).__name__
        raise InvalidKeyError(f"malformed {key_type} key: {detail[:200]}") from None
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise InvalidKeyError(f"RSA key of {bits} bits is too small: use at least {MIN_RSA_BITS} bits")
        if bits > MAX_RSA_BITS:
            raise InvalidKeyError(f"RSA key of {bits} bits is too large: at most {MAX_RSA_BITS} bits")


def _ssh_strings(blob: bytes) -> list[bytes]:
    """Splits a blob into its SSH wire strings (uint32 length + bytes); refuses a truncated one."""
    fields, pos = [], 0
    while pos < len(blob):
        if len(blob) - pos < 4:
            raise InvalidKeyError("key blob is truncated")
        (n,) = struct.unpack(">I", blob[pos : pos + 4])
        if n > len(blob) - pos - 4:
            raise InvalidKeyError("key blob is truncated")
        fields.append(blob[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return fields


def _check_security_key(key_type: str, blob: bytes) -> None:
    """FIDO (sk-) keys, which cryptography does not load: the fields OpenSSH writes, nothing more."""
    fields = _ssh_strings(blob)
    if key_type == "sk-ssh-ed25519@openssh.com":
        ok = len(fields) == 3 and len(fields[1]) == 32
    else:  # sk-ecdsa-sha2-nistp256@openssh.com: curve, uncompressed point, application
        ok = len(fields) == 4 and fields[1] == b"nistp256" and len(fields[2]) == 65 and fields[2][0] == 4
    if not ok:
        raise InvalidKeyError(f"malformed {key_type} key")


def parse_public_key(line: str) -> PublicKey:
    """Parses `type base64 [comment]`; authorized_keys options are not accepted.

    Raises InvalidKeyError, and nothing else, for any line that is not a usable key."""
    if not isinstance(line, str):
        raise InvalidKeyError("a key must be a string: '<type> <base64> [comment]'")
    if len(line) > MAX_LINE:
        raise InvalidKeyError(f"key line too long ({len(line)} characters; the limit is {MAX_LINE})")
    fields = line.strip().split(None, 2)
    if len(fields) < 2:
        raise InvalidKeyError("expected '<type> <base64> [comment]'")
    key_type, data = fields[0], fields[1]
    if key_type not in KEY_TYPES:
        if key_type.endswith(CERT_SUFFIX):
            raise InvalidKeyError(f"{key_type[:60]} is a certificate; list its CA under certificateAuthorities")
        raise InvalidKeyError(f"unsupported key type {key_type[:40]!r}")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKeyError("key data is not valid base64") from None
    actual = blob_type(blob)
    if actual != key_type:
        raise InvalidKeyError(f"key data is a {actual[:40]!r} key, not {key_type!r}")
    if key_type.startswith("sk-"):
        _check_security_key(key_type, blob)
    else:
        _check_structure(key_type, data)
    return PublicKey(key_type, blob, fields[2] if len(fields) > 2 else "")
