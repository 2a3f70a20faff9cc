"""Every SSHAccess object this replica knows, keyed by uid; each change rebuilds the snapshot.

Fed by two sources: kopf's watch events (fast) and periodic full lists (exact: a re-listed watch
does not report objects deleted during the gap, a full list replaces everything). A grant's
Ready condition also changes with time alone (notBefore, expiresAt): a timer rebuilds at the
next such moment, so `Expired` is written when it happens, not at the next resync.

Threads: kopf's event loop (upsert/delete), the resync thread (replace_all) and the expiry
timer (`_timer_fired`) all change `_objects` under `_lock`; the timer is owned by the Inventory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sshserver.grants.access import AccessStore, ParsedObject, object_ref, parse_objects, snapshot_of
from sshserver.observability.logevents import event

from .status import desired_status, needs_patch
from .writer import ClusterWriter, ObjectEvent, StatusPatch

log = logging.getLogger("podssh.inventory")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Inventory:
    def __init__(self, store: AccessStore, writer: ClusterWriter | None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        """`clock` is the wall clock that decides expiry (tests pass their own); the timer's
        delay is measured from it, so a test clock must move for the timer to see a moment pass."""
        self._store = store
        self._writer = writer
        self._clock = clock
        self._objects: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._reported: dict[str, str] = {}  # uid -> last Ready reason an Event was written for
        self._timer: threading.Timer | None = None
        self._timer_due: datetime | None = None
        self._closed = False

    @staticmethod
    def _uid(body: Mapping[str, Any]) -> str:
        meta = body.get("metadata")
        if not isinstance(meta, Mapping):
            return object_ref(body)
        return str(meta.get("uid") or object_ref(body))

    def upsert(self, body: Mapping[str, Any]) -> None:
        with self._lock:
            self._objects[self._uid(body)] = dict(body)
            self._rebuild()

    def delete(self, body: Mapping[str, Any]) -> None:
        with self._lock:
            if self._objects.pop(self._uid(body), None) is not None:
                self._rebuild()

    def replace_all(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            fresh = {self._uid(b): dict(b) for b in bodies}
            gone = set(self._objects) - set(fresh)
            if gone:
                event(log, "resync_removed", count=len(gone))
            self._objects = fresh
            self._rebuild()

    def refresh(self) -> None:
        """Re-evaluates time-dependent status (expiry) without any change of objects; the expiry
        timer does this by itself (`_timer_fired`), this is for whoever wants it now."""
        with self._lock:
            self._rebuild()

    def _timer_fired(self) -> None:
        """The expiry timer's callback, on its thread: the timer is spent, so the rebuild must arm
        a new one even for the same moment (a timer that fires while the wall clock still says
        the moment is ahead, e.g. after the clock was set back, would otherwise be the last)."""
        with self._lock:
            if self._timer is threading.current_thread():
                self._timer, self._timer_due = None, None
            self._rebuild()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()

    def _schedule(self, parsed: Iterable[ParsedObject], now: datetime) -> None:
        """Arms the timer for the earliest future notBefore/expiresAt (one timer, replaced)."""
        moments = [t for p in parsed if p.grant is not None
                   for t in (p.grant.not_before, p.grant.expires_at) if t is not None and t > now]
        due = min(moments, default=None)
        if due == self._timer_due or self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_due = None, due
        if due is not None:
            # A little after the moment, so that the rebuild sees it as past (1 s resolution).
            delay = (due - now + timedelta(milliseconds=50)).total_seconds()
            self._timer = threading.Timer(delay, self._timer_fired)
            self._timer.name, self._timer.daemon = "expiry-timer", True
            self._timer.start()

    def _rebuild(self) -> None:
        now = self._clock()
        parsed = parse_objects(self._objects.values())
        self._store.replace(snapshot_of(parsed))
        # Forget what was reported for objects that are gone.
        self._reported = {uid: r for uid, r in self._reported.items() if uid in self._objects}
        self._schedule(parsed, now)
        if self._writer is not None:
            for p in parsed:
                try:
                    self._reconcile_status(p, now)
                except Exception as exc:  # one object's status must not stop the others'
                    event(log, "status_failed", logging.ERROR, object=object_ref(p.body), error=type(exc).__name__)

    def _reconcile_status(self, parsed: ParsedObject, now: datetime) -> None:
        assert self._writer is not None
        body, error = parsed.body, parsed.error
        desired = desired_status(body, parsed.grant, error, now)
        meta = body.get("metadata") or {}
        ns, name, uid = meta.get("namespace", ""), meta.get("name", ""), self._uid(body)
        if needs_patch(body, desired):
            self._writer.patch_status(StatusPatch(ns, name, uid, desired))
            # Remember what we asked for: a second rebuild before the watch echoes it must not re-patch.
            self._objects[uid]["status"] = {**(body.get("status") or {}), **desired}
        reason = desired["conditions"][0]["reason"]
        if error is not None and self._reported.get(uid) != reason:
            self._writer.emit(ObjectEvent(ns, name, uid, error.reason, str(error), warning=True))
        self._reported[uid] = reason
