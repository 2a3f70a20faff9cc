"""One SSHSession object per live session of this replica, written by one thread ("session-objects")
that is never on a session's path: the observer calls only update a dict under a lock.

A sibling of writer.py with the same promises, reached differently: instead of a queue of
writes it keeps the *desired state* (the live sessions, the objects to delete, the Event counts
to add) and converges the cluster to it. That gives the three properties at once:

- merged per object: a session that starts and ends before the thread reaches it costs no
  write at all; byte counters are sampled, not queued; an Event series is one pending count;
- bounded: every call spends a token of a bucket (`rate` per second, `burst`), so churn of
  any size costs at most `rate` writes a second; status patches of one object come at most
  every `update_every` seconds, and only when something changed;
- retried: a failed call leaves the state as it was and pauses the thread (growing, capped), so
  when the API server comes back the objects catch up; errors that retrying cannot fix drop
  that one object (logged).

Ownership and cleanup (see sessionbodies.py): the thread renews this replica's Lease before
anything else and creates no object without one; every `cleanup_every` seconds it deletes the
objects of replicas whose Lease expired, then those Leases.

Threads: `session_started`/`session_ended` run on session threads; `deleted` on kopf's thread
(an SSHSession was deleted); everything that calls the API on the "session-objects" thread.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from sshserver.kube.client import KubeClient
from sshserver.observability.logevents import event
from sshserver.observability.observer import SessionCounters, SessionOutcome, SessionRecord

from . import GROUP, SESSION_PLURAL, VERSION
from .pacing import TokenBucket
from .sessionbodies import (
    LEASE_LABEL,
    LEASE_NAMESPACE_LABEL,
    REAPED_ANNOTATION,
    REPLICA_LABEL,
    SESSION_LABEL,
    ended_message,
    lease_alive,
    lease_body,
    lease_name,
    lease_replica,
    object_name,
    rfc3339,
    session_object,
    session_status,
    started_message,
)

log = logging.getLogger("podssh.sessionobjects")

MERGE = "application/merge-patch+json"
LEASE_GROUP, LEASE_VERSION, LEASES = "coordination.k8s.io", "v1", "leases"
DROP = frozenset({400, 403, 404, 422})  # retrying a create cannot help: drop that object
SERIES_WINDOW = 600.0  # seconds an Event series is counted up before a new Event starts

# (replica, namespace, name) -> None: asks the gateway to end the session with that id.
Deleted = Callable[[str, str, str], None]


@dataclass
class _Live:
    record: SessionRecord
    name: str
    touched: bool = False  # a create was sent at least once: the end must delete the object
    in_flight: bool = False  # a create is under way
    created: bool = False
    dropped: bool = False  # the API refused it for good, or it was deleted through the API
    deletion_seen: bool = False  # the gateway was asked to end the session (once)
    status: dict[str, Any] | None = None  # last status written
    updated: float = 0.0  # monotonic time of the last status write
    sampled: SessionCounters | None = None  # the counters `status` was made of


@dataclass
class _Series:
    """Events of one (pod, reason, message): one pending count, and the Event that counts them."""

    namespace: str
    pod: str
    pod_uid: str
    reason: str
    message: str
    pending: int = 0
    name: str | None = None  # the Event written, once it is
    count: int = 0
    first: float = 0.0  # wall clock of the Event's first occurrence
    last: float = 0.0


class _Pause(Exception):
    """The API server failed in a way retrying may fix: pause the thread, keep the state."""


@dataclass
class SessionObjects:
    """The SessionObserver that mirrors this replica's live sessions as SSHSession objects."""

    kube: KubeClient
    replica: str
    lease_namespace: str
    component: str = "podssh"
    rate: float = 20.0  # writes a second at most (a bucket of `burst`)
    burst: float = 40.0
    update_every: float = 5.0  # seconds between status patches of one object
    lease_duration: int = 30  # seconds a Lease stays valid without renewal
    lease_grace: float = 5.0  # seconds more before another replica deems it dead (clock skew)
    renew_every: float = 10.0
    cleanup_every: float = 15.0
    retry_base: float = 1.0
    retry_cap: float = 30.0
    request_timeout: float = 10.0
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    on_deleted: Deleted | None = None  # wired by the composition root once the gateway exists
    # Called on this thread after each API call with "ok", "refused" or "failed" (metrics).
    on_call: Callable[[str], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _wake: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _live: dict[str, _Live] = field(default_factory=dict, init=False)  # session id ->
    _doomed: dict[str, tuple[str, str]] = field(default_factory=dict, init=False)  # id -> (namespace, name)
    _series: dict[tuple[str, str, str, str], _Series] = field(default_factory=dict, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    writes: int = field(default=0, init=False)  # API calls made (tests read it)

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.rate, self.burst, self.burst, self.monotonic())
        self._lease_ok = False
        self._renewed = float("-inf")  # monotonic time of the last successful renewal
        self._next_cleanup = self.monotonic() + self.cleanup_every / 2
        self._retry_at = 0.0
        self._delay = self.retry_base
        self._deleting = 0  # deletions taken from _doomed whose call is under way

    # --- the observer (session threads; never blocks) --------------------------------------

    def session_started(self, r: SessionRecord) -> None:
        if not r.session_id:
            return
        with self._lock:
            self._live[r.session_id] = _Live(r, object_name(r))
            self._count_event(r, "SSHSessionStarted", started_message(r))
        self._wake.set()

    def session_ended(self, r: SessionRecord, o: SessionOutcome) -> None:
        with self._lock:
            entry = self._live.pop(r.session_id, None)
            if entry is not None and entry.touched and not entry.dropped:
                self._doomed[r.session_id] = (r.namespace, entry.name)
            self._count_event(r, "SSHSessionEnded", ended_message(r, o, f"{r.namespace}/{object_name(r)}"))
        self._wake.set()

    def _count_event(self, r: SessionRecord, reason: str, message: str) -> None:
        key = (r.namespace, r.pod, reason, message)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(r.namespace, r.pod, r.pod_uid, reason, message)
        series.pending += 1

    # --- deletion through the API (kopf's thread) --------------------------------------------

    def deleted(self, body: dict[str, Any]) -> None:
        """An SSHSession was deleted. One of ours whose session still lives was deleted by
        someone through the API: never written again, and the gateway is asked to end it."""
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(REPLICA_LABEL) != self.replica or REAPED_ANNOTATION in (meta.get("annotations") or {}):
            return
        session_id = labels.get(SESSION_LABEL, "")
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        with self._lock:
            entry = self._live.get(session_id)
            if entry is None or entry.deletion_seen:
                return  # ended already: the deletion was this thread's own
            if (namespace, name) != (entry.record.namespace, entry.name):
                # Not the object this replica wrote for that session, only its labels (someone
                # able to write SSHSession objects elsewhere): it ends nothing.
                event(log, "session_object_mismatch", logging.WARNING, session=session_id,
                      object=f"{namespace}/{name}")
                return
            entry.dropped, entry.created, entry.deletion_seen = True, False, True
        event(log, "session_object_deleted", session=session_id, object=f"{namespace}/{name}")
        if self.on_deleted is not None:
            self.on_deleted(session_id, namespace, name)

    # --- the thread ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="session-objects", daemon=True)
        self._thread.start()

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Deletes what is left of ours (sessions ended at shutdown) and the Lease, then stops."""
        deadline = time.monotonic() + flush_timeout  # real time, whatever clock the tests give
        while self._thread is not None and time.monotonic() < deadline:
            with self._lock:
                if not self._doomed:
                    break
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(flush_timeout)
        try:
            self._call(lambda **o: self.kube.custom.delete_namespaced_custom_object(
                LEASE_GROUP, LEASE_VERSION, self.lease_namespace, LEASES, lease_name(self.replica), **o))
        except Exception as exc:
            event(log, "lease_release_failed", logging.WARNING, error=str(exc)[:200])

    @property
    def pending(self) -> int:
        """Objects not yet as they should be (created or deleted)."""
        with self._lock:
            unwritten = sum(1 for e in self._live.values() if not e.created and not e.dropped)
            return len(self._doomed) + self._deleting + unwritten

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.step()
            except Exception:  # a bug must not end the thread: objects would stop for good
                log.exception("session_objects_failed")
                wait = 1.0
            self._wake.wait(wait)
            self._wake.clear()

    def step(self) -> float:
        """Does what is due, as far as the bucket allows; returns the seconds to sleep at most."""
        now = self.monotonic()
        if now < self._retry_at:
            return self._retry_at - now
        try:
            if now - self._renewed >= self.renew_every or not self._lease_ok:
                self._renew_lease()
            wait = self._converge()
            if wait:
                return wait
            if self.monotonic() >= self._next_cleanup:
                self._cleanup()
                self._next_cleanup = self.monotonic() + self.cleanup_every
        except _Pause:
            self._retry_at = self.monotonic() + self._delay
            self._delay = min(self.retry_cap, self._delay * 2)
            return self._retry_at - self.monotonic()
        self._delay = self.retry_base
        now = self.monotonic()
        due = [self._renewed + self.renew_every, self._next_cleanup]
        with self._lock:
            if any(e.created for e in self._live.values()):
                due.append(now + self.update_every / 2)
        return max(0.01, min(due) - now)

    def _converge(self) -> float:
        """Deletes, creates, Events, status patches: in that order (the oldest first in each)."""
        for work in (self._next_delete, self._next_create, self._next_event, self._next_update):
            while True:
                with self._lock:
                    job = work()
                if job is None:
                    break
                wait = self._bucket.take(self.monotonic())
                if wait:
                    job(cancel=True)
                    return wait
                job()
        return 0.0

    # Each _next_* runs under the lock, picks one piece of work and returns it as a callable
    # that makes the call outside the lock (or, with cancel=True, gives it back).

    def _next_delete(self) -> Callable[..., None] | None:
        if not self._doomed:
            return None
        session_id, (namespace, name) = next(iter(self._doomed.items()))
        del self._doomed[session_id]
        self._deleting += 1

        def run(cancel: bool = False) -> None:
            if cancel:
                with self._lock:
                    self._doomed[session_id] = (namespace, name)
                    self._deleting -= 1
                return
            try:
                self._call(lambda **o: self.kube.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, SESSION_PLURAL, name, **o), ok=(404,))
            except _Pause:
                with self._lock:
                    self._doomed[session_id] = (namespace, name)
                raise
            finally:
                with self._lock:
                    self._deleting -= 1

        return run

    def _next_create(self) -> Callable[..., None] | None:
        if not self._lease_ok:
            return None
        entry = next((e for e in self._live.values() if not e.created and not e.dropped and not e.in_flight), None)
        if entry is None:
            return None
        entry.touched = entry.in_flight = True
        counters = entry.record.counters() if entry.record.counters else None
        body = session_object(entry.record, self.replica, counters, self.lease_namespace)

        def run(cancel: bool = False) -> None:
            if cancel:
                with self._lock:
                    entry.in_flight = False
                return
            r = entry.record
            try:
                self._call(lambda **o: self.kube.custom.create_namespaced_custom_object(
                    GROUP, VERSION, r.namespace, SESSION_PLURAL, body, **o), ok=(409,))
            except _Pause:
                with self._lock:
                    entry.in_flight = False
                raise
            except ApiException as exc:
                with self._lock:
                    entry.dropped, entry.in_flight = True, False
                event(log, "session_object_dropped", logging.WARNING, object=f"{r.namespace}/{entry.name}",
                      error=f"{exc.status} {exc.reason}")
                return
            with self._lock:
                entry.created, entry.in_flight = not entry.dropped, False
                entry.status = body.get("status")
                entry.updated = self.monotonic()
            event(log, "session_object_created", object=f"{r.namespace}/{entry.name}", session=r.session_id)

        return run

    def _next_update(self) -> Callable[..., None] | None:
        now = self.monotonic()
        for entry in self._live.values():
            if not entry.created or entry.dropped or entry.record.counters is None:
                continue
            if now - entry.updated < self.update_every:
                continue
            # An idle session's counters do not move: compare them before making a status
            # (timestamp formatting) for each of a thousand idle sessions every few seconds.
            counters = entry.record.counters()
            if counters == entry.sampled:
                entry.updated = now  # sampled again update_every from now, not at every step
                continue
            entry.sampled = counters
            status = session_status(counters)
            if status == entry.status:
                continue
            entry.updated = now  # also when the patch is given back: the next try waits its turn
            return self._patch_status(entry, status)
        return None

    def _patch_status(self, entry: _Live, status: dict[str, Any]) -> Callable[..., None]:
        r = entry.record

        def run(cancel: bool = False) -> None:
            if cancel:
                with self._lock:
                    entry.updated, entry.sampled = 0.0, None
                return
            try:
                self._call(lambda **o: self.kube.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, r.namespace, SESSION_PLURAL, entry.name, {"status": status},
                    _content_type=MERGE, **o))
            except _Pause:
                with self._lock:
                    entry.sampled = None  # not written: the next turn tries again
                raise
            except ApiException as exc:
                with self._lock:
                    entry.sampled = None
                    if exc.status == 404:  # deleted through the API: `deleted` ends the session
                        entry.created = False
                        entry.dropped = True
                return
            with self._lock:
                entry.status = status

        return run

    def _next_event(self) -> Callable[..., None] | None:
        series = next((s for s in self._series.values() if s.pending), None)
        if series is None:
            return None
        add, series.pending = series.pending, 0

        def run(cancel: bool = False) -> None:
            if cancel:
                with self._lock:
                    series.pending += add
                return
            try:
                self._write_event(series, add)
            except _Pause:
                with self._lock:
                    series.pending += add
                raise

        return run

    def _write_event(self, s: _Series, add: int) -> None:
        """A series counts up one Event (count, lastTimestamp), as the kubelet's recorder does,
        so that `kubectl describe pod` shows one line per user and kind, not one per session."""
        now = self.wall()
        stamp = rfc3339(now)
        if s.name is not None and now - s.first < SERIES_WINDOW:
            body = {"count": s.count + add, "lastTimestamp": stamp}
            try:
                self._call(lambda **o: self.kube.core.patch_namespaced_event(s.name, s.namespace, body, **o))
                s.count, s.last = s.count + add, now
                return
            except ApiException:
                pass  # gone (Events expire): start a new one
        name = f"{s.pod}.{uuid.uuid4().hex[:16]}"
        involved: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "name": s.pod, "namespace": s.namespace}
        if s.pod_uid:
            involved["uid"] = s.pod_uid
        body = {
            "metadata": {"name": name, "namespace": s.namespace},
            "involvedObject": involved, "reason": s.reason, "message": s.message[:1024], "type": "Normal",
            "source": {"component": self.component}, "reportingComponent": self.component,
            "reportingInstance": self.replica, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": add,
        }
        try:
            self._call(lambda **o: self.kube.core.create_namespaced_event(s.namespace, body, **o))
        except ApiException as exc:
            event(log, "write_dropped", logging.WARNING, object=f"{s.namespace}/{s.pod}", error=f"{exc.status}")
            return
        s.name, s.count, s.first, s.last = name, add, now, now

    # --- the Lease and the cleanup of dead replicas --------------------------------------------

    def _renew_lease(self) -> None:
        now_wall, name = self.wall(), lease_name(self.replica)
        body = lease_body(self.replica, self.lease_namespace, self.lease_duration, now_wall)
        lapsed = self.monotonic() - self._renewed > self.lease_duration
        try:
            self._call(lambda **o: self.kube.custom.patch_namespaced_custom_object(
                LEASE_GROUP, LEASE_VERSION, self.lease_namespace, LEASES, name, {"spec": body["spec"]},
                _content_type=MERGE, **o))
        except ApiException as exc:
            if exc.status != 404:
                raise _Pause() from None
            try:
                self._call(lambda **o: self.kube.custom.create_namespaced_custom_object(
                    LEASE_GROUP, LEASE_VERSION, self.lease_namespace, LEASES, body, **o), ok=(409,))
            except ApiException as exc2:
                event(log, "lease_failed", logging.WARNING, lease=f"{self.lease_namespace}/{name}",
                      error=f"{exc2.status} {exc2.reason}")
                raise _Pause() from None
            lapsed = True  # a new Lease: others may have reaped our objects meanwhile
        if lapsed and self._lease_ok:
            with self._lock:  # write them again (409 where they still exist)
                for entry in self._live.values():
                    if not entry.dropped:
                        entry.created = False
            event(log, "lease_lapsed", logging.WARNING, lease=f"{self.lease_namespace}/{name}")
        self._lease_ok = True
        self._renewed = self.monotonic()

    def _cleanup(self) -> None:
        """Deletes the objects of replicas whose Lease expired, then those Leases. Objects are
        listed before Leases: an object's replica wrote its Lease before it, so a live replica's
        object always finds its Lease in the later listing."""
        # This installation's objects of other replicas: its own are never reaped, and a list of a
        # thousand of them every cleanup_every seconds was most of an idle replica's CPU.
        mine = f"{REPLICA_LABEL},{REPLICA_LABEL}!={self.replica},{LEASE_NAMESPACE_LABEL}={self.lease_namespace}"
        objects = self._call(lambda **o: self.kube.custom.list_cluster_custom_object(
            GROUP, VERSION, SESSION_PLURAL, label_selector=mine, **o))
        leases = self._call(lambda **o: self.kube.custom.list_namespaced_custom_object(
            LEASE_GROUP, LEASE_VERSION, self.lease_namespace, LEASES, label_selector=LEASE_LABEL, **o))
        now = self.wall()
        alive = {self.replica}
        expired = []
        for lease in (leases or {}).get("items") or []:
            replica = lease_replica(lease)
            if replica and lease_alive(lease, now, self.lease_grace):
                alive.add(replica)
            elif replica and replica != self.replica:
                expired.append(lease)
        for obj in (objects or {}).get("items") or []:
            meta = obj.get("metadata") or {}
            replica = (meta.get("labels") or {}).get(REPLICA_LABEL)
            if replica in alive:
                continue
            self._reap(meta.get("namespace", ""), meta.get("name", ""), replica)
        for lease in expired:
            self._reap_lease(lease["metadata"]["name"], lease_replica(lease))
        self._prune_series(now)

    def _reap(self, namespace: str, name: str, replica: str | None) -> None:
        """Marked first, so that its replica's deletion handler (should it come back) does not
        take the deletion for a user's and end a session."""
        patch = {"metadata": {"annotations": {REAPED_ANNOTATION: self.replica}}}
        self._call(lambda **o: self.kube.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, SESSION_PLURAL, name, patch, _content_type=MERGE, **o), ok=(404,))
        self._call(lambda **o: self.kube.custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, SESSION_PLURAL, name, **o), ok=(404,))
        event(log, "session_object_reaped", object=f"{namespace}/{name}", replica=replica)

    def _reap_lease(self, name: str, replica: str | None) -> None:
        self._call(lambda **o: self.kube.custom.delete_namespaced_custom_object(
            LEASE_GROUP, LEASE_VERSION, self.lease_namespace, LEASES, name, **o), ok=(404,))
        event(log, "lease_reaped", lease=f"{self.lease_namespace}/{name}", replica=replica)

    def _prune_series(self, now: float) -> None:
        with self._lock:
            for key, s in list(self._series.items()):
                if not s.pending and now - s.last > SERIES_WINDOW:
                    del self._series[key]

    # --- one API call ---------------------------------------------------------------------------

    def _call(self, call: Callable[..., Any], ok: tuple[int, ...] = ()) -> Any:
        """Makes one call with a timeout. An HTTP status in `ok` is success; one in DROP is the
        caller's (ApiException); anything else (5xx, 429, a dead connection) pauses the thread."""
        self.writes += 1
        try:
            result = call(_request_timeout=self.request_timeout)
        except ApiException as exc:
            if exc.status in ok:
                self._counted("ok")
                return None
            if exc.status in DROP or exc.status == 409:
                self._counted("refused")
                raise
            why = f"{exc.status} {exc.reason}"
        except Exception as exc:  # connection refused, timeouts, TLS: the API server may come back
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            self._counted("ok")
            return result
        self._counted("failed")
        event(log, "session_objects_paused", logging.WARNING, error=why, retry_in_s=self._delay)
        raise _Pause()

    def _counted(self, result: str) -> None:
        if self.on_call is not None:
            self.on_call(result)
