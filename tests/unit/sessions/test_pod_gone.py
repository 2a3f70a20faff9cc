"""A pod the cache still holds as Running but the API server no longer has: the exec's 404 is
told as the usual unknown pod (a refusal), not as an API failure."""

from __future__ import annotations

from typing import Any

import paramiko
from kubernetes.client import (
    V1Container,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
)

from tests.support.inproc import client, grant_object, running_gateway


class StaleCache:
    """Knows one pod the API server (the in-process stand-in: 404 for everything) has deleted."""

    def __init__(self) -> None:
        self.pod_asked = 0

    def follow(self, _store: Any) -> None:
        pass

    def stop(self) -> None:
        pass

    def pod(self, namespace: str, name: str) -> V1Pod | None:
        self.pod_asked += 1
        if (namespace, name) != ("ns", "web-1"):
            return None
        return V1Pod(metadata=V1ObjectMeta(name=name, namespace=namespace, labels={"app": "web"}),
                     spec=V1PodSpec(containers=[V1Container(name="app")]),
                     status=V1PodStatus(phase="Running", container_statuses=[V1ContainerStatus(
                         name="app", image="i", image_id="i", ready=True, restart_count=0,
                         state=V1ContainerState(running=V1ContainerStateRunning()))]))

    def select(self, _namespace: str, _selector: Any) -> None:
        return None


def test_an_exec_on_a_pod_deleted_behind_the_cache_says_unknown_pod() -> None:
    key = paramiko.ECDSAKey.generate()
    cache = StaleCache()
    with running_gateway([grant_object("alice", [key])], pod_cache=cache) as gw:
        transport = client(gw.port, key, username="ns/web-1")
        try:
            chan = transport.open_session(timeout=10)
            chan.settimeout(10)
            chan.exec_command("true")
            status = chan.recv_exit_status()
            err = chan.makefile_stderr("rb").read().decode()
        finally:
            transport.close()
    assert cache.pod_asked == 1  # resolved from the cache: the exec was the first API call
    assert status == 255
    assert "unknown pod 'web-1' in ns, or not permitted for this key" in err
