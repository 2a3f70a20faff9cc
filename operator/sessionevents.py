"""Session events from the data plane, turned into Kubernetes Events and lastLoginTime (not to be
confused with sshserver.sessions, which runs the sessions themselves).

Called on session threads (through the observer); it only queues writes for the ClusterWriter.

Paced: one Event per session start and end is fine for people, not for churn (1,000 sessions
dropped at once were 1,000 Events, written one by one for seconds). At most `rate` a second
(bursts of `burst`) go out one by one; the rest are counted per (grant, reason) and said in
one Event each, `flush_after` seconds later (a timer thread, which only queues too)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sshserver.observability.observer import SessionOutcome, SessionRecord

from .pacing import TokenBucket
from .writer import ClusterWriter, ObjectEvent, StatusPatch

LOGIN_TIME_EVERY = 10.0  # seconds between lastLoginTime patches of one grant
EVENTS_RATE = 5.0  # session Events a second, one by one, at most...
EVENTS_BURST = 20.0  # ... after a burst of this many
FLUSH_AFTER = 2.0  # seconds before the Events held back are said, counted


class SessionEvents:
    def __init__(self, writer: ClusterWriter, monotonic: Callable[[], float] = time.monotonic,
                 rate: float = EVENTS_RATE, burst: float = EVENTS_BURST, flush_after: float = FLUSH_AFTER) -> None:
        """`monotonic` paces the lastLoginTime patches and the Events (tests pass their own clock)."""
        self._writer = writer
        self._monotonic = monotonic
        self._last_patch: dict[str, float] = {}
        self._flush_after = flush_after
        self._lock = threading.Lock()  # guards the bucket, the held counts and the timer
        self._bucket = TokenBucket(rate, burst, burst, monotonic())
        self._held: dict[tuple[str, str, str, str, bool], int] = {}  # (ns, grant, uid, reason, warning) ->
        self._timer: threading.Timer | None = None

    def session_started(self, r: SessionRecord) -> None:
        self._emit(ObjectEvent(
            r.grant_namespace, r.grant_name, r.grant_uid, "SessionStarted",
            f"{r.user} started a {r.kind} session in {r.namespace}/{r.pod}:{r.container} from {r.peer}"))
        now = self._monotonic()
        if now - self._last_patch.get(r.grant_uid, -LOGIN_TIME_EVERY) >= LOGIN_TIME_EVERY:
            self._last_patch[r.grant_uid] = now
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._writer.patch_status(StatusPatch(r.grant_namespace, r.grant_name, r.grant_uid,
                                                  {"lastLoginTime": stamp}))

    def session_ended(self, r: SessionRecord, o: SessionOutcome) -> None:
        revoked = o.reason in ("revoked", "expired")
        reason = "SessionRevoked" if revoked else "SessionEnded"
        detail = f": {o.message}" if o.message else ""
        self._emit(ObjectEvent(
            r.grant_namespace, r.grant_name, r.grant_uid, reason,
            f"{r.user}'s {r.kind} session in {r.namespace}/{r.pod} ended ({o.reason}, exit {o.exit_status},"
            f" {o.duration_s:.0f}s){detail}", warning=revoked))

    def _emit(self, ev: ObjectEvent) -> None:
        with self._lock:
            if self._bucket.take(self._monotonic()):  # no token: held back, said counted later
                key = (ev.namespace, ev.name, ev.uid, ev.reason, ev.warning)
                self._held[key] = self._held.get(key, 0) + 1
                if self._timer is None:
                    self._timer = threading.Timer(self._flush_after, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self._writer.emit(ev)

    def flush(self) -> None:
        """Says the sessions held back, one Event per (grant, reason) with their count (the timer
        thread; tests call it directly)."""
        with self._lock:
            held, self._held, self._timer = self._held, {}, None
        for (namespace, name, uid, reason, warning), count in held.items():
            what = "started" if reason == "SessionStarted" else "ended"
            self._writer.emit(ObjectEvent(
                namespace, name, uid, reason,
                f"{count} more session(s) {what}, not listed one by one (over {self._bucket.rate:g} session Events a "
                "second): see the audit trail", warning=warning))
