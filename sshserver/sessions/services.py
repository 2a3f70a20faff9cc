"""What a session uses of the gateway, and nothing more: the narrow waist between the sessions
and the gateway core, which builds one `SessionServices` and hands it to every session.

Sessions never see the Gateway. The registry is an interface owned here (the gateway core
implements it), so dependencies point one way: gateway → sessions → kube/ssh → grants.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sshserver.config.settings import GatewaySettings
from sshserver.grants.access import AccessStore, Grant, Identity
from sshserver.kube.client import KubeClient
from sshserver.kube.keepalive import ApiKeepalive
from sshserver.kube.resolver import PodResolver
from sshserver.observability.audit import AuditTrail
from sshserver.observability.metrics import Metrics
from sshserver.observability.observer import SessionOutcome
from sshserver.sessions.hangupqueue import HangupQueue
from sshserver.ssh.connection import Connection


class Registered(Protocol):
    """A session as the registry sees it (lifecycle.Session is one; the gateway's registry
    reads more of it: see gateway/registry.LiveSession)."""

    grant: Grant | None


class SessionRegistry(Protocol):
    """The gateway's account of live sessions; the only writer of a session's grant binding."""

    def claim(self, session: Registered, candidates: Sequence[Grant]) -> Grant | None:
        """Binds the session to the first candidate under its maxSessions, atomically across
        sessions; None when every one is full. Called once, by the session's own thread."""

    def started(self, session: Registered) -> None:
        """The session runs (metrics, observers). Session thread."""

    def ended(self, session: Registered, outcome: SessionOutcome) -> None:
        """The session is over and gives back its place. Session thread, exactly once."""


@dataclass(frozen=True)
class SessionServices:
    settings: GatewaySettings
    store: AccessStore
    kube: KubeClient
    resolver: PodResolver
    keepalive: ApiKeepalive
    audit: AuditTrail
    metrics: Metrics
    registry: SessionRegistry
    control: Callable[..., Any]  # submit() of the gateway's small control pool
    hangups: HangupQueue | None = None  # the hangup of dropped sessions (settings.hang_up)

    def run_in_control(self, fn: Callable[..., Any], *args: Any) -> None:
        """Small writes (a resize, a notice) that the calling thread must not block on."""
        with contextlib.suppress(RuntimeError):  # raised once the pool is shut down
            self.control(fn, *args)

    def api_error(self, reason: str) -> None:
        self.metrics.api_errors.labels(reason).inc()

    def revoked(self, identity: Identity) -> str | None:
        """Why --revoked-keys refuses this key or certificate now, or None (re-read on change)."""
        revoked = self.settings.revoked_keys
        return revoked.why_revoked(identity.blob, identity.certificate) if revoked is not None else None

    def revocations(self) -> object:
        """The --revoked-keys list in force (a new object whenever the file changed), or None:
        the enforcer sweeps again when it is another one."""
        revoked = self.settings.revoked_keys
        return revoked.current() if revoked is not None else None

    def current_grants(self, conn: Connection) -> tuple[Grant, ...]:
        """The key's grants in the snapshot in force now (not the one at login), none once the
        key is in --revoked-keys (a multiplexed connection outlives the login it was made by)."""
        if conn.identity is None or self.revoked(conn.identity):
            return ()
        return self.store.current.grants_for(conn.identity, datetime.now(UTC))
