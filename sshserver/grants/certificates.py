"""OpenSSH user certificates, treated as sshd treats them.

paramiko checks the signature made with the certified key; everything else is checked here:
the CA must be one some grant lists (looked up before its signature is verified, so an
unknown CA costs nothing), the CA's signature must verify and must not be SHA-1 (`ssh-rsa`),
RSA keys (CA or certified) must have at least 2048 bits, and the critical options are
honoured as sshd does: `source-address` and `force-command` are understood, any other one
refuses the certificate. The `permit-pty` and `permit-port-forwarding` extensions are kept
for the pty and direct-tcpip hooks. Anything else that goes wrong while parsing (whatever
cryptography raises) becomes a CertificateError, so the failure is audited and throttled.
"""

from __future__ import annotations

import base64
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    SSHCertificate,
    SSHCertificateType,
    load_ssh_public_identity,
)

from sshserver.grants.keys import CERT_SUFFIX, blob_type, fingerprint

FOREVER = 2**64 - 1
MIN_RSA_BITS = 2048
MAX_SOURCE_ADDRESSES = 256
# Signature algorithms a CA may use: SHA-1 (`ssh-rsa`) is refused, as OpenSSH 8.8+ does.
CA_SIGNATURE_ALGORITHMS = frozenset({
    "rsa-sha2-256", "rsa-sha2-512", "ssh-ed25519",
    "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
})
KNOWN_CRITICAL_OPTIONS = frozenset({b"source-address", b"force-command"})
# How many length-prefixed public-key fields follow the nonce in a certificate of each key type
# (PROTOCOL.certkeys); needed only to reach the signature, whose algorithm cryptography hides.
_KEY_FIELDS = {
    "ssh-rsa": 2, "ssh-dss": 4, "ssh-ed25519": 1,
    "ecdsa-sha2-nistp256": 2, "ecdsa-sha2-nistp384": 2, "ecdsa-sha2-nistp521": 2,
    "sk-ssh-ed25519@openssh.com": 2, "sk-ecdsa-sha2-nistp256@openssh.com": 3,
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    key_blob: bytes = b""  # the certified public key, as a plain key blob (for revocation)
    ca_blob: bytes = b""  # the CA's public key blob
    source_addresses: tuple[Network, ...] | None = None  # None: from anywhere
    force_command: str | None = None
    permit_pty: bool = True
    permit_port_forwarding: bool = True

    def valid_at(self, now: datetime) -> bool:
        ts = int(now.timestamp())
        return self.valid_after <= ts < self.valid_before

    def allows_source(self, peer: str) -> bool:
        """peer is "host:port" as the gateway writes it (IPv6 without brackets: "::1:5000", or
        with them; a PROXY-protocol peer may come bracketed); like sshd, an unparsable address
        is refused. An IPv4-mapped IPv6 peer is compared as the IPv4 address it is."""
        if self.source_addresses is None:
            return True
        host = peer.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == net.version and addr in net for net in self.source_addresses)


def is_certificate(blob: bytes) -> bool:
    try:
        return blob_type(blob).endswith(CERT_SUFFIX)
    except ValueError:
        return False


def parse_user_certificate(blob: bytes, known_ca: Callable[[str], bool] | None = None) -> UserCertificate:
    """Parses and checks a user certificate; raises CertificateError and nothing else.

    known_ca(fingerprint) says whether any grant trusts that CA: an unknown CA is refused
    before its signature is verified. Called in the connection's Transport thread.
    """
    try:
        return _parse(blob, known_ca)
    except CertificateError:
        raise
    except Exception as exc:  # cryptography raises more than ValueError on hostile input
        raise CertificateError(f"malformed certificate: {type(exc).__name__}") from None


def _parse(blob: bytes, known_ca: Callable[[str], bool] | None) -> UserCertificate:
    line = f"{blob_type(blob)} {base64.b64encode(blob).decode()}".encode()
    try:
        cert = load_ssh_public_identity(line)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"malformed certificate: {exc}") from None
    if not isinstance(cert, SSHCertificate):
        raise CertificateError("not a certificate")
    if cert.type != SSHCertificateType.USER:
        raise CertificateError("a host certificate cannot log in")
    ca_key = cert.signature_key()
    ca_blob = _blob(ca_key)
    ca_fp = fingerprint(ca_blob)
    if known_ca is not None and not known_ca(ca_fp):
        raise CertificateError(f"certificate signed by an unknown CA {ca_fp}")
    unknown = sorted(k.decode(errors="replace") for k in cert.critical_options if k not in KNOWN_CRITICAL_OPTIONS)
    if unknown:
        raise CertificateError(f"unsupported critical options: {', '.join(unknown)}")
    algorithm = signature_algorithm(blob)
    if algorithm not in CA_SIGNATURE_ALGORITHMS:
        raise CertificateError(f"CA signature algorithm {algorithm[:40]!r} is not accepted (SHA-1 or unknown)")
    key = cert.public_key()
    for what, k in (("CA", ca_key), ("certified", key)):
        if isinstance(k, rsa.RSAPublicKey) and k.key_size < MIN_RSA_BITS:
            raise CertificateError(f"{what} RSA key has {k.key_size} bits, fewer than {MIN_RSA_BITS}")
    try:
        cert.verify_cert_signature()
    except InvalidSignature:
        raise CertificateError("the CA signature does not verify") from None
    options = cert.critical_options
    force = options.get(b"force-command")
    try:
        force_command = force.decode() if force is not None else None
    except UnicodeDecodeError:
        raise CertificateError("force-command is not UTF-8") from None
    return UserCertificate(
        ca_fingerprint=ca_fp,
        principals=tuple(p.decode(errors="replace") for p in cert.valid_principals),
        key_id=cert.key_id.decode(errors="replace"),
        serial=cert.serial,
        valid_after=cert.valid_after,
        valid_before=cert.valid_before,
        key_blob=_blob(key),
        ca_blob=ca_blob,
        source_addresses=_source_addresses(options.get(b"source-address")),
        force_command=force_command,
        permit_pty=b"permit-pty" in cert.extensions,
        permit_port_forwarding=b"permit-port-forwarding" in cert.extensions,
    )


def _blob(key: object) -> bytes:
    line = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)  # type: ignore[attr-defined]
    return base64.b64decode(line.split()[1])


def _source_addresses(value: bytes | None) -> tuple[Network, ...] | None:
    """sshd's source-address: a comma-separated list of addresses or CIDR networks. A malformed
    list, or a network with host bits set (which ssh-keygen and sshd also refuse), refuses the
    certificate."""
    if value is None:
        return None
    try:
        entries = [e.strip() for e in value.decode("ascii").split(",")]
        if not entries or len(entries) > MAX_SOURCE_ADDRESSES or not all(entries):
            raise ValueError
        return tuple(ipaddress.ip_network(e, strict=True) for e in entries)
    except ValueError:
        raise CertificateError(f"malformed source-address {value[:80]!r}") from None


def signature_algorithm(blob: bytes) -> str:
    """The algorithm name of a certificate's CA signature: the last field of the blob.

    cryptography verifies the signature but does not say with which hash, so this walks the
    length-prefixed fields of PROTOCOL.certkeys up to it. Only ever called on a blob that
    cryptography has already parsed."""
    pos = 0

    def string() -> bytes:
        nonlocal pos
        if pos + 4 > len(blob):
            raise CertificateError("certificate truncated")
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        if pos + 4 + n > len(blob):
            raise CertificateError("certificate truncated")
        pos += 4 + n
        return blob[pos - n:pos]

    def skip(n: int) -> None:
        nonlocal pos
        if pos + n > len(blob):
            raise CertificateError("certificate truncated")
        pos += n

    cert_type = string().decode("ascii", "replace")
    fields = _KEY_FIELDS.get(cert_type.removesuffix(CERT_SUFFIX))
    if fields is None:
        raise CertificateError(f"unsupported certificate type {cert_type[:60]!r}")
    string()  # nonce
    for _ in range(fields):
        string()
    skip(8 + 4)  # serial, type
    for _ in range(2):  # key id, principals
        string()
    skip(8 + 8)  # valid after, valid before
    for _ in range(4):  # critical options, extensions, reserved, signature key
        string()
    signature = string()
    if pos != len(blob):
        raise CertificateError("data after the certificate's signature")
    blob, pos = signature, 0
    return string().decode("ascii", "replace")
