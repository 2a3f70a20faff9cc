"""OpenSSH host certificates presented by the gateway, and signing them with a host CA.

paramiko's server side offers only what `Transport.add_server_key` files under `key.get_name()`,
sends `key.asbytes()` as the host key blob in the key exchange and signs with
`key.sign_ssh_data()`. A host certificate is a different blob and algorithm name with the same
signature (PROTOCOL.certkeys: the signature is the plain key's), so a small PKey that answers
with the certificate and signs with the host key is all it takes; the transport must list the
certificate algorithms among its host key types (Gateway._transport). Clients that trust the CA
(`@cert-authority` in known_hosts, `podssh known-hosts --ca`) then need no per-gateway key.

The CA's private key never reaches the gateway: `podssh host-cert` signs with the operator's
CA key file and stores the certificates (and the CA's public key) in the host-key Secret.
"""

from __future__ import annotations

import base64
import time

import paramiko
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    SSHCertificate,
    SSHCertificateBuilder,
    SSHCertificateType,
    load_ssh_private_key,
    load_ssh_public_identity,
)

from sshserver.grants.keys import CERT_SUFFIX

CA_PUBLIC_KEY = "host_ca.pub"  # the Secret's entry for the CA's public key, for `known-hosts --ca`
MAX_VALIDITY = 10 * 366 * 86400


class HostCertError(ValueError):
    """A host certificate or CA that cannot be used; one line."""


def cert_entry(key_name: str) -> str:
    """The Secret entry (or file name) of the certificate of host key `key_name`."""
    return f"{key_name}-cert.pub"


class HostCertificateKey(paramiko.PKey):
    """A host key as its certificate: the kex sends the certificate, the host key signs."""

    def __init__(self, key: paramiko.PKey, cert_blob: bytes, valid_before: int = 2**64 - 1) -> None:
        self._key = key
        self._cert = cert_blob
        self._name = key.get_name() + CERT_SUFFIX
        self.valid_before = valid_before

    def get_name(self) -> str:
        return self._name

    def asbytes(self) -> bytes:
        return self._cert

    def get_bits(self) -> int:
        return self._key.get_bits()

    def can_sign(self) -> bool:
        return True

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> paramiko.Message:
        return self._key.sign_ssh_data(data)


def load_host_certificate(key: paramiko.PKey, line: bytes) -> HostCertificateKey:
    """Checks that `line` (a -cert.pub file) is a host certificate of exactly this key."""
    try:
        cert = load_ssh_public_identity(line.strip())
    except Exception as exc:  # cryptography raises more than ValueError on a damaged file
        raise HostCertError(f"host certificate for {key.get_name()} cannot be read: {type(exc).__name__}") from None
    if not isinstance(cert, SSHCertificate) or cert.type != SSHCertificateType.HOST:
        raise HostCertError(f"the certificate for {key.get_name()} is not a host certificate")
    certified = cert.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).split()[1]
    if base64.b64decode(certified) != key.asbytes():
        raise HostCertError(f"the host certificate for {key.get_name()} certifies another key")
    return HostCertificateKey(key, base64.b64decode(line.split()[1]), cert.valid_before)


def sign_host_key(ca_private: bytes, public_line: bytes, principals: list[str], validity: float,
                  key_id: str = "podssh gateway", now: float | None = None) -> tuple[bytes, bytes]:
    """(certificate line, CA public key line): the host key signed by the CA for these names."""
    try:
        ca = load_ssh_private_key(ca_private, password=None)
    except (ValueError, TypeError) as exc:
        raise HostCertError(f"the CA key cannot be loaded (it must be an unencrypted OpenSSH key): {exc}") from None
    if not principals or not all(p and p.isprintable() and " " not in p for p in principals):
        raise HostCertError("give the host names clients use (--principals NAME[,NAME])")
    if not 0 < validity <= MAX_VALIDITY:
        raise HostCertError("the validity must be between 1 s and 10 years")
    start = int(now if now is not None else time.time()) - 300  # clocks differ a little
    host_key = load_ssh_public_identity(public_line)
    builder = (SSHCertificateBuilder().public_key(host_key).type(SSHCertificateType.HOST)  # type: ignore[arg-type]
               .key_id(key_id.encode()).valid_principals([p.encode() for p in principals])
               .valid_after(start).valid_before(start + 300 + int(validity)).serial(int(time.time())))
    try:
        cert = builder.sign(ca)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise HostCertError(f"cannot sign with this CA key: {exc}") from None
    ca_line = ca.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    return cert.public_bytes(), ca_line


def cert_authority_line(ca_line: str, *, host: str, port: int = 22, alias: str | None = None) -> str:
    names = [host if port == 22 else f"[{host}]:{port}"]
    if alias:
        names.insert(0, alias)
    fields = ca_line.split()
    if len(fields) < 2:
        raise HostCertError("the host CA public key in the Secret is malformed")
    return f"@cert-authority {','.join(names)} {fields[0]} {fields[1]}"
