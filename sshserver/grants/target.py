"""The SSH user name names the target: `[namespace/]pod[:container]` or
`namespace/kind/name[:container]` (kind as kubectl spells workload aliases); or it is the
reserved name `ls`, which names no target but asks for the list of the key's targets."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_USERNAME = 512

# `ssh ls@gateway [NAMESPACE]` lists the key's targets instead of entering one. A pod called
# `ls` is still reached with its namespace (`ns/ls`): only the bare name is reserved.
LISTING_USER = "ls"

# kubectl's aliases for the workload kinds a target may name, to the API plural.
WORKLOAD_KINDS: dict[str, str] = {
    alias: plural
    for plural, aliases in {
        "deployments": ("deploy", "deployment", "deployments"),
        "statefulsets": ("sts", "statefulset", "statefulsets"),
        "daemonsets": ("ds", "daemonset", "daemonsets"),
        "replicasets": ("rs", "replicaset", "replicasets"),
        "jobs": ("job", "jobs"),
    }.items()
    for alias in aliases
}

# Matched with fullmatch: `$` also matches before a trailing newline ("web\n" would pass).
_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?", re.ASCII)
_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*", re.ASCII)


class TargetError(ValueError):
    """A target that cannot be used; the message is shown to the SSH user as is."""


@dataclass(frozen=True)
class Target:
    namespace: str | None
    name: str
    kind: str | None = None  # API plural of a workload, None for a pod
    container: str | None = None

    def __str__(self) -> str:
        parts = [p for p in (self.namespace, _short_kind(self.kind), self.name) if p]
        text = "/".join(parts)
        return f"{text}:{self.container}" if self.container else text


def _short_kind(plural: str | None) -> str | None:
    return {"deployments": "deploy", "statefulsets": "sts", "daemonsets": "ds",
            "replicasets": "rs", "jobs": "job"}.get(plural or "", plural)


def _check(value: str, what: str, pattern: re.Pattern[str], limit: int) -> str:
    if not value:
        raise TargetError(f"empty {what} in target")
    if len(value) > limit or not pattern.fullmatch(value):
        shown = value if len(value) <= 64 else value[:64] + "…"
        raise TargetError(f"invalid {what} {shown!r}: expected a Kubernetes name (lowercase a-z, 0-9, '-')")
    return value


def is_listing(username: str | None) -> bool:
    """Whether the SSH user name asks for the listing of targets rather than naming one (the
    hooks then start a listing session, never a pod session)."""
    return username == LISTING_USER


def parse_listing_filter(command: str | None) -> str | None:
    """The namespace of `ssh ls@gateway NAMESPACE` (None: every namespace); anything but one
    namespace name is a TargetError."""
    words = (command or "").split()
    if not words:
        return None
    if len(words) > 1:
        raise TargetError(f"usage: ssh {LISTING_USER}@GATEWAY [NAMESPACE] (one namespace, not {len(words)} words)")
    return _check(words[0], "namespace", _LABEL, 63)


def parse_target(username: str) -> Target:
    if is_listing(username):  # never searched for as a pod in every namespace
        raise TargetError(f"{LISTING_USER!r} lists your targets and names none: a pod called {LISTING_USER} "
                          f"is NAMESPACE/{LISTING_USER}")
    if len(username) > MAX_USERNAME:
        raise TargetError(f"user name too long ({len(username)} characters; the limit is {MAX_USERNAME})")
    if not username:
        raise TargetError("empty user name: use [namespace/]pod[:container] or namespace/kind/name")
    path, sep, container = username.partition(":")
    if sep:
        _check(container, "container name", _LABEL, 63)
    parts = path.split("/")
    if len(parts) == 1:
        namespace, kind, name = None, None, parts[0]
    elif len(parts) == 2:
        namespace, kind, name = parts[0], None, parts[1]
    elif len(parts) == 3:
        namespace, alias, name = parts
        kind = WORKLOAD_KINDS.get(alias.lower())
        if kind is None:
            known = ", ".join(sorted({"deploy", "sts", "ds", "rs", "job"}))
            raise TargetError(f"unknown workload kind {alias[:32]!r} (known: {known})")
    else:
        raise TargetError("too many '/' in target: use [namespace/]pod[:container] or namespace/kind/name")
    if namespace is not None:
        _check(namespace, "namespace", _LABEL, 63)
    _check(name, "workload name" if kind else "pod name", _SUBDOMAIN, 253)
    return Target(namespace=namespace, name=name, kind=kind, container=container or None)
