"""Host keys: loaded from a directory or a Kubernetes Secret, generated once when absent.

Every replica and every restart must present the same host key, so a generated key is
written back to where it was looked for before it is used.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sshserver.observability.logevents import event
from sshserver.ssh.hostcerts import CA_PUBLIC_KEY, HostCertError, cert_entry, load_host_certificate

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


def with_certificates(keys: list[paramiko.PKey], entries: dict[str, bytes]) -> list[paramiko.PKey]:
    """The host keys, plus each one's host certificate when `podssh host-cert` stored one."""
    certs = []
    for name, key in zip(KEY_NAMES, keys, strict=True):
        line = entries.get(cert_entry(name))
        if line is not None:
            try:
                cert = load_host_certificate(key, line)
            except HostCertError as exc:
                raise HostKeyError(str(exc)) from None
            expired = cert.valid_before <= time.time()
            # An expired certificate makes clients that trust only the CA refuse the gateway.
            event(log, "host_certificate_loaded", logging.WARNING if expired else logging.INFO, key=name,
                  valid_before=cert.valid_before, expired=expired)
            certs.append(cert)
    return keys + certs


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
    entries = {cert_entry(n): (directory / cert_entry(n)).read_bytes() for n in KEY_NAMES
               if (directory / cert_entry(n)).exists()}
    return with_certificates(keys, entries)


def _decode(secret: object) -> dict[str, bytes]:
    try:
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}  # type: ignore[attr-defined]
    except (ValueError, TypeError):
        raise HostKeyError("the host key secret holds data that is not base64") from None


def read_secret(core_api: object, namespace: str, name: str) -> list[paramiko.PKey]:
    """The host keys in the Secret, never creating or changing it (`podssh known-hosts`)."""
    data = _decode(_read(core_api, namespace, name))
    missing = [n for n in KEY_NAMES if n not in data]
    if missing:
        raise HostKeyError(f"secret {namespace}/{name} lacks {', '.join(missing)} (no gateway has started yet?)")
    return [_load(n, data[n]) for n in KEY_NAMES]


def _read(core_api: object, namespace: str, name: str) -> object:
    from kubernetes.client.exceptions import ApiException

    try:
        return core_api.read_namespaced_secret(name, namespace)  # type: ignore[attr-defined]
    except ApiException as exc:
        raise HostKeyError(f"cannot read secret {namespace}/{name}: {exc.reason}") from None


def read_ca(core_api: object, namespace: str, name: str) -> str:
    """The host CA's public key line that `podssh host-cert` stored in the Secret."""
    line = _decode(_read(core_api, namespace, name)).get(CA_PUBLIC_KEY)
    if not line:
        raise HostKeyError(f"secret {namespace}/{name} has no host CA: sign the host keys with podssh host-cert first")
    return line.decode(errors="replace").strip()


def store_certificates(core_api: object, namespace: str, name: str, entries: dict[str, bytes]) -> None:
    """Adds host certificates and the CA's public key to the Secret (resourceVersion-checked)."""
    from kubernetes.client.exceptions import ApiException

    secret = _read(core_api, namespace, name)
    secret.data = dict(secret.data or {}) | {k: base64.b64encode(v).decode() for k, v in entries.items()}
    try:
        core_api.replace_namespaced_secret(name, namespace, secret)  # type: ignore[attr-defined]
    except ApiException as exc:
        raise HostKeyError(f"cannot update secret {namespace}/{name}: {exc.reason}") from None


def from_secret(core_api: object, namespace: str, name: str) -> list[paramiko.PKey]:
    """Reads the Secret and fills in the keys it lacks; creates it only when it is missing.

    The manifests ship the Secret empty and outside the kustomize base (manifests/keep/),
    so the gateway needs only get and update on that one name, never `create` on Secrets, and
    `kubectl delete -k manifests/` leaves the keys alone. Replicas that start together race
    with optimistic concurrency: the update carries the resourceVersion read, so the loser
    gets 409 and reads the winner's keys. Creating (for `podssh serve` run by hand with a
    kubeconfig that may) has no ownerReference: nothing garbage-collects it.
    """
    from kubernetes.client import V1ObjectMeta, V1Secret
    from kubernetes.client.exceptions import ApiException

    api = core_api
    where = f"{namespace}/{name}"
    for _attempt in range(3):
        try:
            secret = api.read_namespaced_secret(name, namespace)  # type: ignore[attr-defined]
        except ApiException as exc:
            if exc.status != 404:
                raise HostKeyError(f"cannot read secret {where}: {exc.reason}") from None
            secret = None
        if secret is None:
            body = V1Secret(
                metadata=V1ObjectMeta(name=name, namespace=namespace, labels={"app.kubernetes.io/name": "podssh"}),
                type="Opaque",
                data={n: base64.b64encode(_generate(n)).decode() for n in KEY_NAMES},
            )
            try:
                api.create_namespaced_secret(namespace, body)  # type: ignore[attr-defined]
                event(log, "host_key_generated", secret=where)
            except ApiException as exc:
                if exc.status == 403:
                    raise HostKeyError(f"secret {where} does not exist and may not be created here: apply "
                                       "it once with kubectl apply -k manifests/keep/") from None
                if exc.status != 409:  # 409: another replica created it first; read theirs
                    raise HostKeyError(f"cannot create secret {where}: {exc.reason}") from None
            continue
        data = _decode(secret)
        missing = [n for n in KEY_NAMES if n not in data]
        if not missing:
            return with_certificates([_load(n, data[n]) for n in KEY_NAMES], data)
        secret.data = dict(secret.data or {}) | {n: base64.b64encode(_generate(n)).decode() for n in missing}
        try:
            api.replace_namespaced_secret(name, namespace, secret)  # type: ignore[attr-defined]
            event(log, "host_key_generated", secret=where, keys=",".join(missing))
        except ApiException as exc:
            if exc.status != 409:  # 409: another replica filled it first; read theirs
                raise HostKeyError(f"cannot store host keys in secret {where}: {exc.reason}") from None
    raise HostKeyError(f"secret {where} could not be read or created")


def known_hosts_lines(keys: list[paramiko.PKey], *, host: str, port: int = 22, alias: str | None = None) -> list[str]:
    """known_hosts lines naming the gateway by its HostKeyAlias and by host[:port], so they
    work with `podssh ssh-config` and with a plain `ssh -p PORT user@HOST` alike."""
    names = [host if port == 22 else f"[{host}]:{port}"]
    if alias:
        names.insert(0, alias)
    for n in names:
        if not n or any(c.isspace() or c in ",#" for c in n):
            raise HostKeyError(f"{n!r} cannot be written in a known_hosts line")
    plain = [k for k in keys if not k.get_name().endswith("-cert-v01@openssh.com")]
    return [f"{','.join(names)} {key.get_name()} {key.get_base64()}" for key in plain]
