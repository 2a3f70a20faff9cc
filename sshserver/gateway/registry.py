"""The live sessions of this gateway, and the one place where a session is bound to a grant.

A grant's `maxSessions` is a count over bindings, so binding and counting happen together,
under one lock, here: a session claims its first grant when it starts (its own thread), and the
enforcer asks to rebind it when its grant changes (enforcer thread). Nothing else writes
`session.grant`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from sshserver.grants.access import Grant
from sshserver.kube.ephemeral import DebugContainer
from sshserver.kube.resolver import ResolvedTarget
from sshserver.observability.metrics import Metrics
from sshserver.observability.observer import EndReason, SessionObserver, SessionOutcome, SessionRecord
from sshserver.ssh.connection import Connection

log = logging.getLogger("podssh.gateway")


class LiveSession(Protocol):
    """How the registry and the enforcer see a session (sessions.lifecycle.Session is one)."""

    conn: Connection
    id: str
    kind: str
    grant: Grant | None
    resolved: ResolvedTarget | None
    started: float
    last_activity: float
    opened: bool
    warned: bool
    debug: DebugContainer | None  # the debug container the session runs in, if it does

    @property
    def done(self) -> bool: ...

    def allowed_by(self, grant: Grant) -> bool: ...

    def record(self) -> SessionRecord | None: ...

    def terminate(self, reason: EndReason | str, message: str | None = None) -> None: ...

    def notify(self, line: str) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


class SessionRegistry:
    """Owns the set of live sessions and their grant bindings; tells metrics and observers."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._sessions: set[LiveSession] = set()
        self.observers: list[SessionObserver] = []  # set up before serving; read-only after
        # Counts additions and first bindings: the enforcer sweeps again when it moved. Written
        # under the lock, read without it (one int).
        self.generation = 0

    def add(self, session: LiveSession) -> None:
        with self._lock:
            self._sessions.add(session)
            self.generation += 1

    def discard(self, session: LiveSession) -> None:
        with self._lock:
            self._sessions.discard(session)

    def live(self) -> list[LiveSession]:
        with self._lock:
            return list(self._sessions)

    def find(self, session_id: str) -> LiveSession | None:
        """The live session with this id (SessionRecord.session_id), or None."""
        with self._lock:
            return next((s for s in self._sessions if s.id == session_id), None)

    def _used(self, grant: Grant) -> int:
        return sum(1 for s in self._sessions if s.grant is not None and s.grant.uid == grant.uid)

    def claim(self, session: LiveSession, candidates: Sequence[Grant]) -> Grant | None:
        """Binds the session to the first grant under its maxSessions; atomic across sessions."""
        with self._lock:
            for grant in candidates:
                limit = grant.limits.max_sessions
                if limit is None or self._used(grant) < limit:
                    session.grant = grant
                    self.generation += 1
                    return grant
        return None

    def rebind(self, session: LiveSession, grant: Grant) -> bool:
        """The enforcer's request: bind a live session to `grant` (its own grant, edited, always
        succeeds; another one only under that grant's maxSessions). False: no place there."""
        with self._lock:
            current = session.grant
            if current is not None and current.uid == grant.uid:
                session.grant = grant  # new limits of the same grant
                return True
            limit = grant.limits.max_sessions
            if limit is not None and self._used(grant) >= limit:
                return False
            session.grant = grant
            return True

    def started(self, session: LiveSession) -> None:
        self._metrics.sessions_active.labels(session.kind).inc()
        debug = "true" if getattr(session, "debug", None) is not None else "false"  # ExecSession.debug
        self._metrics.sessions_started.labels(session.kind, debug).inc()
        record = session.record()
        if record is not None:
            self._tell(lambda o: o.session_started(record))

    def ended(self, session: LiveSession, outcome: SessionOutcome) -> None:
        self.discard(session)
        m = self._metrics
        m.sessions_ended.labels(outcome.reason).inc()
        duration = time.monotonic() - session.started
        if session.opened:
            m.sessions_active.labels(session.kind).dec()
            m.session_duration.labels(session.kind).observe(duration)
        record = session.record()
        if record is not None:
            full = replace(outcome, duration_s=round(duration, 3))
            self._tell(lambda o: o.session_ended(record, full))

    def _tell(self, call: Callable[[SessionObserver], None]) -> None:
        for observer in self.observers:
            try:
                call(observer)
            except Exception:
                log.exception("observer_failed")
