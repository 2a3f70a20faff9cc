"""Documents users write by hand, generated: an SSHAccess grant and an ~/.ssh/config block."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from sshserver.grants.access import GrantError, grant_from_object
from sshserver.grants.durations import parse_duration
from sshserver.grants.target import TargetError, parse_target

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


_UNSAFE_IN_CONFIG = "\"#,"
_PATTERN_CHARS = "*?!"


def _config_word(what: str, value: str, extra: str = "") -> str:
    """A value ssh_config reads as one word: no blanks, quotes, comments or separators (and, for
    a Host name, no pattern characters, which would make it match other hosts)."""
    if not value or any(c.isspace() or c in _UNSAFE_IN_CONFIG + extra for c in value):
        raise ValueError(f"{what} {value!r} cannot be written in ssh_config")
    return value


def config_targets(targets: list[str], names: list[str]) -> list[tuple[str, str]]:
    """(Host name, target) pairs from repeated --target and --name, paired in order; a target
    without a name is named after itself ("shop/deploy/web" -> "shop-deploy-web")."""
    if len(names) > len(targets):
        raise ValueError("--name given without its --target (one --name per --target, in order)")
    pairs = []
    for i, text in enumerate(targets):
        try:
            target = parse_target(text)
        except TargetError as exc:
            raise ValueError(f"--target {text!r}: {exc}") from None
        if target.namespace is None:
            raise ValueError(f"--target {text!r}: name its namespace (NAMESPACE/POD or NAMESPACE/KIND/NAME)")
        name = names[i] if i < len(names) else str(target).replace("/", "-").replace(":", "-")
        pairs.append((_config_word("--name", name, _PATTERN_CHARS), str(target)))
    seen = [name for name, _ in pairs]
    if len(set(seen)) != len(seen):
        raise ValueError("--name: each Host name once")
    return pairs


def ssh_config(*, host: str, port: int, alias: str = "podssh", identity: str | None = None,
               known_hosts: str = "~/.ssh/podssh_known_hosts",
               targets: list[tuple[str, str]] | None = None) -> str:
    """The gateway's host keys are pinned from `podssh known-hosts` (read from the cluster),
    never trusted on first use: HostKeyAlias names them the same whatever address is used.

    `targets` are (Host name, target) pairs: each gets a Host block of its own with `User` set to
    the target, because scp and rsync read `a/b@host:` as a local path: `scp f shop-web:/tmp/`
    and `rsync -e ssh dir/ shop-web:/srv/` then work as written."""
    _config_word("--host", host)
    _config_word("--alias", alias, _PATTERN_CHARS)
    _config_word("--known-hosts-file", known_hosts)
    if identity is not None:
        _config_word("--identity", identity)
    pairs = targets or []
    if alias in {name for name, _ in pairs}:
        raise ValueError(f"--name {alias!r} is the gateway's --alias")
    lines = [
        f"# podssh gateway: ssh NAMESPACE/POD@{alias}. scp and rsync read 'NAMESPACE/POD@{alias}:' as a local",
        f"# path: give the target as the user, scp -o User=NAMESPACE/POD FILE {alias}:/PATH, or as a URL,",
        f"# scp FILE scp://NAMESPACE%2FPOD@{alias}//PATH, or add a Host per target (podssh ssh-config --target).",
        f"# Pin its host keys first: podssh known-hosts --host {host} --port {port} --alias {alias} > {known_hosts}",
        *_host_block(alias, host, port, alias, identity, known_hosts, None),
    ]
    for name, target in pairs:
        lines += ["", f"# {target}: ssh {name}, scp FILE {name}:/PATH, rsync -e ssh DIR/ {name}:/PATH"]
        lines += _host_block(name, host, port, alias, identity, known_hosts, target)
    return "\n".join(lines) + "\n"


def _host_block(name: str, host: str, port: int, alias: str, identity: str | None, known_hosts: str,
                user: str | None) -> list[str]:
    """One Host block; every block pins the same keys (HostKeyAlias is the gateway's alias)."""
    lines = [
        f"Host {name}",
        f"    HostName {host}",
        f"    Port {port}",
        *([f"    User {user}"] if user else []),
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
    return lines
