"""Documents users write by hand, generated: an SSHAccess grant and an ~/.ssh/config block."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from sshserver.grants.access import GrantError, grant_from_object
from sshserver.grants.durations import parse_duration

from . import GROUP, KIND, VERSION

ALLOW_NAMES = ("shell", "exec", "sftp")


def parse_selector(text: str) -> dict[str, str]:
    labels = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key or not re.fullmatch(r"[A-Za-z0-9_.\-/]+", key + value) or not value:
            raise ValueError(f"selector {text!r}: use key=value[,key=value]")
        labels[key] = value
    if not labels:
        raise ValueError("the selector must not be empty")
    return labels


def grant_manifest(*, user: str, keys: list[str], namespace: str, selector: str, name: str | None = None,
                   expires: str | None = None, allow: str = "shell,exec", ports: list[int] | None = None,
                   now: datetime | None = None) -> str:
    """An SSHAccess YAML; validated with the same code the gateway uses, so it applies cleanly."""
    allowed = [a.strip() for a in allow.split(",") if a.strip()]
    unknown = sorted(set(allowed) - set(ALLOW_NAMES))
    if unknown:
        raise ValueError(f"unknown --allow value {', '.join(unknown)} (use {', '.join(ALLOW_NAMES)})")
    spec: dict[str, Any] = {
        "user": user,
        "publicKeys": keys,
        "pods": {"selector": {"matchLabels": parse_selector(selector)}},
        "allow": {a: True for a in allowed} | ({"portForward": sorted(ports)} if ports else {}),
    }
    if expires:
        until = (now or datetime.now(UTC)) + timedelta(seconds=parse_duration(expires))
        spec["expiresAt"] = until.strftime("%Y-%m-%dT%H:%M:%SZ")
    safe_user = re.sub(r"[^a-z0-9-]+", "-", user.lower()).strip("-") or "user"
    obj = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name or f"{safe_user}-ssh", "namespace": namespace},
        "spec": spec,
    }
    try:
        grant_from_object(obj)
    except GrantError as exc:
        raise ValueError(str(exc)) from None
    return yaml.safe_dump(obj, sort_keys=False, width=1 << 16)


def read_keys(paths: list[Path]) -> list[str]:
    keys = []
    for path in paths:
        try:
            text = path.expanduser().read_text()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        if "PRIVATE KEY" in text:
            raise ValueError(f"{path} is a private key: pass the .pub file")
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not keys:
        raise ValueError("no public key given")
    return keys


def ssh_config(*, host: str, port: int, alias: str = "podssh", identity: str | None = None,
               known_hosts: str = "~/.ssh/podssh_known_hosts") -> str:
    """The gateway's host keys are pinned from `podssh known-hosts` (read from the cluster),
    never trusted on first use: HostKeyAlias names them the same whatever address is used."""
    for what, value in (("--host", host), ("--alias", alias), ("--known-hosts-file", known_hosts)):
        if not value or any(c.isspace() or c in "\"#," for c in value):
            raise ValueError(f"{what} {value!r} cannot be written in ssh_config")
    lines = [
        f"# podssh gateway: ssh NAMESPACE/POD@{alias}, scp FILE NAMESPACE/POD@{alias}:PATH",
        f"# Pin its host keys first: podssh known-hosts --host {host} --port {port} --alias {alias} > {known_hosts}",
        f"Host {alias}",
        f"    HostName {host}",
        f"    Port {port}",
        f"    HostKeyAlias {alias}",
        f"    UserKnownHostsFile {known_hosts}",
        "    StrictHostKeyChecking yes",
        "    # The target is the user name; never fall back to other authentication methods.",
        "    PreferredAuthentications publickey",
        "    ServerAliveInterval 30",
        "    # A replica killed outright refuses connections until its Service drops it (1-3 s).",
        "    ConnectionAttempts 3",
        "    SendEnv LANG LC_*",
    ]
    if identity:
        lines += [f"    IdentityFile {identity}", "    IdentitiesOnly yes"]
    return "\n".join(lines) + "\n"
