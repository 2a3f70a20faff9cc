"""Debug containers against the fake API: what the gateway adds to a pod, that it waits for the
kubelet, reuses a running one, and says in one line why it could not have one."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sshserver.kube.ephemeral import IDLE, PREFIX, ROOT, DebugContainers, DebugError, container_name
from tests.support.fakekube import PODS, FakeKube, api_error

IMAGE = "podssh.local/busybox:1.35"


def pod_body(name: str = "app-0", pod_context: dict[str, Any] | None = None,
             container_context: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "podssh.local/distroless:1"}
    if container_context is not None:
        container["securityContext"] = container_context
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "uid": "u-1"},
            "spec": {"containers": [container], **({"securityContext": pod_context} if pod_context else {})},
            "status": {"phase": "Running"}}


class Kubelet:
    """Starts each ephemeral container the gateway adds, as the kubelet would, on its own thread."""

    def __init__(self, kube: FakeKube, state: dict[str, Any] | None = None) -> None:
        self.kube, self.state = kube, state or {"running": {"startedAt": "2024-01-01T00:00:00Z"}}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        patch = self.kube.wait_until(
            lambda: next((a for a in self.kube.actions if a.subresource == "ephemeralcontainers"), None), timeout=5)
        name = patch.body["spec"]["ephemeralContainers"][0]["name"]
        self.kube.set_container_state("shop", patch.name, name, self.state)


def debug(kube: FakeKube, timeout: float = 5.0) -> DebugContainers:
    return DebugContainers(kube, timeout=timeout, request_timeout=1.0)  # type: ignore[arg-type]


def test_adds_a_restricted_ephemeral_container_targeting_the_container_and_waits_until_it_runs() -> None:
    kube = FakeKube()
    kube.add(pod_body(pod_context={"runAsNonRoot": True}, container_context={"runAsUser": 65532}), PODS)
    Kubelet(kube)
    lines: list[str] = []
    got = debug(kube).ensure("shop", "app-0", "app", IMAGE, progress=lines.append)
    assert got.created and got.image == IMAGE and got.name == container_name(IMAGE, "app")
    assert got.name.startswith(PREFIX) and len(got.name) <= 63
    [patch] = kube.actions_for("patch", PODS)
    assert patch.subresource == "ephemeralcontainers"
    assert patch.options["_content_type"] == "application/strategic-merge-patch+json"
    [spec] = patch.body["spec"]["ephemeralContainers"]
    assert spec["targetContainerName"] == "app" and spec["image"] == IMAGE and spec["command"] == list(IDLE)
    assert spec["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}, "readOnlyRootFilesystem": True, "runAsUser": 65532}
    assert lines == [f"starting a debug container ({IMAGE}) in app-0; the target's files are at {ROOT}"]


def test_a_non_root_pod_without_a_user_gets_a_non_root_debug_container() -> None:
    kube = FakeKube()
    kube.add(pod_body(pod_context={"runAsNonRoot": True}), PODS)
    Kubelet(kube)
    debug(kube).ensure("shop", "app-0", "app", IMAGE, progress=lambda _: None)
    [patch] = kube.actions_for("patch", PODS)
    assert patch.body["spec"]["ephemeralContainers"][0]["securityContext"]["runAsUser"] == 65534


def test_a_running_debug_container_is_reused_without_a_patch_or_a_notice() -> None:
    kube = FakeKube()
    kube.add(pod_body(), PODS)
    Kubelet(kube)
    containers = debug(kube)
    first = containers.ensure("shop", "app-0", "app", IMAGE, progress=lambda _: None)
    lines: list[str] = []
    second = containers.ensure("shop", "app-0", "app", IMAGE, progress=lines.append)
    assert second.name == first.name and not second.created and lines == []
    assert len(kube.actions_for("patch", PODS)) == 1
    assert len(kube.get("shop", "app-0", PODS)["spec"]["ephemeralContainers"]) == 1


def test_another_image_or_target_is_another_container() -> None:
    assert container_name(IMAGE, "app") != container_name("podssh.local/debian:bookworm", "app")
    assert container_name(IMAGE, "app") != container_name(IMAGE, "sidecar")


def test_the_api_refusing_the_patch_is_one_line_with_its_reason() -> None:
    kube = FakeKube()
    kube.add(pod_body(), PODS)
    refusal = api_error(403, "Forbidden")
    refusal.body = ('{"kind":"Status","message":"pods \\"app-0\\" is forbidden: User \\"system:serviceaccount:'
                    'podssh-system:podssh\\" cannot patch resource \\"pods/ephemeralcontainers\\"","code":403}')
    kube.fail_next(1, refusal, verb="patch", resource=PODS)
    with pytest.raises(DebugError) as caught:
        debug(kube).ensure("shop", "app-0", "app", IMAGE, progress=lambda _: None)
    assert caught.value.reason == "Forbidden"
    assert "cannot patch resource" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("state", "words"), [
    ({"waiting": {"reason": "ErrImagePull", "message": "pull access denied"}}, "ErrImagePull (pull access denied)"),
    ({"terminated": {"reason": "Error", "exitCode": 1}}, "has ended (Error)"),
])
def test_a_debug_container_that_cannot_run_is_reported(state: dict[str, Any], words: str) -> None:
    kube = FakeKube()
    kube.add(pod_body(), PODS)
    Kubelet(kube, state)
    with pytest.raises(DebugError, match=r"cannot start|has ended") as caught:
        debug(kube).ensure("shop", "app-0", "app", IMAGE, progress=lambda _: None)
    assert words in str(caught.value) and caught.value.reason == "Failed"


def test_waiting_is_bounded() -> None:
    kube = FakeKube()
    kube.add(pod_body(), PODS)
    with pytest.raises(DebugError, match="not running after 1s") as caught:
        debug(kube, timeout=1.0).ensure("shop", "app-0", "app", IMAGE, progress=lambda _: None)
    assert caught.value.reason == "Timeout"


@pytest.mark.parametrize("planted", [
    {"image": "evil.example/keylogger:1"},
    {"targetContainerName": "vault-agent"},
    {"securityContext": {"privileged": True}},
    {"command": ["/bin/sh"]},
])
def test_a_container_planted_under_podssh_s_name_is_never_used(planted: dict[str, Any]) -> None:
    """Its name is predictable: someone who may add ephemeral containers could add one of that
    name, another image or target or privileges, for podssh's sessions to run in."""
    from sshserver.kube.ephemeral import container_spec

    kube = FakeKube()
    body = pod_body()
    good = container_spec(body, "app", IMAGE)
    body["spec"]["ephemeralContainers"] = [{**good, **planted}]
    kube.add(body, PODS)
    kube.set_container_state("shop", "app-0", good["name"], {"running": {"startedAt": "2024-01-01T00:00:00Z"}})
    with pytest.raises(DebugError) as refused:
        debug(kube).ensure("shop", "app-0", "app", IMAGE, progress=lambda _: None)
    assert "that podssh did not make" in str(refused.value) and refused.value.reason == "Conflict"
    assert not kube.actions_for("patch", PODS)


def test_cluster_text_reaches_the_user_without_control_characters() -> None:
    kube = FakeKube()
    kube.add(pod_body(), PODS)
    Kubelet(kube, {"waiting": {"reason": "ErrImagePull", "message": "pull failed\x1b]52;c;ZXZpbA==\x07\r\nhi"}})
    with pytest.raises(DebugError) as failed:
        debug(kube).ensure("shop", "app-0", "app", IMAGE, progress=lambda _: None)
    text = str(failed.value)
    assert "pull failed" in text and all(c.isprintable() for c in text)


def test_in_impersonation_mode_the_grant_s_user_adds_the_container() -> None:
    """With one Impersonate-Group line per group, as the API server reads them."""
    from kubernetes.client import Configuration

    from sshserver.kube.client import Impersonation, KubeClient
    from tests.support.fakeapiserver import FakeApiServer

    with FakeApiServer() as api:
        cfg = Configuration()
        cfg.host = api.url
        cfg.api_key = {"BearerToken": "Bearer gateway-token"}
        kube = KubeClient(cfg)
        path = "/api/v1/namespaces/shop/pods/app-0/ephemeralcontainers"
        api.put(path, {"kind": "Pod"}, method="PATCH")
        containers = DebugContainers(kube, request_timeout=2.0, impersonate=Impersonation("bob", ("dev", "ops")))
        containers._patch("shop", "app-0", {"spec": {"ephemeralContainers": [{"name": "x"}]}})
        [headers] = [h for (m, p, _), h in zip(api.requests, api.headers, strict=True) if (m, p) == ("PATCH", path)]
        assert ("Impersonate-User", "bob") in headers
        assert [v for k, v in headers if k == "Impersonate-Group"] == ["dev", "ops"]
        assert ("Authorization", "Bearer gateway-token") in headers
        assert ("Content-Type", "application/strategic-merge-patch+json") in headers
        assert api.bodies("PATCH", path) == [{"spec": {"ephemeralContainers": [{"name": "x"}]}}]
        # Refused for the user: one line with the API server's reason, as for the gateway.
        api.put("/api/v1/namespaces/shop/pods/app-0", pod_body())
        api.put(path, {"kind": "Status", "code": 403, "message": 'pods "app-0" is forbidden: User "bob" cannot '
                       'patch resource "pods/ephemeralcontainers"'}, status=403, method="PATCH")
        with pytest.raises(DebugError) as refused:
            containers.ensure("shop", "app-0", "app", IMAGE, progress=lambda _: None)
        assert 'User "bob" cannot patch resource "pods/ephemeralcontainers"' in str(refused.value)
        assert refused.value.reason == "Forbidden"
