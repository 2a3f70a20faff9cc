"""Keeps live sessions within their grants: revocation, expiry and limits, checked on every
snapshot swap, every change of the revoked keys file, every new session, and when the clock
reaches the next moment a verdict can change by time alone (an expiry, a maximum duration, an
idle timeout: `recheck_at`). A sweep judges every live session; the thread wakes every `tick`
but sweeps only when one of these is due, so a thousand idle sessions cost no sweeps.

`judge` is pure: from a session, the snapshot in force and the time, a Verdict. The Enforcer
(its own thread) acts on verdicts only by asking the owners: the registry rebinds a session
to another grant (and counts it against that grant's maxSessions), the session ends itself
(`terminate` aborts its stream) and queues the warning line (`notify`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sshserver.gateway.registry import LiveSession, SessionRegistry
from sshserver.grants.access import AccessSnapshot, AccessStore, Grant, Identity
from sshserver.observability.logevents import event
from sshserver.observability.observer import EndReason

log = logging.getLogger("podssh.enforcer")

WARN_BEFORE_END = 60.0
# The longest a sweep waits, whatever `recheck_at` says: wall-clock deadlines (expiresAt, a
# certificate's validity) are turned into monotonic ones at each sweep, and the wall clock may
# be set forward meanwhile.
MAX_SWEEP_INTERVAL = 60.0


@dataclass(frozen=True)
class Verdict:
    """What should happen to a live session: end it, or keep it on `grant` (perhaps another
    grant than its own, or its own grant edited), perhaps with a warning line."""

    end: EndReason | None = None
    message: str = ""
    grant: Grant | None = None
    warn: str | None = None


KEEP = Verdict()


def debug_allowed(session: LiveSession, grant: Grant) -> bool:
    """Whether the grant allows the debug container the session runs in, if it runs in one: the
    grant must still have spec.debug and list its image. Taking spec.debug (or the image) away
    ends such sessions as taking shell or exec away ends the others."""
    debug = session.debug
    return debug is None or (grant.debug is not None and debug.image in grant.debug.images)


def covering_grant(session: LiveSession, grants: tuple[Grant, ...]) -> Grant | None:
    """The grant that still allows this session: its own if it does, else any other."""
    r = session.resolved
    if r is None:
        return None
    ok = [g for g in grants
          if g.covers(r.namespace, r.labels, r.container) and session.allowed_by(g) and debug_allowed(session, g)]
    same = [g for g in ok if session.grant is not None and g.uid == session.grant.uid]
    return (same or ok or [None])[0]


def judge(session: LiveSession, snapshot: AccessSnapshot, now: datetime, mono: float,
          revoked_key: str | None = None) -> Verdict:
    """Whether a live session may go on, and on which grant. Pure: reads, never writes.
    `revoked_key` is why --revoked-keys refuses the session's key now, if it does."""
    identity = session.conn.identity
    if session.grant is None or identity is None:
        return KEEP  # not started yet: the session checks its grant itself when it starts
    if revoked_key:
        return Verdict(EndReason.REVOKED, f"this key was revoked ({revoked_key})")
    grant = covering_grant(session, snapshot.grants_for(identity, now))
    if grant is None:
        old = snapshot.grant_by_uid(session.grant.uid)
        if old is not None and old.expires_at is not None and now >= old.expires_at:
            return Verdict(EndReason.EXPIRED, f"access {old.ref} expired at {old.expires_at.isoformat()}")
        cert = identity.certificate
        if cert is not None and not cert.valid_at(now):
            return Verdict(EndReason.EXPIRED, "your certificate expired")
        return Verdict(EndReason.REVOKED, f"access {session.grant.ref} was revoked")
    limits = grant.limits
    warn = None
    if limits.max_session_duration is not None:
        left = limits.max_session_duration - (mono - session.started)
        if left <= 0:
            most = int(limits.max_session_duration)
            return Verdict(EndReason.LIMIT, f"session reached its maximum duration ({most}s)")
        if left <= WARN_BEFORE_END and not session.warned:
            warn = f"podssh: this session ends in {int(left)}s (maximum session duration)"
    if limits.idle_timeout is not None and mono - session.last_activity >= limits.idle_timeout:
        return Verdict(EndReason.IDLE, f"session idle for {int(limits.idle_timeout)}s")
    return Verdict(grant=grant, warn=warn)


def recheck_at(session: LiveSession, grant: Grant, now: datetime, mono: float) -> float:
    """The monotonic time at which `judge`, given the same snapshot, may first say something
    else about a session it keeps on `grant` (after any warning it was just given): the grant's
    expiry, the certificate's, the warning before the maximum duration and that duration's end,
    and the idle timeout counted from the last activity (at that moment the session may have
    been active since: judged again, it gets a later time). Other grants only matter when its
    own stops covering it, which is one of these times or a snapshot swap."""
    due = [mono + MAX_SWEEP_INTERVAL]
    if grant.expires_at is not None:
        due.append(mono + (grant.expires_at - now).total_seconds())
    cert = session.conn.identity.certificate if session.conn.identity is not None else None
    if cert is not None:
        due.append(mono + (cert.valid_before - now.timestamp()))
    limits = grant.limits
    if limits.max_session_duration is not None:
        end = session.started + limits.max_session_duration
        due.append(end if session.warned else end - WARN_BEFORE_END)
    if limits.idle_timeout is not None:
        due.append(session.last_activity + limits.idle_timeout)
    return min(due)


def no_place(session: LiveSession, grant: Grant) -> Verdict:
    """Its own grant no longer covers it; another one would, but has no free place: moving the
    session there would exceed that grant's maxSessions."""
    own = session.grant.ref if session.grant is not None else "?"
    return Verdict(EndReason.LIMIT, f"access {own} was revoked and {grant.ref} allows at most "
                                    f"{grant.limits.max_sessions} concurrent sessions")


class Enforcer:
    """The "enforcer" thread. Woken at once by a snapshot swap (`snapshot_changed`, called on the
    control plane's thread); otherwise it looks every `tick` seconds (1 s precision for expiry
    and limits) whether a sweep is due (`sweep_due`), which costs a few comparisons and, with
    --revoked-keys, one stat of that file."""

    def __init__(self, registry: SessionRegistry, store: AccessStore,
                 revoked: Callable[[Identity], str | None], tick: float = 1.0,
                 revocations: Callable[[], object] = lambda: None) -> None:
        self._registry = registry
        self._store = store
        self._revoked = revoked
        self._revocations = revocations  # the revoked-keys list in force: a new object on change
        self._tick = tick
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="enforcer", daemon=True)
        # What the last sweep judged: any of these changing makes the next one due.
        self._swept: tuple[AccessSnapshot, int, object] | None = None
        self.next_sweep = 0.0  # monotonic: the earliest `recheck_at` of the last sweep

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def snapshot_changed(self, _snapshot: AccessSnapshot) -> None:
        self._wake.set()

    def _state(self) -> tuple[AccessSnapshot, int, object]:
        return self._store.current, self._registry.generation, self._revocations()

    def sweep_due(self, mono: float | None = None) -> bool:
        """Whether anything a verdict depends on may have changed since the last sweep."""
        if self._swept is None or (time.monotonic() if mono is None else mono) >= self.next_sweep:
            return True
        snapshot, generation, revocations = self._state()
        last_snapshot, last_generation, last_revocations = self._swept
        return snapshot is not last_snapshot or generation != last_generation or revocations is not last_revocations

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._tick)
            self._wake.clear()
            try:
                if self.sweep_due():
                    self.check_all()
            except Exception:  # never let a bug stop enforcement for good
                log.exception("enforcer_failed")

    def check_all(self) -> None:
        """One sweep: judges every live session, acts on the verdicts and sets `next_sweep`."""
        self._swept = self._state()  # read first: a change during the sweep makes another one due
        snapshot = self._swept[0]
        now, mono = datetime.now(UTC), time.monotonic()
        next_sweep = mono + MAX_SWEEP_INTERVAL
        revoked: dict[int, str | None] = {}  # per identity, once a sweep (a stat of the file)
        for session in self._registry.live():
            ident = session.conn.identity
            if ident is not None and id(ident) not in revoked:
                revoked[id(ident)] = self._revoked(ident)
            verdict = judge(session, snapshot, now, mono, revoked.get(id(ident)) if ident is not None else None)
            if verdict.end is None and verdict.grant is not None and not self._registry.rebind(session, verdict.grant):
                verdict = no_place(session, verdict.grant)
            if verdict.end is not None:
                event(log, "session_ended_by_policy", conn=session.conn.id, reason=verdict.end,
                      message=verdict.message)
                session.terminate(verdict.end, verdict.message)
                continue
            if verdict.warn is not None:
                session.warned = True  # the enforcer's own flag: one warning per session
                session.notify(verdict.warn)
            if verdict.grant is not None:
                next_sweep = min(next_sweep, recheck_at(session, verdict.grant, now, mono))
            else:  # not started yet: it claims its grant itself, which makes a sweep due
                next_sweep = min(next_sweep, mono + self._tick)
        self.next_sweep = next_sweep
