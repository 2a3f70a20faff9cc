"""Resolves a Target to one running container the caller's grants cover.

Runs in a session thread (it may call the API); every refusal is a TargetError whose message
the user sees verbatim, so it names the problem without revealing pods the key cannot reach.

With a PodCache (podcache.py) the pods come from the watches when they can: a pod by name costs
no API round trip, a workload one (its GET: the selector is read fresh, never cached). The cache
only ever says yes: a pod it does not hold, a namespace it has not synced, and any refusal
reached on its pods (not running, no running pod, a container not running yet: it may lag) are
asked of the API again, so a refusal is always the API server's word.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from sshserver.grants.access import Grant
from sshserver.grants.labelselector import LabelSelector
from sshserver.grants.target import Target, TargetError
from sshserver.kube.client import TRANSPORT_ERRORS, ApiError, KubeClient, http_reason, unreachable
from sshserver.kube.podcache import PodCache

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


@dataclass(frozen=True)
class ResolvedTarget:
    namespace: str
    pod: str
    container: str | None  # None for a port forward: ports belong to the pod
    labels: Mapping[str, str]  # the pod's labels when resolved: revocation re-checks selectors on them
    grants: tuple[Grant, ...]  # every grant of the key that covers this container
    uid: str = ""  # the pod's uid: Events about the pod name it (kubectl describe pod matches on it)


def unknown_pod(name: str, where: str) -> TargetError:
    """The one answer for a pod that is not there or not this key's to reach (also what an exec
    that finds its pod gone says: the cache may have known it a moment longer than the API)."""
    return TargetError(f"unknown pod {name!r} in {where}, or not permitted for this key")


def vanished(exc: ApiError, namespace: str, pod: str) -> TargetError | None:
    """A stream the API server refused with 404 Not Found: the resolved pod is gone (deleted
    since, or known to the cache a moment longer than to the API). Said as for any unknown pod."""
    return unknown_pod(pod, namespace) if exc.reason == http_reason(404) else None


class _Lookups:
    """How one resolution reads pods: from the cache first (`cached`), and whether it did (`hit`)."""

    def __init__(self, cache: PodCache | None) -> None:
        self.cache = cache
        self.hit = False


def _is_ready(pod: Any) -> bool:
    conditions = (pod.status and pod.status.conditions) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


class PodResolver:
    def __init__(self, kube: KubeClient, timeout: float = 10.0,
                 on_api_error: Callable[[str], None] | None = None, cache: PodCache | None = None) -> None:
        self._kube = kube
        self._timeout = timeout
        self._on_api_error = on_api_error or (lambda _reason: None)
        self._cache = cache

    def _failed(self, exc: ApiException, what: str) -> Exception:
        """A refusal (4xx) is the user's to read; a failing or overloaded API server (5xx, 429)
        is an ApiError like an unreachable one: the session ends with 255, not 1."""
        if exc.status is not None and (exc.status >= 500 or exc.status == 429):
            return ApiError(f"the Kubernetes API server failed to {what}: {_reason(exc)}", http_reason(exc.status))
        self._on_api_error(http_reason(exc.status))
        return TargetError(f"cannot {what}: {_reason(exc)}")

    def resolve(self, target: Target, grants: Sequence[Grant], container_matters: bool = True) -> ResolvedTarget:
        """The container, or a TargetError (the user's problem), or an ApiError (the API server's)."""
        try:
            if self._cache is not None:
                lookups = _Lookups(self._cache)
                try:
                    return self._resolve(target, grants, container_matters, lookups)
                except TargetError:
                    if not lookups.hit:
                        raise  # the API's own answer already
            return self._resolve(target, grants, container_matters, _Lookups(None))
        except TRANSPORT_ERRORS as exc:
            raise unreachable(exc) from None

    def _resolve(self, target: Target, grants: Sequence[Grant], container_matters: bool,
                 lookups: _Lookups) -> ResolvedTarget:
        """Whether a grant covers the pod is checked before
        anything about it is said: a pod the key cannot reach gets the same answer as a
        missing one (no phase, no container names)."""
        namespaces = sorted({g.namespace for g in grants})
        if target.namespace is not None:
            if target.namespace not in namespaces:
                raise TargetError(f"not permitted: this key has no access in namespace {target.namespace!r}")
            namespaces = [target.namespace]
        if target.kind:
            pod = self._pod_of_workload(namespaces[0], target.kind, target.name, grants, lookups)
        else:
            pod = self._find_pod(namespaces, target.name, grants, lookups)
        namespace, name = pod.metadata.namespace, pod.metadata.name
        if (pod.status.phase or "") != "Running":
            raise TargetError(f"pod {namespace}/{name} is not running (phase {pod.status.phase})")
        labels = pod.metadata.labels or {}
        container = self._container(pod, target.container, grants) if container_matters else None
        covering = tuple(g for g in grants if g.covers(namespace, labels, container))
        if not covering:
            raise TargetError(f"not permitted: this key has no grant for container {container!r} of {namespace}/{name}")
        uid = getattr(pod.metadata, "uid", None) or ""
        return ResolvedTarget(namespace, name, container, dict(labels), covering, uid)

    def running_pods(self, grant: Grant) -> list[Any]:
        """The running pods a grant selects (its namespace and selector), not being deleted, by
        name: what `ssh ls@gateway` lists. From the cache when it has synced the namespace, else
        one list call (a TargetError for a 4xx, an ApiError when the API server fails)."""
        pods = self._cache.select(grant.namespace, grant.selector) if self._cache is not None else None
        if pods is None:
            try:
                pods = self._kube.core.list_namespaced_pod(
                    grant.namespace, label_selector=str(grant.selector), _request_timeout=self._timeout).items
            except ApiException as exc:
                raise self._failed(exc, f"list pods in {grant.namespace}") from None
            except TRANSPORT_ERRORS as exc:
                raise unreachable(exc) from None
        # The list's label selector is the grant's; the match is checked here too, as everywhere.
        found = [p for p in pods if p.metadata.deletion_timestamp is None
                 and (getattr(p.status, "phase", None) or "") == "Running"
                 and grant.covers(p.metadata.namespace or grant.namespace, p.metadata.labels or {}, None)]
        return sorted(found, key=lambda p: p.metadata.name)

    @staticmethod
    def _reachable(pod: Any, grants: Sequence[Grant]) -> bool:
        """Some grant covers the pod (namespace and labels), whatever its containers."""
        labels = pod.metadata.labels or {}
        return any(g.covers(pod.metadata.namespace, labels, None) for g in grants)

    def _read_pod(self, namespace: str, name: str) -> Any | None:
        try:
            return self._kube.core.read_namespaced_pod(name, namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._failed(exc, f"read pod {namespace}/{name}") from None

    def _lookup_pod(self, namespace: str, name: str, lookups: _Lookups) -> Any | None:
        """The cache's pod when it holds one, else the API's (None: 404)."""
        if lookups.cache is not None and (pod := lookups.cache.pod(namespace, name)) is not None:
            lookups.hit = True
            return pod
        return self._read_pod(namespace, name)

    def _find_pod(self, namespaces: Sequence[str], name: str, grants: Sequence[Grant], lookups: _Lookups) -> Any:
        found = [p for p in (self._lookup_pod(ns, name, lookups) for ns in namespaces)
                 if p is not None and self._reachable(p, grants)]
        if not found:
            where = namespaces[0] if len(namespaces) == 1 else "any namespace this key can access"
            raise unknown_pod(name, where)
        if len(found) > 1:
            candidates = ", ".join(f"{p.metadata.namespace}/{name}" for p in found)
            raise TargetError(f"ambiguous target {name!r}: name the namespace, one of {candidates}")
        return found[0]

    def _pod_of_workload(self, namespace: str, kind: str, name: str, grants: Sequence[Grant],
                         lookups: _Lookups) -> Any:
        readers = {
            "deployments": self._kube.apps.read_namespaced_deployment,
            "statefulsets": self._kube.apps.read_namespaced_stateful_set,
            "daemonsets": self._kube.apps.read_namespaced_daemon_set,
            "replicasets": self._kube.apps.read_namespaced_replica_set,
            "jobs": self._kube.batch.read_namespaced_job,
        }
        singular = kind.rstrip("s")
        unknown = TargetError(f"unknown {singular} {namespace}/{name}, or not permitted for this key")
        try:
            workload = readers[kind](name, namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 404:
                raise unknown from None
            raise self._failed(exc, f"read {singular} {namespace}/{name}") from None
        sel = workload.spec.selector
        selector = LabelSelector.from_dict(self._kube.api_client.sanitize_for_serialization(sel) if sel else {})
        pods = lookups.cache.select(namespace, selector) if lookups.cache is not None else None
        if pods is not None:
            lookups.hit = True
        else:
            try:
                pods = self._kube.core.list_namespaced_pod(
                    namespace, label_selector=str(selector), _request_timeout=self._timeout
                ).items
            except ApiException as exc:
                raise self._failed(exc, f"list pods of {singular} {namespace}/{name}") from None
        pods = [p for p in pods if self._reachable(p, grants)]
        if not pods:  # the workload exists, but nothing of it is this key's to see
            raise unknown
        running = [p for p in pods if p.metadata.deletion_timestamp is None and p.status.phase == "Running"]
        ready = sorted((p for p in running if _is_ready(p)), key=lambda p: p.metadata.name)
        if ready:
            return ready[0]
        if running:
            return sorted(running, key=lambda p: p.metadata.name)[0]
        raise TargetError(f"{singular} {namespace}/{name} has no running pod")

    @staticmethod
    def _container(pod: Any, wanted: str | None, grants: Sequence[Grant]) -> str:
        names = [c.name for c in pod.spec.containers]
        ns, labels = pod.metadata.namespace, pod.metadata.labels or {}
        if wanted is None:
            annotated = (pod.metadata.annotations or {}).get(DEFAULT_CONTAINER_ANNOTATION)
            wanted = annotated if annotated in names else names[0]
        elif wanted not in names or not any(g.covers(ns, labels, wanted) for g in grants):
            allowed = [n for n in names if any(g.covers(ns, labels, n) for g in grants)]  # only what may be seen
            raise TargetError(
                f"no such container {wanted!r} in pod {ns}/{pod.metadata.name}, or not permitted for this key"
                f" (containers: {', '.join(allowed) or 'none for this key'})"
            )
        for status in pod.status.container_statuses or []:
            if status.name == wanted and not (status.state and status.state.running):
                raise TargetError(f"container {wanted!r} of pod {pod.metadata.name} is not running")
        return wanted


def _reason(exc: ApiException) -> str:
    return f"{exc.status} {exc.reason}".strip()
