"""Writes to the cluster (status patches, Events) from one thread fed by a queue, so that
neither kopf's event loop nor a session thread ever waits on the API server for them."""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from sshserver.kube import KubeClient
from sshserver.logevents import event

from . import GROUP, KIND, PLURAL, VERSION

log = logging.getLogger("podssh.writer")


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


class ClusterWriter:
    def __init__(self, kube: KubeClient, component: str = "podssh") -> None:
        self._kube = kube
        self._component = component
        self._queue: queue.Queue[StatusPatch | ObjectEvent | None] = queue.Queue(maxsize=10000)
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

    def _put(self, item: StatusPatch | ObjectEvent | None) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            event(log, "writer_queue_full", logging.WARNING)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if isinstance(item, StatusPatch):
                    self._patch(item)
                else:
                    self._event(item)
            except ApiException as exc:
                if exc.status != 404:  # a deleted object needs no status
                    event(log, "write_failed", logging.WARNING, status=exc.status, reason=exc.reason,
                          object=f"{item.namespace}/{item.name}")
            except Exception:
                log.exception("write_failed")

    def _patch(self, p: StatusPatch) -> None:
        body = {"status": dict(p.status)}
        self._kube.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, p.namespace, PLURAL, p.name, body, _content_type="application/merge-patch+json")
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
        self._kube.core.create_namespaced_event(e.namespace, body)
