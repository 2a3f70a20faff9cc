"""Grants (the data of SSHAccess objects) and the immutable snapshot the server authorizes from.

The control plane builds a new AccessSnapshot whenever SSHAccess objects change and swaps it into
the AccessStore in one assignment; server threads only ever read whole snapshots.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from sshserver.grants.certificates import UserCertificate
from sshserver.grants.durations import parse_duration, parse_time
from sshserver.grants.envnames import valid_env_name
from sshserver.grants.keys import InvalidKeyError, PublicKey, parse_public_key
from sshserver.grants.labelselector import LabelSelector

DEFAULT_ENV = frozenset({"TERM", "LANG"})


class SessionKind(StrEnum):
    """What a session does; each kind is allowed by its own field of `spec.allow`."""

    SHELL = "shell"
    EXEC = "exec"
    SFTP = "sftp"
    FORWARD = "forward"  # ssh -L: allowed per port, by allow.portForward
    LIST = "list"  # ssh ls@gateway: the key's targets; any grant in force allows it (target.is_listing)


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

    def permits(self, kind: SessionKind, port: int | None = None) -> bool:
        if kind is SessionKind.FORWARD:
            return port is not None and port in self.port_forward
        if kind is SessionKind.LIST:
            return True  # a grant in force shows itself to its key, whatever it allows
        return {SessionKind.SHELL: self.shell, SessionKind.EXEC: self.exec, SessionKind.SFTP: self.sftp}[kind]

    def summary(self) -> str:
        """What the listing shows: `shell,exec,sftp,forward:80,8080` (forward last, so the ports
        after it read unambiguously), `-` for nothing."""
        kinds = [k for k, on in (("shell", self.shell), ("exec", self.exec), ("sftp", self.sftp)) if on]
        if self.port_forward:
            kinds.append("forward:" + ",".join(str(p) for p in sorted(self.port_forward)))
        return ",".join(kinds) or "-"


@dataclass(frozen=True)
class Debug:
    """spec.debug: the images the gateway may add as an ephemeral debug container to a pod of the
    grant, when the target container has no shell or the user asks for one; the first is the
    default, another is picked with the env request DEBUG_IMAGE_ENV."""

    images: tuple[str, ...]

    @property
    def default_image(self) -> str:
        return self.images[0]


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
    debug: Debug | None = None

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
        return default_env(name) or name in self.env


def default_env(name: str) -> bool:
    """TERM, LANG and LC_*: what clients send unasked (OpenSSH's default SendEnv), allowed by
    every grant."""
    return name in DEFAULT_ENV or name.startswith("LC_")


# Bounds on what one grant may hold, the same as the CRD's (manifests/crd.yaml), so that an
# --access file cannot carry what `kubectl apply` would refuse.
MAX_KEYS = 32
MAX_AUTHORITIES = 16
MAX_GROUPS = 16  # the impersonation policy checks each group: its CEL cost bounds them
MAX_CONTAINERS = 64
MAX_PORTS = 64
MAX_SELECTOR_TERMS = 32
MAX_SHELL_COMMAND = 64
MAX_SESSIONS = 1000
MAX_NAME = 253
MAX_DEBUG_IMAGES = 16
MAX_IMAGE = 512
# An image reference as a container's `image` takes it: [registry[:port]/]path[:tag][@digest],
# lower-case path components. Anything else (spaces, control characters, upper case) is refused
# before it reaches a pod spec.
_IMAGE = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
                    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?", re.ASCII)  # = the CRD's pattern
# The env request that picks a debug image of the grant's list (ssh -o SetEnv=PODSSH_DEBUG_IMAGE=…);
# it is never passed to the command.
DEBUG_IMAGE_ENV = "PODSSH_DEBUG_IMAGE"
# Control characters (C0, DEL, C1) in the user or a group would reach the Impersonate-User and
# Impersonate-Group HTTP headers in impersonation mode (CR/LF split headers) and the audit trail.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*", re.ASCII)

log = logging.getLogger("podssh.access")


def _invalid(message: str) -> GrantError:
    return GrantError("InvalidSpec", message)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def _mapping(value: Any, what: str) -> Mapping[str, Any] | None:
    """None when absent; refuses anything but an object."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _invalid(f"{what} must be an object, not {type(value).__name__}")
    return value


def _str_list(value: Any, what: str, *, max_items: int = 64, max_length: int = 4096, min_items: int = 0
              ) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(f"{what} must be a list of strings")
    if len(value) > max_items:
        raise _invalid(f"{what} has {len(value)} entries; the limit is {max_items}")
    if len(value) < min_items:
        raise _invalid(f"{what} must not be empty (leave it out instead)")
    for i, v in enumerate(value):
        if len(v) > max_length:
            raise _invalid(f"{what}[{i}] is longer than {max_length} characters")
    return value


def _bool(value: Any, what: str) -> bool:
    """Only real booleans: `"false"` is a string, and bool("false") would be True."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(f"{what} must be true or false, not {_shown(value)}")
    return value


def _plain_text(value: Any, what: str) -> str:
    """A non-empty string of at most MAX_NAME characters without control characters or
    spaces at either end (spec.user and spec.groups become Impersonate-* headers)."""
    if not isinstance(value, str) or not value:
        raise _invalid(f"{what} is required and must be a non-empty string")
    if len(value) > MAX_NAME:
        raise _invalid(f"{what} is longer than {MAX_NAME} characters")
    if _CONTROL.search(value):
        raise _invalid(f"{what} must not contain control characters (such as CR or LF)")
    if value != value.strip(" "):  # the API server trims header values: the policy would check another name
        raise _invalid(f"{what} must not start or end with a space")
    return value


def _k8s_name(value: Any, what: str, pattern: re.Pattern[str], limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(f"{what} is required and must be a non-empty string")
    if len(value) > limit or not pattern.fullmatch(value):
        raise _invalid(f"{what} {_shown(value)} is not a valid Kubernetes name")
    return value


def _keys(spec: Mapping[str, Any], field: str, max_items: int) -> list[PublicKey]:
    keys = []
    for i, line in enumerate(_str_list(spec.get(field), f"spec.{field}", max_items=max_items)):
        try:
            keys.append(parse_public_key(line))
        except InvalidKeyError as exc:
            raise GrantError("InvalidKey", f"spec.{field}[{i}]: {exc}") from None
    return keys


def _selector(pods: Mapping[str, Any]) -> LabelSelector:
    if "selector" not in pods:
        raise _invalid("spec.pods.selector is required")
    try:
        selector = LabelSelector.from_dict(pods["selector"], max_terms=MAX_SELECTOR_TERMS)
    except ValueError as exc:
        raise _invalid(f"spec.pods.selector: {exc}") from None
    if selector.empty:
        raise _invalid("spec.pods.selector must not be empty: an empty selector would cover every pod")
    return selector


def _containers(value: Any) -> frozenset[str] | None:
    """None (absent): every container. An empty list would read as "no container" to some and "all"
    to others: it is refused."""
    if value is None:
        return None
    names = _str_list(value, "spec.pods.containers", max_items=MAX_CONTAINERS, min_items=1)
    for i, name in enumerate(names):
        _k8s_name(name, f"spec.pods.containers[{i}]", _DNS_LABEL, 63)
    return frozenset(names)


def _allow(value: Any) -> Allow:
    spec = _mapping(value, "spec.allow")
    if spec is None:
        return Allow()
    ports = spec.get("portForward")
    if ports is None:
        ports = []
    if (not isinstance(ports, list) or len(ports) > MAX_PORTS
            or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports)):
        raise _invalid(f"spec.allow.portForward must be a list of at most {MAX_PORTS} ports (1-65535)")
    return Allow(
        shell=_bool(spec.get("shell"), "spec.allow.shell"),
        exec=_bool(spec.get("exec"), "spec.allow.exec"),
        sftp=_bool(spec.get("sftp"), "spec.allow.sftp"),
        port_forward=frozenset(ports),
    )


def _limits(value: Any) -> Limits:
    lim = _mapping(value, "spec.limits") or {}
    max_sessions = lim.get("maxSessions")
    if max_sessions is not None and (
            not isinstance(max_sessions, int) or isinstance(max_sessions, bool)
            or not 1 <= max_sessions <= MAX_SESSIONS):
        raise _invalid(f"spec.limits.maxSessions must be a whole number from 1 to {MAX_SESSIONS}")
    durations: dict[str, float | None] = {}
    for field_name in ("idleTimeout", "maxSessionDuration"):
        raw = lim.get(field_name)
        try:
            durations[field_name] = None if raw is None else parse_duration(raw)
        except ValueError as exc:
            raise _invalid(f"spec.limits.{field_name}: {exc}") from None
    return Limits(max_sessions=max_sessions, idle_timeout=durations["idleTimeout"],
                  max_session_duration=durations["maxSessionDuration"])


def _debug(value: Any) -> Debug | None:
    """spec.debug: absent means no debug containers; present needs at least one image."""
    spec = _mapping(value, "spec.debug")
    if spec is None:
        return None
    images = _str_list(spec.get("images"), "spec.debug.images", max_items=MAX_DEBUG_IMAGES, max_length=MAX_IMAGE,
                       min_items=1)
    if not images:
        raise _invalid("spec.debug.images must list at least one image")
    for i, image in enumerate(images):
        if not _IMAGE.fullmatch(image):
            raise _invalid(f"spec.debug.images[{i}] {_shown(image)} is not an image reference")
    if len(set(images)) != len(images):
        raise _invalid("spec.debug.images lists an image twice")
    return Debug(tuple(images))


def _time(spec: Mapping[str, Any], field_name: str) -> datetime | None:
    raw = spec.get(field_name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise _invalid(f"spec.{field_name}: {exc}") from None


def _parse_grant(obj: Any) -> Grant:
    """The parser proper: checks every field's type and bounds and raises GrantError naming the
    first problem. The fuzz harnesses call it directly to prove that it needs no safety net."""
    if not isinstance(obj, Mapping):
        raise _invalid(f"an SSHAccess object must be a mapping, not {type(obj).__name__}")
    meta = _mapping(obj.get("metadata"), "metadata") or {}
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise _invalid("spec is missing")
    if not meta.get("namespace") or not meta.get("name"):
        raise _invalid("metadata.namespace and metadata.name are required")
    namespace = _k8s_name(meta.get("namespace"), "metadata.namespace", _DNS_LABEL, 63)
    name = _k8s_name(meta.get("name"), "metadata.name", _DNS_SUBDOMAIN, MAX_NAME)
    uid = meta.get("uid")
    if uid is not None and not isinstance(uid, str):
        raise _invalid("metadata.uid must be a string")
    if spec.get("user") in (None, ""):
        raise _invalid("spec.user is required")
    user = _plain_text(spec.get("user"), "spec.user")
    keys = _keys(spec, "publicKeys", MAX_KEYS)
    authorities = _keys(spec, "certificateAuthorities", MAX_AUTHORITIES)
    if not keys and not authorities:
        raise GrantError("NoKeys", "spec.publicKeys and spec.certificateAuthorities are both empty")
    pods = _mapping(spec.get("pods"), "spec.pods")
    if pods is None:
        raise _invalid("spec.pods.selector is required")
    selector = _selector(pods)
    containers = _containers(pods.get("containers"))
    allow = _allow(spec.get("allow"))
    not_before, expires_at = _time(spec, "notBefore"), _time(spec, "expiresAt")
    limits = _limits(spec.get("limits"))
    if not_before and expires_at and expires_at <= not_before:
        raise _invalid("spec.expiresAt must be after spec.notBefore")
    command = spec.get("shellCommand")
    groups = _str_list(spec.get("groups"), "spec.groups", max_items=MAX_GROUPS, max_length=MAX_NAME)
    for i, group in enumerate(groups):
        _plain_text(group, f"spec.groups[{i}]")
    return Grant(
        namespace=namespace,
        name=name,
        uid=uid or f"{namespace}/{name}",
        user=user,
        keys=tuple(keys),
        selector=selector,
        authorities=tuple(authorities),
        containers=containers,
        allow=allow,
        env=frozenset(_str_list(spec.get("env"), "spec.env")),
        groups=tuple(groups),
        shell_command=(
            tuple(_str_list(command, "spec.shellCommand", max_items=MAX_SHELL_COMMAND, min_items=1))
            if command is not None else None
        ),
        not_before=not_before,
        expires_at=expires_at,
        limits=limits,
        debug=_debug(spec.get("debug")),
    )


def grant_from_object(obj: Mapping[str, Any]) -> Grant:
    """Validates one SSHAccess-shaped object; raises GrantError naming the first problem, and
    nothing else: one object the parser chokes on must only ever invalidate itself, never stop the
    inventory from applying other objects' changes (revocations) nor the gateway from starting.

    Called by the inventory on kopf's thread for every object at every change, and at start for
    --access files. `_parse_grant` checks every field; the catch-all below is a safety net that
    the fuzz harnesses show is never needed, and logs loudly if it ever is."""
    try:
        return _parse_grant(obj)
    except GrantError:
        raise
    except Exception as exc:  # see the docstring
        # Plain logging (this layer imports nothing of podssh); the JSON formatter shows the fields.
        log.error("grant_parser_error", extra={"fields": {"object": object_ref(obj), "error": type(exc).__name__}})
        raise _invalid(f"cannot be used ({type(exc).__name__})") from None


def object_ref(obj: Any) -> str:
    """namespace/name of an object, whatever its shape (for logs and error tables)."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return "?/?"
    return f"{str(meta.get('namespace'))[:63]}/{str(meta.get('name'))[:253]}"


@dataclass(frozen=True)
class Identity:
    """Who authenticated: a plain key, or a key certified by a CA."""

    fingerprint: str  # of the key (for a certificate: of the certificate blob)
    certificate: UserCertificate | None = None
    blob: bytes = b""  # the key or certificate blob: checked against --revoked-keys for as long as it is used


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
    errors = {object_ref(p.body): p.error for p in parsed if p.error is not None}
    return snapshot_of(parsed), errors
