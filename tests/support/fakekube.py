"""An in-memory Kubernetes API for unit tests of the control plane (no cluster), in the shape of
client-go's fake clientsets as kubernetes/sample-controller uses them: an object tracker that
holds what was written, a list of every call made (`actions`), and reactors that make the next
calls fail, so that a test can break the API exactly where it wants and then assert what was
finally written.

It stands in for `sshserver.kube.client.KubeClient` where the control plane uses it:

    kube = FakeKube()
    kube.add(sshaccess_body)                       # an object that exists in the "cluster"
    writer = ClusterWriter(kube, retry_base=0.01)  # type: ignore[arg-type]
    kube.fail_next(2, api_error(503), verb="patch")
    ...
    kube.wait_until(lambda: kube.status_of("shop", "g").get("keyCount") == 1)
    assert len(kube.actions_for("patch")) == 3    # two failures, then the write

Only the calls the control plane makes exist (AttributeError for any other, so a new call is
noticed): CustomObjectsApi.patch_namespaced_custom_object_status, .list_cluster_custom_object,
.list_namespaced_custom_object, .get_namespaced_custom_object, .create_namespaced_custom_object,
.patch_namespaced_custom_object (merge patch), .delete_namespaced_custom_object (any plural:
SSHSessions, Leases), and CoreV1Api.create_namespaced_event, .patch_namespaced_event. Lists
honour a `label_selector` of `key`, `key=value` or `key!=value` terms. They behave as the API
server does where the control plane depends on it: a status patch is a JSON merge patch
(RFC 7386) of `status` only and answers 404 for an object that does not exist; creating an
Event whose name exists answers 409; bodies must be JSON-serializable (datetimes are, as the
real client turns them into RFC 3339).

For the gateway's pod cache and resolver: CoreV1Api.read_namespaced_pod, .list_namespaced_pod
(a list with its resourceVersion, or with watch=True the streamed response kubernetes' Watch
reads: every pod change after that version, ERROR 410 for a version older than `compact()`
kept, the stream ended by `timeout_seconds` or by Watch.stop's socket shutdown) and
the workload readers of AppsV1Api and BatchV1Api. Pods and workloads come back as the client's models.
Watch requests are recorded as verb "watch".

For debug containers (sshserver/kube/ephemeral.py): CoreV1Api.patch_namespaced_pod_ephemeralcontainers
applies a strategic merge patch of spec.ephemeralContainers (merged by name; changing one that
exists answers 422, as the API server does; recorded as verb "patch", subresource
"ephemeralcontainers"), and `set_container_state` plays the kubelet: it writes the state of an
ephemeral container into the pod's status.

Threads: every method may be called from any thread (the writer calls from its own); the state
is behind one lock, and `wait_until` wakes up at every call instead of polling.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

SSHACCESSES = "sshaccesses"
EVENTS = "events"
PODS = "pods"
DEPLOYMENTS = "deployments"
_MODELS = ApiClient()  # only to turn bodies into the client's models, as the real client does


def api_error(status: int, reason: str | None = None) -> ApiException:
    """What the client raises for an HTTP error answer (409 Conflict, 500, 503, 404 ...)."""
    names = {400: "Bad Request", 404: "Not Found", 409: "Conflict", 410: "Gone", 422: "Unprocessable Entity",
             429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
    return ApiException(status=status, reason=reason or names.get(status, "Error"))


def connection_refused() -> urllib3.exceptions.MaxRetryError:
    """What the client raises when the API server does not accept connections (one of
    sshserver.kube.client.TRANSPORT_ERRORS)."""
    cause = urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    return urllib3.exceptions.MaxRetryError(None, "/apis", cause)  # type: ignore[arg-type]


def connection_reset() -> urllib3.exceptions.ProtocolError:
    """What the client raises when the API server drops a connection mid-request."""
    reset = ConnectionResetError(104, "Connection reset by peer")
    return urllib3.exceptions.ProtocolError("Connection aborted.", reset)


@dataclass(frozen=True)
class Action:
    """One call the code under test made, whether it succeeded or not."""

    verb: str  # list, get, patch, create
    resource: str  # sshaccesses, events
    namespace: str = ""
    name: str = ""
    subresource: str = ""  # "status" for a status patch
    body: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments: _request_timeout, _content_type


@dataclass
class _Reactor:
    verb: str | None
    resource: str | None
    times: int | None  # None: for ever
    react: Callable[[Action], None]  # raises to fail the call

    def matches(self, action: Action) -> bool:
        return self.verb in (None, action.verb) and self.resource in (None, action.resource)


def _wire(value: Any) -> Any:
    """A body as the API server receives it: JSON, with datetimes as text like the real client."""

    def default(v: Any) -> Any:
        if isinstance(v, datetime | date):
            return v.isoformat()
        raise TypeError(f"{type(v).__name__} is not JSON serializable")

    return json.loads(json.dumps(value, default=default))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: mappings merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKube:
    """The fake API server and its two client objects, `custom` and `core`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, namespace, name) -> body
        self._reactors: list[_Reactor] = []
        self._released = threading.Event()
        self._versions = itertools.count(1)
        self._version = 0  # the last resourceVersion given
        self._pod_changes: list[tuple[int, str, dict[str, Any]]] = []  # (version, ADDED|MODIFIED|DELETED, body)
        self._kept_from = 0  # watches from an older version get 410 Gone
        self.actions: list[Action] = []
        self.custom = _CustomObjectsApi(self)
        self.core = _CoreV1Api(self)
        self.apps = _AppsV1Api(self)
        self.batch = _BatchV1Api(self)
        self.api_client = _MODELS

    def _next_version(self) -> int:
        self._version = next(self._versions)
        return self._version

    # -- the tracker: what exists in the "cluster" --------------------------------------------

    def add(self, body: Mapping[str, Any], resource: str = SSHACCESSES) -> None:
        """Creates or replaces an object, as another client would (no action is recorded)."""
        meta = body["metadata"]
        stored = _wire(body)
        with self._cond:
            key = (resource, meta["namespace"], meta["name"])
            version = self._next_version()
            stored["metadata"]["resourceVersion"] = str(version)
            if resource == PODS:
                self._pod_changes.append((version, "MODIFIED" if key in self._objects else "ADDED", stored))
            self._objects[key] = stored
            self._cond.notify_all()

    def remove(self, namespace: str, name: str, resource: str = SSHACCESSES) -> None:
        """Deletes an object, as another client would (no action is recorded)."""
        with self._cond:
            gone = self._objects.pop((resource, namespace, name), None)
            if gone is not None and resource == PODS:
                body = copy.deepcopy(gone)
                body["metadata"]["resourceVersion"] = str(self._next_version())
                self._pod_changes.append((self._version, "DELETED", body))
            self._cond.notify_all()

    def compact(self) -> None:
        """Forgets the pod changes so far, as etcd's compaction does: a watch from any version
        before now answers 410 Gone."""
        with self._cond:
            self._pod_changes.clear()
            self._kept_from = self._version
            self._cond.notify_all()

    def get(self, namespace: str, name: str, resource: str = SSHACCESSES) -> dict[str, Any] | None:
        with self._cond:
            found = self._objects.get((resource, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def set_container_state(self, namespace: str, pod: str, container: str, state: Mapping[str, Any]) -> None:
        """Writes status.ephemeralContainerStatuses[container].state, as the kubelet does (e.g.
        {"running": {}} or {"waiting": {"reason": "ErrImagePull"}}); no action is recorded."""
        body = self.get(namespace, pod, PODS)
        assert body is not None, f"no pod {namespace}/{pod}"
        statuses = [s for s in (body.get("status") or {}).get("ephemeralContainerStatuses") or []
                    if s.get("name") != container]
        statuses.append({"name": container, "image": "", "imageID": "", "ready": False, "restartCount": 0,
                         "state": dict(state)})
        body.setdefault("status", {})["ephemeralContainerStatuses"] = statuses
        self.add(body, PODS)

    def status_of(self, namespace: str, name: str) -> dict[str, Any]:
        """The object's status as finally written ({} if none or no object)."""
        return (self.get(namespace, name) or {}).get("status") or {}

    def events(self) -> list[dict[str, Any]]:
        """Every Event created, oldest first."""
        with self._cond:
            return [copy.deepcopy(b) for (r, _, _), b in self._objects.items() if r == EVENTS]

    def actions_for(self, verb: str | None = None, resource: str | None = None) -> list[Action]:
        with self._cond:
            return [a for a in self.actions if verb in (None, a.verb) and resource in (None, a.resource)]

    # -- reactors: making calls fail --------------------------------------------------------------

    def prepend_reactor(self, react: Callable[[Action], None], verb: str | None = None,
                        resource: str | None = None, times: int | None = None) -> None:
        """`react` sees each matching call first (newest reactor first) and fails it by raising;
        it is dropped after `times` calls (None: never)."""
        with self._cond:
            self._reactors.insert(0, _Reactor(verb, resource, times, react))

    def fail_next(self, n: int, error: BaseException, verb: str | None = None, resource: str | None = None) -> None:
        """The next `n` matching calls raise `error` (an ApiException, a urllib3 or OS error)."""

        def fail(_: Action) -> None:
            raise error

        self.prepend_reactor(fail, verb, resource, times=n)

    def hang_next(self, n: int, verb: str | None = None, resource: str | None = None) -> None:
        """The next `n` matching calls get no answer, like a partitioned API server: a call with a
        `_request_timeout` raises urllib3's ReadTimeoutError after it; one without waits until
        `release()` (for ever, as the real client would)."""

        def hang(action: Action) -> None:
            timeout = action.options.get("_request_timeout")
            if timeout is None:
                self._released.wait()
                raise connection_reset()
            time.sleep(timeout if isinstance(timeout, int | float) else sum(timeout))
            raise urllib3.exceptions.ReadTimeoutError(None, "/apis", "Read timed out.")  # type: ignore[arg-type]

        self.prepend_reactor(hang, verb, resource, times=n)

    def heal(self) -> None:
        """Drops every reactor: from now on calls succeed (a failure that lasts until the test ends it)."""
        with self._cond:
            self._reactors.clear()

    def release(self) -> None:
        """Ends every hung call without a timeout (call it in a test's cleanup)."""
        self._released.set()

    # -- waiting ------------------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 2.0) -> Any:
        """Waits until `predicate()` is truthy (checked after every call and change) and returns it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not reached within {timeout}s; calls: {[a.verb for a in self.actions]}")
                self._cond.wait(min(left, 0.05))

    # -- the API server proper -------------------------------------------------------------------

    def _call(self, action: Action, serve: Callable[[], Any]) -> Any:
        with self._cond:
            self.actions.append(action)
            reactor = next((r for r in self._reactors if r.matches(action)), None)
            if reactor is not None and reactor.times is not None:
                reactor.times -= 1
                if reactor.times <= 0:
                    self._reactors.remove(reactor)
            self._cond.notify_all()
        try:
            if reactor is not None:
                reactor.react(action)  # outside the lock: it may hang
            with self._cond:
                return serve()
        finally:
            with self._cond:
                self._cond.notify_all()

    def _patch_status(self, action: Action) -> dict[str, Any]:
        key = (SSHACCESSES, action.namespace, action.name)
        stored = self._objects.get(key)
        if stored is None:
            raise api_error(404)
        # The status subresource applies `status` only and ignores the rest of the patch.
        stored["status"] = merge_patch(stored.get("status") or {}, _wire(action.body).get("status") or {})
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(stored)

    def _create(self, action: Action) -> dict[str, Any]:
        key = (action.resource, action.namespace, action.name)
        if key in self._objects:
            raise api_error(409, "AlreadyExists")
        body = _wire(action.body)
        body["metadata"]["resourceVersion"] = str(next(self._versions))
        body["metadata"].setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._objects[key] = body
        return copy.deepcopy(body)

    def _patch(self, action: Action) -> dict[str, Any]:
        key = (action.resource, action.namespace, action.name)
        stored = self._objects.get(key)
        if stored is None:
            raise api_error(404)
        patched = merge_patch(stored, _wire(action.body))
        patched["metadata"]["resourceVersion"] = str(next(self._versions))
        self._objects[key] = patched
        return copy.deepcopy(patched)

    def _patch_ephemeral(self, action: Action) -> Any:
        key = (PODS, action.namespace, action.name)
        stored = self._objects.get(key)
        if stored is None:
            raise api_error(404)
        spec = stored.setdefault("spec", {})
        current = {c["name"]: c for c in spec.get("ephemeralContainers") or []}
        for container in ((_wire(action.body).get("spec") or {}).get("ephemeralContainers") or []):
            if container["name"] in current and current[container["name"]] != container:
                raise api_error(422, "Invalid")  # "existing ephemeral containers may not be changed"
            current[container["name"]] = container
        spec["ephemeralContainers"] = list(current.values())
        stored["metadata"]["resourceVersion"] = str(self._next_version())
        self._pod_changes.append((self._version, "MODIFIED", copy.deepcopy(stored)))
        return _MODELS.deserialize(json.dumps(stored), "V1Pod", "application/json")

    def _delete(self, action: Action) -> dict[str, Any]:
        found = self._objects.pop((action.resource, action.namespace, action.name), None)
        if found is None:
            raise api_error(404)
        return {"kind": "Status", "status": "Success"}

    def _list(self, resource: str, namespace: str | None, selector: str | None) -> list[dict[str, Any]]:
        return [copy.deepcopy(b) for (r, ns, _), b in self._objects.items()
                if r == resource and namespace in (None, ns) and _selects(selector, b)]

    def objects(self, resource: str) -> list[dict[str, Any]]:
        """Every object of a resource (plural), in every namespace."""
        with self._cond:
            return self._list(resource, None, None)

    def _create_event(self, action: Action) -> dict[str, Any]:
        body = _wire(action.body)
        key = (EVENTS, action.namespace, body["metadata"]["name"])
        if key in self._objects:
            raise api_error(409, "AlreadyExists")
        self._objects[key] = body
        return copy.deepcopy(body)


    def _read(self, resource: str, namespace: str, name: str, model: str) -> Any:
        found = self._objects.get((resource, namespace, name))
        if found is None:
            raise api_error(404)
        return _MODELS.deserialize(json.dumps(found), model, "application/json")

    def _list_pods(self, namespace: str, label_selector: str | None) -> Any:
        wanted = dict(part.split("=", 1) for part in label_selector.split(",")) if label_selector else {}
        items = [b for (r, ns, _), b in self._objects.items() if r == PODS and ns == namespace
                 and all((b["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]
        body = {"metadata": {"resourceVersion": str(self._version)}, "items": items}
        return _MODELS.deserialize(json.dumps(body), "V1PodList", "application/json")

    def _pod_changes_after(self, namespace: str, version: int) -> list[tuple[int, str, dict[str, Any]]] | None:
        """The namespace's pod changes after `version`; None when they are no longer kept."""
        if version < self._kept_from:
            return None
        return [c for c in self._pod_changes if c[0] > version and c[2]["metadata"]["namespace"] == namespace]


class _WatchResponse:
    """The urllib3 response of a watch request, as kubernetes' Watch reads it: `stream()` yields
    one JSON line per change; `connection.sock.shutdown()` (what Watch.stop calls) ends it."""

    status = 200

    def __init__(self, kube: FakeKube, namespace: str, version: int, timeout: float) -> None:
        self._kube = kube
        self._namespace = namespace
        self._version = version
        self._deadline = time.monotonic() + timeout
        self._closed = False
        self.connection = type("Conn", (), {"sock": self})()

    def shutdown(self, _how: int) -> None:
        with self._kube._cond:
            self._closed = True
            self._kube._cond.notify_all()

    def close(self) -> None:
        self.shutdown(0)

    def release_conn(self) -> None:
        pass

    def stream(self, amt: int | None = None, decode_content: bool = False) -> Any:
        kube = self._kube
        while True:
            with kube._cond:
                if self._closed:
                    raise connection_reset()  # as a read on a socket shut down under it
                changes = kube._pod_changes_after(self._namespace, self._version)
                if changes is None:
                    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                        "message": "too old resource version"}}
                    yield (json.dumps(gone) + "\n").encode()
                    return
                if not changes:
                    left = self._deadline - time.monotonic()
                    if left <= 0:
                        return  # the server ends the watch at timeout_seconds
                    kube._cond.wait(min(left, 0.05))
                    continue
            for version, kind, body in changes:
                self._version = version
                yield (json.dumps({"type": kind, "object": body}) + "\n").encode()

def _selects(selector: str | None, body: Mapping[str, Any]) -> bool:
    labels = (body.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:  # as the API server: also true of objects without the label
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
            continue
        key, sep, value = term.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True



class _CustomObjectsApi:
    """kubernetes.client.CustomObjectsApi, as far as the control plane calls it."""

    def __init__(self, kube: FakeKube) -> None:
        self._kube = kube

    def patch_namespaced_custom_object_status(self, group: str, version: str, namespace: str, plural: str,
                                              name: str, body: Any, **options: Any) -> dict[str, Any]:
        action = Action("patch", plural, namespace, name, "status", copy.deepcopy(body), options)
        return self._kube._call(action, lambda: self._kube._patch_status(action))

    def list_cluster_custom_object(self, group: str, version: str, plural: str, **options: Any) -> dict[str, Any]:
        kube = self._kube

        def serve() -> dict[str, Any]:
            items = kube._list(plural, None, options.get("label_selector"))
            return {"apiVersion": f"{group}/{version}", "items": items}

        return kube._call(Action("list", plural, options=options), serve)

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                      **options: Any) -> dict[str, Any]:
        kube = self._kube

        def serve() -> dict[str, Any]:
            return {"apiVersion": f"{group}/{version}",
                    "items": kube._list(plural, namespace, options.get("label_selector"))}

        return kube._call(Action("list", plural, namespace, options=options), serve)

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, body: Any,
                                        **options: Any) -> dict[str, Any]:
        name = str(((body or {}).get("metadata") or {}).get("name", ""))
        action = Action("create", plural, namespace, name, "", copy.deepcopy(body), options)
        return self._kube._call(action, lambda: self._kube._create(action))

    def patch_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                       body: Any, **options: Any) -> dict[str, Any]:
        action = Action("patch", plural, namespace, name, "", copy.deepcopy(body), options)
        return self._kube._call(action, lambda: self._kube._patch(action))

    def delete_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                        **options: Any) -> dict[str, Any]:
        action = Action("delete", plural, namespace, name, options=options)
        return self._kube._call(action, lambda: self._kube._delete(action))

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                     **options: Any) -> dict[str, Any]:
        kube = self._kube

        def serve() -> dict[str, Any]:
            found = kube._objects.get((plural, namespace, name))
            if found is None:
                raise api_error(404)
            return copy.deepcopy(found)

        return kube._call(Action("get", plural, namespace, name, options=options), serve)


class _CoreV1Api:
    """kubernetes.client.CoreV1Api, as far as the control plane calls it."""

    def __init__(self, kube: FakeKube) -> None:
        self._kube = kube

    def read_namespaced_pod(self, name: str, namespace: str, **options: Any) -> Any:
        kube = self._kube
        return kube._call(Action("get", PODS, namespace, name, options=options),
                          lambda: kube._read(PODS, namespace, name, "V1Pod"))

    def list_namespaced_pod(self, namespace: str, watch: bool = False, resource_version: str | None = None,
                            label_selector: str | None = None, timeout_seconds: int | None = None,
                            **options: Any) -> Any:
        kube = self._kube
        if not watch:
            return kube._call(Action("list", PODS, namespace, options={"label_selector": label_selector, **options}),
                              lambda: kube._list_pods(namespace, label_selector))
        action = Action("watch", PODS, namespace, options={"resource_version": resource_version,
                                                           "timeout_seconds": timeout_seconds, **options})
        return kube._call(action, lambda: _WatchResponse(kube, namespace, int(resource_version or 0),
                                                         timeout_seconds or 3600))

    def patch_namespaced_pod_ephemeralcontainers(self, name: str, namespace: str, body: Any, **options: Any) -> Any:
        action = Action("patch", PODS, namespace, name, "ephemeralcontainers", copy.deepcopy(body), options)
        return self._kube._call(action, lambda: self._kube._patch_ephemeral(action))

    def create_namespaced_event(self, namespace: str, body: Any, **options: Any) -> dict[str, Any]:
        name = str(((body or {}).get("metadata") or {}).get("name", ""))
        action = Action("create", EVENTS, namespace, name, "", copy.deepcopy(body), options)
        return self._kube._call(action, lambda: self._kube._create_event(action))

    def patch_namespaced_event(self, name: str, namespace: str, body: Any, **options: Any) -> dict[str, Any]:
        action = Action("patch", EVENTS, namespace, name, "", copy.deepcopy(body), options)
        return self._kube._call(action, lambda: self._kube._patch(action))


class _AppsV1Api:
    """kubernetes.client.AppsV1Api, as far as the resolver calls it."""

    def __init__(self, kube: FakeKube) -> None:
        self._kube = kube

    def _read(self, resource: str, model: str, name: str, namespace: str, options: dict[str, Any]) -> Any:
        kube = self._kube
        return kube._call(Action("get", resource, namespace, name, options=options),
                          lambda: kube._read(resource, namespace, name, model))

    def read_namespaced_deployment(self, name: str, namespace: str, **options: Any) -> Any:
        return self._read(DEPLOYMENTS, "V1Deployment", name, namespace, options)

    def read_namespaced_stateful_set(self, name: str, namespace: str, **options: Any) -> Any:
        return self._read("statefulsets", "V1StatefulSet", name, namespace, options)

    def read_namespaced_daemon_set(self, name: str, namespace: str, **options: Any) -> Any:
        return self._read("daemonsets", "V1DaemonSet", name, namespace, options)

    def read_namespaced_replica_set(self, name: str, namespace: str, **options: Any) -> Any:
        return self._read("replicasets", "V1ReplicaSet", name, namespace, options)


class _BatchV1Api(_AppsV1Api):
    """kubernetes.client.BatchV1Api, as far as the resolver calls it."""

    def read_namespaced_job(self, name: str, namespace: str, **options: Any) -> Any:
        return self._read("jobs", "V1Job", name, namespace, options)

