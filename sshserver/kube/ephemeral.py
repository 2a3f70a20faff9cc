"""Ephemeral debug containers: how a session reaches a pod whose container has no shell.

The gateway adds (`patch pods/ephemeralcontainers`) a container of an image the grant allows,
with `targetContainerName` set to the target, so that it shares the target's process namespace:
the target's PID 1 is its PID 1, and the target's file system is at ROOT (/proc/1/root). An
ephemeral container can be neither removed nor changed, so one that runs already (same image,
same target: same name) is reused by every later session instead of adding another.

Called on a session's own thread, before its exec stream opens; it blocks for at most
`timeout` seconds (the image pull and the start), polling the pod.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubernetes.client.exceptions import ApiException

from sshserver.kube.client import TRANSPORT_ERRORS, Impersonation, KubeClient, http_reason, unreachable

PREFIX = "podssh-debug-"
ROOT = "/proc/1/root"
# Resource-light: one sleeping shell; the kubelet's TERM (when the pod goes) ends it at once.
IDLE = ("/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done")
# Waiting reasons that will not turn into a running container by themselves.
FAILED_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                            "CreateContainerError", "RunContainerError", "ErrImageNeverPull"})
# Taken from the target container when it sets them (the pod's own securityContext applies to an
# ephemeral container anyway): the same user is what lets the debug container read /proc/1/root.
COPIED = ("runAsUser", "runAsGroup", "runAsNonRoot")
POLL = 0.5


class DebugError(Exception):
    """The debug container could not be had; the message is one line for the user, `reason` a
    bounded metric label (an HTTP reason phrase, Timeout, Failed or Unreachable)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class DebugContainer:
    name: str
    image: str
    created: bool  # False: a running one was reused


def container_name(image: str, target: str) -> str:
    """podssh-debug-<10 hex digits of image and target>: the same pair always gets the same name
    (that is how a running one is found again), and any pair fits the 63-character limit."""
    digest = hashlib.sha256(f"{image}\0{target}".encode()).hexdigest()[:10]
    return PREFIX + digest


def security_context(pod: Mapping[str, Any], target: str) -> dict[str, Any]:
    """What Pod Security `restricted` asks of every container, plus the target's user: nothing
    added, everything dropped, no privilege escalation, the runtime's seccomp profile."""
    # A read-only root: the container is shared by every later session of that image and target,
    # so nobody may change its tools (absolute symlinks in the target's files resolve into it).
    context: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                               "seccompProfile": {"type": "RuntimeDefault"}, "readOnlyRootFilesystem": True}
    spec = pod.get("spec") or {}
    container = next((c for c in spec.get("containers") or [] if c.get("name") == target), {})
    own = container.get("securityContext") or {}
    for key in COPIED:
        if key in own:
            context[key] = own[key]
    pod_context = spec.get("securityContext") or {}
    non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
    if non_root and "runAsUser" not in context and "runAsUser" not in pod_context:
        # The image's user is unknown here (most debug images run as root): name one that is not.
        context["runAsUser"] = 65534
    return context


def container_spec(pod: Mapping[str, Any], target: str, image: str) -> dict[str, Any]:
    return {"name": container_name(image, target), "image": image, "targetContainerName": target,
            "command": list(IDLE), "stdin": False, "tty": False, "terminationMessagePolicy": "File",
            "securityContext": security_context(pod, target)}


def _state(pod: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    for status in (pod.get("status") or {}).get("ephemeralContainerStatuses") or []:
        if status.get("name") == name:
            return status.get("state") or {}
    return None


def _one_line(text: str, limit: int) -> str:
    """Cluster text (API and kubelet messages, which quote webhooks and registries) bound for a
    user's terminal: one line, no control characters (no escape sequences), bounded."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:limit]


def _api_message(exc: ApiException) -> str:
    """The API server's own reason (its Status message), on one line."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return _one_line(str(message or exc.reason or f"HTTP {exc.status}"), 300)


# What a reused container must have as podssh would have made it: its name is predictable, so
# anyone who may add ephemeral containers could plant one of that name (another image, target or
# securityContext) for podssh's sessions to run in.
REUSE_FIELDS = ("image", "targetContainerName", "command", "securityContext")


class DebugContainers:
    """Adds or finds the debug container of a (pod, target, image)."""

    def __init__(self, kube: KubeClient, timeout: float = 60.0, request_timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 impersonate: Impersonation | None = None) -> None:
        """`impersonate`: in impersonation mode the grant's user adds the container (their RBAC
        decides and the cluster's audit log names them), as they run the exec; pods are read
        as the gateway, as the resolver does."""
        self._kube = kube
        self._impersonate = impersonate
        self._timeout = timeout
        self._request_timeout = request_timeout
        self._clock, self._sleep = clock, sleep

    def _pod(self, namespace: str, pod: str) -> dict[str, Any]:
        try:
            body = self._kube.core.read_namespaced_pod(pod, namespace, _request_timeout=self._request_timeout)
        except ApiException as exc:
            raise DebugError(f"cannot read pod {namespace}/{pod}: {_api_message(exc)}", http_reason(exc.status)) \
                from None
        except TRANSPORT_ERRORS as exc:
            raise DebugError(str(unreachable(exc)), "Unreachable") from None
        return self._kube.api_client.sanitize_for_serialization(body)

    def ensure(self, namespace: str, pod: str, target: str, image: str,
               progress: Callable[[str], None]) -> DebugContainer:
        """A running debug container for the target: the existing one, or a new one (then
        `progress` gets one line first). Raises DebugError with one line for the user."""
        name = container_name(image, target)
        body = self._pod(namespace, pod)
        wanted = container_spec(body, target, image)
        found = next((c for c in (body.get("spec") or {}).get("ephemeralContainers") or [] if c.get("name") == name),
                     None)
        existing = found is not None
        if found is not None and any(found.get(k) != wanted[k] for k in REUSE_FIELDS):
            raise DebugError(f"the pod {namespace}/{pod} has a container named {name} that podssh did not make "
                             "(another image, target or securityContext): not using it; restart the pod", "Conflict")
        if existing and "running" in (_state(body, name) or {}):
            return DebugContainer(name, image, created=False)
        if not existing:
            progress(f"starting a debug container ({image}) in {pod}; the target's files are at {ROOT}")
            patch = {"spec": {"ephemeralContainers": [wanted]}}
            try:
                self._patch(namespace, pod, patch)
            except ApiException as exc:
                raise DebugError(f"cannot add a debug container to {namespace}/{pod}: {_api_message(exc)}",
                                 http_reason(exc.status)) from None
            except TRANSPORT_ERRORS as exc:
                raise DebugError(str(unreachable(exc)), "Unreachable") from None
        self._wait_running(namespace, pod, name)
        return DebugContainer(name, image, created=not existing)

    def _patch(self, namespace: str, pod: str, patch: dict[str, Any]) -> None:
        content_type = "application/strategic-merge-patch+json"
        if self._impersonate is None:
            self._kube.core.patch_namespaced_pod_ephemeralcontainers(
                pod, namespace, patch, _content_type=content_type, _request_timeout=self._request_timeout)
            return
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}/ephemeralcontainers"
        self._kube.request_as(self._impersonate, "PATCH", path, patch, content_type, self._request_timeout)

    def _wait_running(self, namespace: str, pod: str, name: str) -> None:
        deadline = self._clock() + self._timeout
        while True:
            state = _state(self._pod(namespace, pod), name) or {}
            if "running" in state:
                return
            if "terminated" in state:
                ended = _one_line(str((state["terminated"] or {}).get("reason") or "exited"), 60)
                raise DebugError(f"the debug container {name} in {pod} has ended ({ended}) "
                                 "and cannot be restarted: pick another image, or restart the pod", "Failed")
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in FAILED_WAITING:
                detail = _one_line(str(waiting.get("message") or ""), 200)
                raise DebugError(f"the debug container {name} in {pod} cannot start: {waiting['reason']}"
                                 + (f" ({detail})" if detail else ""), "Failed")
            if self._clock() >= deadline:
                raise DebugError(f"the debug container {name} in {pod} is not running after {self._timeout:g}s",
                                 "Timeout")
            self._sleep(POLL)
