"""The pods of the namespaces the grants name, kept current by watches: resolving a target then
costs no API round trip (resolver.py asks here first).

One informer per namespace (a list, then a watch from its resourceVersion, bookmarks allowed;
a new list after 410 Gone or any error, with a backoff that doubles up to a cap). Per namespace
rather than one cluster-wide watch: the gateway needs only the namespaces some grant names, and
a cluster-wide watch would carry (and deserialize) every pod change of a large cluster, most of
them of namespaces nobody may reach. The set follows the AccessStore: each snapshot swap starts
the informers of new namespaces and stops those no grant names any more.

The cache never answers "no": a pod it does not hold, or a namespace it has not listed yet (or
whose watch failed, or went silent for longer than `max_silence`), is a miss and the resolver
asks the API. What it holds can lag the cluster by the watch's delivery time; a pod deleted in
that moment makes the exec itself fail with 404, which the session reports as an unknown pod.

Threads: one `pod-cache-NAMESPACE` thread per informer; `follow`'s listener runs on the thread
that swaps the snapshot (kopf loop, resync) and only starts and stops informers, never waits on
the network. Readers (session threads) take one informer's lock for a dictionary look-up; the
pods handed out are shared and must not be changed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from kubernetes import watch
from kubernetes.client import V1Pod
from kubernetes.client.exceptions import ApiException

from sshserver.grants.access import AccessSnapshot, AccessStore
from sshserver.grants.labelselector import LabelSelector
from sshserver.kube.client import KubeClient
from sshserver.observability.logevents import event

log = logging.getLogger("podssh.podcache")

GONE = 410


class NamespaceInformer:
    """The pods of one namespace: list, then watch, again and again until stopped."""

    def __init__(self, kube: KubeClient, namespace: str, watch_timeout: int, max_silence: float,
                 backoff: tuple[float, float]) -> None:
        self.namespace = namespace
        self._kube = kube
        self._watch_timeout = watch_timeout
        self._max_silence = max_silence
        self._backoff = backoff
        self._lock = threading.Lock()
        self._pods: dict[str, V1Pod] = {}
        self._synced = False
        self._heard = 0.0  # monotonic time of the last sign of the API server (list, watch start, event)
        self._stop = threading.Event()
        self._response: Any = None  # the watch's urllib3 response while one runs
        self._decoder = watch.Watch(return_type=V1Pod)  # only its event decoding is used
        self._thread = threading.Thread(target=self._run, name=f"pod-cache-{namespace}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the informer without waiting: the watch's socket is shut down, which wakes its
        thread (as kubernetes' Watch.stop does). From now on it answers nothing."""
        self._stop.set()
        with self._lock:
            self._synced = False
            self._pods = {}
            response = self._response
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def synced(self) -> bool:
        """Listed, and the API server heard from within max_silence (a silently dead watch is not trusted)."""
        with self._lock:
            return self._synced and time.monotonic() - self._heard < self._max_silence

    def get(self, name: str) -> V1Pod | None:
        with self._lock:
            if not self._synced or time.monotonic() - self._heard >= self._max_silence:
                return None
            return self._pods.get(name)

    def select(self, selector: LabelSelector) -> list[V1Pod] | None:
        """The pods the selector matches; None when the cache cannot tell (not synced)."""
        with self._lock:
            if not self._synced or time.monotonic() - self._heard >= self._max_silence:
                return None
            return [p for p in self._pods.values() if selector.matches(p.metadata.labels or {})]

    # --- the informer's thread ------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            try:
                version = self._list()
                delay = self._backoff[0]
                while not self._stop.is_set():
                    version = self._watch_from(version)
            except ApiException as exc:
                if self._stop.is_set():
                    return
                self._unsync()
                if exc.status == GONE:  # the version is too old: list again at once
                    event(log, "pod_cache_relist", namespace=self.namespace, reason="Gone")
                    continue
                event(log, "pod_cache_failed", logging.WARNING, namespace=self.namespace,
                      error=f"{exc.status} {exc.reason}"[:200], retry_in_s=delay)
            except Exception as exc:  # unreachable, reset, timed out, a body it could not read
                if self._stop.is_set():
                    return
                self._unsync()
                event(log, "pod_cache_failed", logging.WARNING, namespace=self.namespace,
                      error=(str(exc)[:200] or type(exc).__name__), retry_in_s=delay)
            if self._stop.wait(delay):
                return
            delay = min(self._backoff[1], delay * 2)

    def _unsync(self) -> None:
        with self._lock:
            self._synced = False

    def _list(self) -> str:
        listed = self._kube.core.list_namespaced_pod(self.namespace, _request_timeout=(10, 60))
        with self._lock:
            if self._stop.is_set():
                return ""
            self._pods = {p.metadata.name: p for p in listed.items}
            self._synced = True
            self._heard = time.monotonic()
        return listed.metadata.resource_version

    def _watch_from(self, version: str) -> str:
        """One watch request, until the server ends it (watch_timeout) or it fails; returns the
        version to go on from. The server is heard from at every event and at the end of every
        watch, so at least every watch_timeout; a read that waits max_silence fails the watch.
        Bookmarks only move the version (a re-watch after a quiet spell needs no new list).

        The request is made here rather than by kubernetes' Watch.stream, which issues it only
        at the first next() (a stop() before that would be lost) and retries 410 by itself; its
        decoder is used for the lines."""
        response = self._kube.core.list_namespaced_pod(
            self.namespace, watch=True, resource_version=version, allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout, _preload_content=False, _request_timeout=(10, self._max_silence))
        try:
            status = getattr(response, "status", 200)
            if not 200 <= status <= 299:
                raise ApiException(status=status, reason=getattr(response, "reason", None))
            with self._lock:
                if self._stop.is_set():
                    return version
                self._response = response
            decoder = self._decoder
            decoder.resource_version = None
            for line in watch.watch.iter_resp_lines(response):
                change = decoder.unmarshal_event(line, V1Pod)
                if change is None:
                    continue
                if change["type"] == "ERROR":  # 410 Gone: the version is no longer kept
                    status = change["raw_object"] or {}
                    raise ApiException(status=status.get("code"), reason=status.get("reason"))
                self._apply(change["type"], change["object"])
                version = decoder.resource_version or version
                if self._stop.is_set():
                    return version
        finally:
            with self._lock:
                self._response = None
            response.close()
            response.release_conn()
        with self._lock:
            self._heard = time.monotonic()  # the server ended the watch as asked: it is there
        return version

    def _apply(self, kind: str, pod: Any) -> None:
        with self._lock:
            self._heard = time.monotonic()
            if self._stop.is_set() or kind == "BOOKMARK":
                return
            name = pod.metadata.name
            if kind == "DELETED":
                self._pods.pop(name, None)
            elif kind in ("ADDED", "MODIFIED"):
                self._pods[name] = pod


class PodCache:
    """Informers for the namespaces the grants name; `pod` and `select` answer from them."""

    def __init__(self, kube: KubeClient, watch_timeout: int = 60, max_silence: float = 90.0,
                 backoff: tuple[float, float] = (1.0, 30.0)) -> None:
        self._kube = kube
        self._watch_timeout = watch_timeout  # the server ends each watch after it: a dead one shows within max_silence
        self._max_silence = max_silence
        self._backoff = backoff
        self._lock = threading.Lock()
        self._informers: dict[str, NamespaceInformer] = {}
        self._stopped = False

    def follow(self, store: AccessStore) -> None:
        """Watches the namespaces of the store's snapshot, now and after every swap."""
        store.subscribe(self.snapshot_changed)
        self.snapshot_changed(store.current)

    def snapshot_changed(self, snapshot: AccessSnapshot) -> None:
        """AccessStore listener (the thread that swapped the snapshot): never blocks."""
        self.watch_namespaces(g.namespace for g in snapshot.grants)

    def watch_namespaces(self, namespaces: Iterable[str]) -> None:
        wanted = set(namespaces)
        with self._lock:
            if self._stopped:
                return
            gone = [self._informers.pop(ns) for ns in list(self._informers) if ns not in wanted]
            new = []
            for ns in sorted(wanted - set(self._informers)):
                informer = NamespaceInformer(self._kube, ns, self._watch_timeout, self._max_silence, self._backoff)
                self._informers[ns] = informer
                new.append(informer)
        for informer in gone:
            informer.stop()
        for informer in new:
            try:
                informer.start()
            except RuntimeError:  # no thread to be had: that namespace is resolved by the API
                with self._lock:
                    self._informers.pop(informer.namespace, None)
        if gone or new:
            event(log, "pod_cache_namespaces", watching=len(self._informers),
                  started=[i.namespace for i in new][:20], stopped=[i.namespace for i in gone][:20])

    def _informer(self, namespace: str) -> NamespaceInformer | None:
        with self._lock:
            return self._informers.get(namespace)

    def synced(self, namespace: str) -> bool:
        informer = self._informer(namespace)
        return informer is not None and informer.synced

    def pod(self, namespace: str, name: str) -> V1Pod | None:
        """The pod as last watched, or None: not held, or the namespace not synced (ask the API)."""
        informer = self._informer(namespace)
        return informer.get(name) if informer is not None else None

    def select(self, namespace: str, selector: LabelSelector) -> list[V1Pod] | None:
        """The namespace's pods the selector matches, or None when the cache cannot tell."""
        informer = self._informer(namespace)
        return informer.select(selector) if informer is not None else None

    def stop(self, timeout: float = 2.0) -> None:
        """Stops every informer (gateway shutdown) and waits a little for their threads."""
        with self._lock:
            self._stopped = True
            informers, self._informers = list(self._informers.values()), {}
        for informer in informers:
            informer.stop()
        deadline = time.monotonic() + timeout
        for informer in informers:
            informer.join(max(0.0, deadline - time.monotonic()))
