"""Writes to the cluster (status patches, Events) from one thread fed by a queue, so that
neither kopf's event loop nor a session thread ever waits on the API server for them.

A write that fails is retried with a growing pause until it lands or its object is gone: the
inventory records a status as written when it queues it (so that a second rebuild does not
patch twice), which is only true if the writer does not give up. Patches of one object that
wait for a retry are merged (a merge patch: later fields win), so a slow API server sees at
most one pending patch per object, never a backlog.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from sshserver.kube.client import KubeClient
from sshserver.observability.logevents import event

from . import GROUP, KIND, PLURAL, VERSION

log = logging.getLogger("podssh.writer")

RETRY_BASE = 1.0  # seconds before the first retry; doubles up to RETRY_CAP
RETRY_CAP = 30.0
EVENT_ATTEMPTS = 5  # an Event is history, not state: it is not worth retrying for ever
PERMANENT = frozenset({400, 404, 410, 422})  # retrying cannot help (404/410: the object is gone)
REQUEST_TIMEOUT = 30.0  # seconds: an API server that never answers must not hold the one writer thread


@dataclass(frozen=True)
class StatusPatch:
    namespace: str
    name: str
    uid: str
    status: Mapping[str, Any]


@dataclass(frozen=True)
class ObjectEvent:
    namespace: str
    name: str
    uid: str
    reason: str
    message: str
    warning: bool = False


Write = StatusPatch | ObjectEvent


class ClusterWriter:
    """Owns every write of the control plane; its thread is the only one that calls the API."""

    def __init__(self, kube: KubeClient, component: str = "podssh", retry_base: float = RETRY_BASE,
                 retry_cap: float = RETRY_CAP, request_timeout: float = REQUEST_TIMEOUT) -> None:
        """`retry_base`, `retry_cap` and `request_timeout` exist so that tests can be fast."""
        self._kube = kube
        self._component = component
        self._retry_base, self._retry_cap = retry_base, retry_cap
        self._request_timeout = request_timeout
        self._queue: queue.Queue[Write | None] = queue.Queue(maxsize=10000)
        # Writes waiting for a retry, owned by the writer thread: (due, seq, write, attempts).
        self._retries: list[tuple[float, int, Write, int]] = []
        self._waiting_patch: dict[str, StatusPatch] = {}  # uid -> merged patch waiting for a retry
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._run, name="cluster-writer", daemon=True)
        self.patches = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._put(None)
        self._thread.join(5)

    def patch_status(self, patch: StatusPatch) -> None:
        self._put(patch)

    def emit(self, ev: ObjectEvent) -> None:
        self._put(ev)

    @property
    def pending_retries(self) -> int:
        return len(self._retries)

    def _put(self, item: Write | None) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            event(log, "writer_queue_full", logging.WARNING)

    def _run(self) -> None:
        while True:
            timeout = max(0.0, self._retries[0][0] - time.monotonic()) if self._retries else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = False  # a retry is due
            if item is None:
                return
            if item is not False:
                self._write(self._merged(item), 1)
            self._run_due_retries()

    def _merged(self, item: Write) -> Write:
        """A new patch of an object that waits for a retry carries the waiting fields along."""
        if isinstance(item, StatusPatch) and item.uid in self._waiting_patch:
            waiting = self._waiting_patch.pop(item.uid)
            return replace(item, status={**waiting.status, **item.status})
        return item

    def _run_due_retries(self) -> None:
        now = time.monotonic()
        while self._retries and self._retries[0][0] <= now:
            _, _, item, attempts = heapq.heappop(self._retries)
            if isinstance(item, StatusPatch):
                if self._waiting_patch.get(item.uid) is not item:
                    continue  # superseded: merged into a newer patch that was written already
                del self._waiting_patch[item.uid]
            self._write(item, attempts + 1)

    def _write(self, item: Write, attempt: int) -> None:
        try:
            if isinstance(item, StatusPatch):
                self._patch(item)
            else:
                self._event(item)
            return
        except ApiException as exc:
            status, why = exc.status, f"{exc.status} {exc.reason}"
        except Exception as exc:  # connection refused, timeouts, TLS: the API server may come back
            status, why = None, f"{type(exc).__name__}: {str(exc)[:200]}"
        target = f"{item.namespace}/{item.name}"
        if status in PERMANENT or (isinstance(item, ObjectEvent) and attempt >= EVENT_ATTEMPTS):
            if status not in (404, 410):  # a deleted object needs no status
                event(log, "write_dropped", logging.WARNING, object=target, error=why, attempts=attempt)
            return
        delay = min(self._retry_cap, self._retry_base * 2 ** (attempt - 1))
        event(log, "write_failed", logging.WARNING, object=target, error=why, attempt=attempt, retry_in_s=delay)
        if isinstance(item, StatusPatch):
            self._waiting_patch[item.uid] = item
        heapq.heappush(self._retries, (time.monotonic() + delay, next(self._seq), item, attempt))

    def _patch(self, p: StatusPatch) -> None:
        body = {"status": dict(p.status)}
        self._kube.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, p.namespace, PLURAL, p.name, body, _content_type="application/merge-patch+json",
            _request_timeout=self._request_timeout)
        self.patches += 1
        event(log, "status_patched", object=f"{p.namespace}/{p.name}", fields=sorted(p.status))

    def _event(self, e: ObjectEvent) -> None:
        now = datetime.now(UTC)
        body = {
            "metadata": {"name": f"{e.name}.{uuid.uuid4().hex[:12]}", "namespace": e.namespace},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": e.name,
                               "namespace": e.namespace, "uid": e.uid},
            "reason": e.reason,
            "message": e.message[:1024],
            "type": "Warning" if e.warning else "Normal",
            "source": {"component": self._component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._kube.core.create_namespaced_event(e.namespace, body, _request_timeout=self._request_timeout)
