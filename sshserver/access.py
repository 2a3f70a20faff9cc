"""Grants (the data of SSHAccess objects) and the immutable snapshot the server authorizes from.

The control plane builds a new AccessSnapshot whenever SSHAccess objects change and swaps it into
the AccessStore in one assignment; server threads only ever read whole snapshots.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from .certificates import UserCertificate
from .durations import parse_duration, parse_time
from .envnames import valid_env_name
from .keys import InvalidKeyError, PublicKey, parse_public_key
from .labelselector import LabelSelector

DEFAULT_ENV = frozenset({"TERM", "LANG"})


class GrantError(ValueError):
    """An SSHAccess object that cannot be used; `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Allow:
    shell: bool = True
    exec: bool = True
    sftp: bool = False
    port_forward: frozenset[int] = frozenset()

    def permits(self, kind: str) -> bool:
        return bool(getattr(self, kind, False))


@dataclass(frozen=True)
class Limits:
    max_sessions: int | None = None
    idle_timeout: float | None = None
    max_session_duration: float | None = None


@dataclass(frozen=True)
class Grant:
    namespace: str
    name: str
    uid: str
    user: str
    keys: tuple[PublicKey, ...]
    selector: LabelSelector
    authorities: tuple[PublicKey, ...] = ()  # CAs whose user certificates name `user` as principal
    containers: frozenset[str] | None = None
    allow: Allow = field(default_factory=Allow)
    env: frozenset[str] = frozenset()
    groups: tuple[str, ...] = ()  # sent as Impersonate-Group in impersonation mode
    shell_command: tuple[str, ...] | None = None
    not_before: datetime | None = None
    expires_at: datetime | None = None
    limits: Limits = field(default_factory=Limits)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def active_at(self, now: datetime) -> bool:
        if self.not_before and now < self.not_before:
            return False
        return not (self.expires_at and now >= self.expires_at)

    def covers(self, namespace: str, labels: Mapping[str, str] | None, container: str | None) -> bool:
        """container None: the pod as a whole (a forwarded port), whatever the container allowlist."""
        if namespace != self.namespace or not self.selector.matches(labels):
            return False
        return self.containers is None or container is None or container in self.containers

    def env_allowed(self, name: str) -> bool:
        """Whether a client may set `name`: a plain identifier (whatever the grant lists), and
        TERM, LANG, LC_* or a name of the grant's spec.env."""
        if not valid_env_name(name):
            return False
        return name in DEFAULT_ENV or name.startswith("LC_") or name in self.env


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GrantError("InvalidSpec", f"{what} must be a list of strings")
    return value


def _keys(spec: Mapping[str, Any], field: str) -> list[PublicKey]:
    keys = []
    for i, line in enumerate(_str_list(spec.get(field), f"spec.{field}")):
        try:
            keys.append(parse_public_key(line))
        except InvalidKeyError as exc:
            raise GrantError("InvalidKey", f"spec.{field}[{i}]: {exc}") from None
    return keys


def grant_from_object(obj: Mapping[str, Any]) -> Grant:
    """Validates one SSHAccess-shaped object; raises GrantError naming the first problem."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise GrantError("InvalidSpec", "spec is missing")
    namespace, name = meta.get("namespace"), meta.get("name")
    if not namespace or not name:
        raise GrantError("InvalidSpec", "metadata.namespace and metadata.name are required")
    user = spec.get("user")
    if not isinstance(user, str) or not user:
        raise GrantError("InvalidSpec", "spec.user is required")
    keys = _keys(spec, "publicKeys")
    authorities = _keys(spec, "certificateAuthorities")
    if not keys and not authorities:
        raise GrantError("NoKeys", "spec.publicKeys and spec.certificateAuthorities are both empty")
    pods = spec.get("pods")
    if not isinstance(pods, Mapping) or "selector" not in pods:
        raise GrantError("InvalidSpec", "spec.pods.selector is required")
    try:
        selector = LabelSelector.from_dict(pods["selector"])
    except ValueError as exc:
        raise GrantError("InvalidSpec", f"spec.pods.selector: {exc}") from None
    containers = pods.get("containers")
    allow_spec = spec.get("allow")
    if allow_spec is None:
        allow = Allow()
    elif isinstance(allow_spec, Mapping):
        ports = allow_spec.get("portForward") or []
        if not isinstance(ports, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
            raise GrantError("InvalidSpec", "spec.allow.portForward must be a list of ports (1-65535)")
        allow = Allow(
            shell=bool(allow_spec.get("shell", False)),
            exec=bool(allow_spec.get("exec", False)),
            sftp=bool(allow_spec.get("sftp", False)),
            port_forward=frozenset(ports),
        )
    else:
        raise GrantError("InvalidSpec", "spec.allow must be an object")
    try:
        not_before = parse_time(spec["notBefore"]) if spec.get("notBefore") else None
        expires_at = parse_time(spec["expiresAt"]) if spec.get("expiresAt") else None
        lim = spec.get("limits") or {}
        limits = Limits(
            max_sessions=int(lim["maxSessions"]) if lim.get("maxSessions") is not None else None,
            idle_timeout=parse_duration(lim["idleTimeout"]) if lim.get("idleTimeout") else None,
            max_session_duration=(
                parse_duration(lim["maxSessionDuration"]) if lim.get("maxSessionDuration") else None
            ),
        )
    except (ValueError, TypeError) as exc:
        raise GrantError("InvalidSpec", str(exc)) from None
    if not_before and expires_at and expires_at <= not_before:
        raise GrantError("InvalidSpec", "spec.expiresAt must be after spec.notBefore")
    command = spec.get("shellCommand")
    return Grant(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or f"{namespace}/{name}"),
        user=user,
        keys=tuple(keys),
        selector=selector,
        authorities=tuple(authorities),
        containers=frozenset(_str_list(containers, "spec.pods.containers")) if containers else None,
        allow=allow,
        env=frozenset(_str_list(spec.get("env"), "spec.env")),
        groups=tuple(_str_list(spec.get("groups"), "spec.groups")),
        shell_command=tuple(_str_list(command, "spec.shellCommand")) if command else None,
        not_before=not_before,
        expires_at=expires_at,
        limits=limits,
    )


@dataclass(frozen=True)
class Identity:
    """Who authenticated: a plain key, or a key certified by a CA."""

    fingerprint: str  # of the key (for a certificate: of the certificate blob)
    certificate: UserCertificate | None = None


@dataclass(frozen=True)
class AccessSnapshot:
    """Every usable grant at one moment, indexed by key fingerprint."""

    grants: tuple[Grant, ...] = ()
    built_at: float = field(default_factory=time.time)
    populated: bool = True

    def __post_init__(self) -> None:
        keys: dict[str, list[Grant]] = {}
        cas: dict[str, list[Grant]] = {}
        for grant in self.grants:
            for key in grant.keys:
                keys.setdefault(key.fingerprint, []).append(grant)
            for ca in grant.authorities:
                cas.setdefault(ca.fingerprint, []).append(grant)
        object.__setattr__(self, "_by_key", MappingProxyType({k: tuple(v) for k, v in keys.items()}))
        object.__setattr__(self, "_by_ca", MappingProxyType({k: tuple(v) for k, v in cas.items()}))

    def grants_for_fingerprint(self, fp: str, now: datetime | None = None) -> tuple[Grant, ...]:
        now = now or datetime.now(UTC)
        found: tuple[Grant, ...] = self._by_key.get(fp, ())  # type: ignore[attr-defined]
        return tuple(g for g in found if g.active_at(now))

    def grants_for_certificate(self, cert: UserCertificate, now: datetime | None = None) -> tuple[Grant, ...]:
        now = now or datetime.now(UTC)
        if not cert.valid_at(now):
            return ()
        found: tuple[Grant, ...] = self._by_ca.get(cert.ca_fingerprint, ())  # type: ignore[attr-defined]
        return tuple(g for g in found if g.active_at(now) and g.user in cert.principals)

    def has_authority(self, ca_fingerprint: str) -> bool:
        """Whether some grant trusts this CA: asked before a certificate's signature is verified."""
        return ca_fingerprint in self._by_ca  # type: ignore[attr-defined]

    def grants_for(self, identity: Identity, now: datetime | None = None) -> tuple[Grant, ...]:
        if identity.certificate is not None:
            return self.grants_for_certificate(identity.certificate, now)
        return self.grants_for_fingerprint(identity.fingerprint, now)

    def grant_by_uid(self, uid: str) -> Grant | None:
        return next((g for g in self.grants if g.uid == uid), None)


EMPTY = AccessSnapshot(populated=False)


class AccessStore:
    """Holds the current snapshot; swapping it is one reference assignment."""

    def __init__(self, snapshot: AccessSnapshot = EMPTY) -> None:
        self._snapshot = snapshot
        self._listeners: list[Callable[[AccessSnapshot], None]] = []
        self._lock = threading.Lock()

    @property
    def current(self) -> AccessSnapshot:
        return self._snapshot

    def subscribe(self, listener: Callable[[AccessSnapshot], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def replace(self, snapshot: AccessSnapshot) -> None:
        self._snapshot = snapshot
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(snapshot)


@dataclass(frozen=True)
class ParsedObject:
    """One SSHAccess object with either its grant or why it grants nothing."""

    body: Mapping[str, Any]
    grant: Grant | None
    error: GrantError | None


def parse_objects(objects: Iterable[Mapping[str, Any]]) -> list[ParsedObject]:
    """Parses every object; a bad one is reported with its error, never fatal to the others."""
    parsed = []
    for obj in objects:
        try:
            parsed.append(ParsedObject(obj, grant_from_object(obj), None))
        except GrantError as exc:
            parsed.append(ParsedObject(obj, None, exc))
    return parsed


def snapshot_of(parsed: Iterable[ParsedObject]) -> AccessSnapshot:
    return AccessSnapshot(tuple(p.grant for p in parsed if p.grant is not None))


def snapshot_from_objects(objects: Iterable[Mapping[str, Any]]) -> tuple[AccessSnapshot, dict[str, GrantError]]:
    """Builds a snapshot from every valid object; bad objects are returned by namespace/name."""
    parsed = parse_objects(objects)
    errors = {
        f"{(p.body.get('metadata') or {}).get('namespace')}/{(p.body.get('metadata') or {}).get('name')}": p.error
        for p in parsed if p.error is not None
    }
    return snapshot_of(parsed), errors
