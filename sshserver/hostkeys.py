"""Host keys: loaded from a directory or a Kubernetes Secret, generated once when absent.

Every replica and every restart must present the same host key, so a generated key is
written back to where it was looked for before it is used.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from .logevents import event

log = logging.getLogger("podssh.hostkeys")

KEY_NAMES = ("ssh_host_ed25519_key", "ssh_host_ecdsa_key")
_GENERATORS: dict[str, Callable[[], object]] = {
    "ssh_host_ed25519_key": ed25519.Ed25519PrivateKey.generate,
    "ssh_host_ecdsa_key": lambda: ec.generate_private_key(ec.SECP256R1()),
}
_LOADERS: dict[str, type[paramiko.PKey]] = {
    "ssh_host_ed25519_key": paramiko.Ed25519Key,
    "ssh_host_ecdsa_key": paramiko.ECDSAKey,
}


class HostKeyError(Exception):
    pass


def _generate(name: str) -> bytes:
    key = _GENERATORS[name]()
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )


def _load(name: str, pem: bytes) -> paramiko.PKey:
    try:
        return _LOADERS[name].from_private_key(io.StringIO(pem.decode()))
    except (paramiko.SSHException, ValueError, UnicodeDecodeError) as exc:
        raise HostKeyError(f"host key {name} cannot be loaded: {exc}") from None


def from_directory(directory: Path) -> list[paramiko.PKey]:
    directory.mkdir(parents=True, exist_ok=True)
    keys = []
    for name in KEY_NAMES:
        path = directory / name
        if not path.exists():
            pem = _generate(name)
            fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            os.replace(path.with_suffix(".tmp"), path)
            event(log, "host_key_generated", path=str(path))
        keys.append(_load(name, path.read_bytes()))
    return keys


def from_secret(core_api: object, namespace: str, name: str) -> list[paramiko.PKey]:
    """Reads the Secret, creating it with fresh keys when missing; a creation race is lost politely."""
    from kubernetes.client import V1ObjectMeta, V1Secret
    from kubernetes.client.exceptions import ApiException

    api = core_api
    for _attempt in range(3):
        try:
            secret = api.read_namespaced_secret(name, namespace)  # type: ignore[attr-defined]
            data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
            missing = [n for n in KEY_NAMES if n not in data]
            if not missing:
                return [_load(n, data[n]) for n in KEY_NAMES]
            raise HostKeyError(f"secret {namespace}/{name} lacks {', '.join(missing)}")
        except ApiException as exc:
            if exc.status != 404:
                raise HostKeyError(f"cannot read secret {namespace}/{name}: {exc.reason}") from None
        body = V1Secret(
            metadata=V1ObjectMeta(name=name, namespace=namespace, labels={"app.kubernetes.io/name": "podssh"}),
            type="Opaque",
            data={n: base64.b64encode(_generate(n)).decode() for n in KEY_NAMES},
        )
        try:
            api.create_namespaced_secret(namespace, body)  # type: ignore[attr-defined]
            event(log, "host_key_generated", secret=f"{namespace}/{name}")
        except ApiException as exc:
            if exc.status != 409:  # 409: another replica created it first; read theirs
                raise HostKeyError(f"cannot create secret {namespace}/{name}: {exc.reason}") from None
    raise HostKeyError(f"secret {namespace}/{name} could not be read or created")
