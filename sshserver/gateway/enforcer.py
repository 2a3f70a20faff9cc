"""Keeps live sessions within their grants: revocation, expiry and limits, checked on every
snapshot swap and on a short tick (expiry and limits are a matter of time, not of events)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sshserver.grants.access import AccessSnapshot, Grant
from sshserver.observability.logevents import event

if TYPE_CHECKING:
    from sshserver.gateway.core import Gateway
    from sshserver.sessions.lifecycle import Bridge as Session

log = logging.getLogger("podssh.enforcer")

WARN_BEFORE_END = 60.0


@dataclass(frozen=True)
class Verdict:
    reason: str  # revoked, expired, idle, limit
    message: str


def covering_grant(session: Session, grants: tuple[Grant, ...]) -> Grant | None:
    """The grant that still allows this session: its own if it does, else any other."""
    r = session.resolved
    if r is None:
        return None
    ok = [g for g in grants if g.covers(r.namespace, r.labels, r.container) and session.allowed_by(g)]
    same = [g for g in ok if session.grant is not None and g.uid == session.grant.uid]
    return (same or ok or [None])[0]


def judge(session: Session, snapshot: AccessSnapshot, now: datetime, mono: float,
          claim: Callable[[Session, Grant], bool]) -> Verdict | None:
    """Whether a live session may go on. `claim` moves the session onto another covering grant
    when its own no longer covers it, counted against that grant's maxSessions (atomically)."""
    if session.grant is None or session.conn.identity is None:
        return None  # not started yet: the session checks its grant itself when it starts
    grant = covering_grant(session, snapshot.grants_for(session.conn.identity, now))
    if grant is None:
        old = snapshot.grant_by_uid(session.grant.uid)
        if old is not None and old.expires_at is not None and now >= old.expires_at:
            return Verdict("expired", f"access {old.ref} expired at {old.expires_at.isoformat()}")
        cert = session.conn.identity.certificate
        if cert is not None and not cert.valid_at(now):
            return Verdict("expired", "your certificate expired")
        return Verdict("revoked", f"access {session.grant.ref} was revoked")
    if session.grant.uid != grant.uid and not claim(session, grant):
        # Its own grant no longer covers it; another one would, but has no free place: moving
        # the session there would exceed that grant's maxSessions.
        return Verdict("limit", f"access {session.grant.ref} was revoked and {grant.ref} allows at most "
                                f"{grant.limits.max_sessions} concurrent sessions")
    session.grant = grant  # the same grant, perhaps edited (new limits), or the one just claimed
    limits = grant.limits
    if limits.max_session_duration is not None:
        left = limits.max_session_duration - (mono - session.started)
        if left <= 0:
            return Verdict("limit", f"session reached its maximum duration ({int(limits.max_session_duration)}s)")
        if left <= WARN_BEFORE_END and not session.warned:
            session.warned = True
            session.notify(f"podssh: this session ends in {int(left)}s (maximum session duration)")
    if limits.idle_timeout is not None and mono - session.last_activity >= limits.idle_timeout:
        return Verdict("idle", f"session idle for {int(limits.idle_timeout)}s")
    return None


class Enforcer:
    def __init__(self, gateway: Gateway, tick: float = 1.0) -> None:
        # Snapshot swaps wake it at once; the tick only serves expiry and limits (1 s precision).
        self._gw = gateway
        self._tick = tick
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="enforcer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def snapshot_changed(self, _snapshot: AccessSnapshot) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._tick)
            self._wake.clear()
            try:
                self.check_all()
            except Exception:  # never let a bug stop enforcement for good
                log.exception("enforcer_failed")

    def _claim(self, session: Session, grant: Grant) -> bool:
        return self._gw.claim_grant(session, (grant,)) is not None

    def check_all(self) -> None:
        snapshot = self._gw.store.current
        now, mono = datetime.now(UTC), time.monotonic()
        revoked: dict[int, str | None] = {}  # per identity, once a sweep (a stat of the file)
        for session in self._gw.sessions():
            ident = session.conn.identity
            if ident is not None and id(ident) not in revoked:
                revoked[id(ident)] = self._gw.revoked(ident)
            why = revoked.get(id(ident)) if ident is not None else None
            if why and session.grant is not None:
                verdict: Verdict | None = Verdict("revoked", f"this key was revoked ({why})")
            else:
                verdict = judge(session, snapshot, now, mono, self._claim)
            if verdict is not None:
                event(log, "session_ended_by_policy", conn=session.conn.id, reason=verdict.reason,
                      message=verdict.message)
                session.terminate(verdict.reason, verdict.message)
