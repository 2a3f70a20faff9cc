"""Runs the control plane beside the gateway: kopf in its own thread with its own event loop,
and a resync thread that lists every SSHAccess periodically and after each re-list."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from sshserver.grants.access import AccessStore
from sshserver.kube.client import (
    TRANSPORT_ERRORS,
    ApiError,
    KubeClient,
    http_reason,
    retry_while_unavailable,
    unreachable,
)
from sshserver.observability.logevents import event

from . import GROUP, PLURAL, VERSION
from .handlers import build_registry
from .inventory import Inventory
from .sessionevents import SessionEvents
from .sessionobjects import SessionObjects
from .writer import ClusterWriter

log = logging.getLogger("podssh.operator")


class ControlPlaneError(Exception):
    pass


class ControlPlane:
    def __init__(self, kube: KubeClient, store: AccessStore, resync_interval: float = 30.0,
                 write_status: bool = True, session_objects: SessionObjects | None = None) -> None:
        """`session_objects`: this replica's SSHSession writer; started and stopped with the
        control plane, and told by kopf of deleted SSHSessions."""
        self.kube = kube
        self.store = store
        self.session_objects = session_objects
        self.writer = ClusterWriter(kube) if write_status else None
        self.inventory = Inventory(store, self.writer)
        self.session_events = SessionEvents(self.writer) if self.writer else None
        self._interval = resync_interval
        self._relist = threading.Event()
        self._stop = threading.Event()  # also kopf's stop flag
        self._kopf_ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._kopf_failures = 0

    def list_all(self) -> list[dict[str, Any]]:
        try:
            result = self.kube.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=30)
        except ApiException as exc:
            if exc.status == 404:
                raise ControlPlaneError(
                    "the SSHAccess CRD is not installed (kubectl apply -f manifests/crd.yaml)") from None
            if exc.status is not None and (exc.status >= 500 or exc.status == 429):
                raise ApiError(f"the Kubernetes API server failed to list SSHAccess objects: {exc.status} "
                               f"{exc.reason}", http_reason(exc.status)) from None
            raise ControlPlaneError(f"cannot list SSHAccess objects: {exc.status} {exc.reason}") from None
        except TRANSPORT_ERRORS as exc:
            raise unreachable(exc) from None
        return list(result.get("items") or [])

    def start(self) -> None:
        """Lists once (so the snapshot is exact before the gateway serves), then starts the threads."""
        if self.writer:
            self.writer.start()
        if self.session_objects is not None:
            self.session_objects.start()
        # Without the API server (yet), wait for it: not ready, one log line per attempt.
        self.inventory.replace_all(retry_while_unavailable("SSHAccess objects", self.list_all, log, self._stop))
        event(log, "snapshot_populated", grants=len(self.store.current.grants))
        for target, name in ((self._run_kopf, "kopf"), (self._run_resync, "resync")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def relisted(self) -> None:
        self._relist.set()

    def _run_kopf(self) -> None:
        """Runs kopf until stopped; restarts it with a growing pause if it ever fails."""
        delay = 1.0
        while not self._stop.is_set():
            registry = build_registry(self.kube, self.inventory, self.relisted,
                                      self.session_objects.deleted if self.session_objects else None)
            try:
                asyncio.run(kopf.operator(registry=registry, clusterwide=True, standalone=True,
                                          stop_flag=self._stop, ready_flag=self._kopf_ready))
            except Exception:
                log.exception("kopf_failed")
            if self._stop.is_set():
                break
            self._kopf_failures += 1
            event(log, "kopf_restarting", logging.WARNING, delay_s=delay, failures=self._kopf_failures)
            self.relisted()  # the watch was down: list everything once kopf is back
            self._stop.wait(delay)
            delay = min(delay * 2, 30.0)

    @property
    def healthy(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def _run_resync(self) -> None:
        while not self._stop.is_set():
            relisted = self._relist.wait(self._interval)
            if self._stop.is_set():
                break
            if relisted:
                self._stop.wait(0.5)  # let the re-listing finish first
            self._relist.clear()
            try:
                self.inventory.replace_all(self.list_all())
            except (ControlPlaneError, ApiError) as exc:
                event(log, "resync_failed", logging.WARNING, error=str(exc))
            except Exception:
                log.exception("resync_failed")

    def stop(self) -> None:
        self._stop.set()
        self._relist.set()
        for t in self._threads:
            t.join(10)
        self.inventory.close()
        if self.session_objects is not None:
            self.session_objects.stop()
        if self.writer:
            self.writer.stop()
