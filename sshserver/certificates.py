"""OpenSSH user certificates: paramiko checks the signature made with the certified key; the
CA's signature over the certificate, its type, principals and validity are checked here."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    SSHCertificate,
    SSHCertificateType,
    load_ssh_public_identity,
)

from .keys import CERT_SUFFIX, blob_type, fingerprint

FOREVER = 2**64 - 1


class CertificateError(ValueError):
    """A certificate that must not be accepted; the message goes to the log, not the client."""


@dataclass(frozen=True)
class UserCertificate:
    ca_fingerprint: str
    principals: tuple[str, ...]
    key_id: str
    serial: int
    valid_after: int
    valid_before: int

    def valid_at(self, now: datetime) -> bool:
        ts = int(now.timestamp())
        return self.valid_after <= ts < self.valid_before


def is_certificate(blob: bytes) -> bool:
    try:
        return blob_type(blob).endswith(CERT_SUFFIX)
    except ValueError:
        return False


def parse_user_certificate(blob: bytes) -> UserCertificate:
    line = f"{blob_type(blob)} {base64.b64encode(blob).decode()}".encode()
    try:
        cert = load_ssh_public_identity(line)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"malformed certificate: {exc}") from None
    if not isinstance(cert, SSHCertificate):
        raise CertificateError("not a certificate")
    if cert.type != SSHCertificateType.USER:
        raise CertificateError("a host certificate cannot log in")
    if cert.critical_options:
        names = ", ".join(sorted(k.decode(errors="replace") for k in cert.critical_options))
        raise CertificateError(f"unsupported critical options: {names}")
    try:
        cert.verify_cert_signature()
    except InvalidSignature:
        raise CertificateError("the CA signature does not verify") from None
    ca_line = cert.signature_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    ca_blob = base64.b64decode(ca_line.split()[1])
    return UserCertificate(
        ca_fingerprint=fingerprint(ca_blob),
        principals=tuple(p.decode(errors="replace") for p in cert.valid_principals),
        key_id=cert.key_id.decode(errors="replace"),
        serial=cert.serial,
        valid_after=cert.valid_after,
        valid_before=cert.valid_before,
    )
