"""The resolver says nothing specific about a pod the key cannot reach (issue 11): such a pod,
running or not, with whatever containers, gets the answer a missing pod gets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client import (
    V1Container,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStatus,
    V1LabelSelector,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
)
from kubernetes.client.exceptions import ApiException

from sshserver.grants.access import Grant
from sshserver.grants.labelselector import LabelSelector
from sshserver.grants.target import TargetError, parse_target
from sshserver.kube.resolver import PodResolver


def pod(name: str, labels: dict[str, str], phase: str = "Running",
        containers: tuple[str, ...] = ("app", "secret-sidecar"), ns: str = "shop") -> V1Pod:
    return V1Pod(
        metadata=V1ObjectMeta(name=name, namespace=ns, labels=labels),
        spec=V1PodSpec(containers=[V1Container(name=c) for c in containers]),
        status=V1PodStatus(phase=phase, container_statuses=[
            V1ContainerStatus(name=c, image="i", image_id="i", ready=True, restart_count=0,
                              state=V1ContainerState(running=V1ContainerStateRunning())) for c in containers]),
    )


PODS = {
    ("shop", "web-1"): pod("web-1", {"app": "web"}),
    ("shop", "db-1"): pod("db-1", {"app": "db"}),
    ("shop", "db-2"): pod("db-2", {"app": "db"}, phase="Pending"),
    ("other", "web-1"): pod("web-1", {"app": "web"}, ns="other"),
}


class FakeKube:
    def __init__(self) -> None:
        self.core = SimpleNamespace(read_namespaced_pod=self._read, list_namespaced_pod=self._list)
        none = self._deployment
        self.apps = SimpleNamespace(read_namespaced_deployment=self._deployment, read_namespaced_stateful_set=none,
                                    read_namespaced_daemon_set=none, read_namespaced_replica_set=none)
        self.batch = SimpleNamespace(read_namespaced_job=none)
        self.api_client = SimpleNamespace(sanitize_for_serialization=lambda sel: {"matchLabels": sel.match_labels})

    def _read(self, name: str, namespace: str, **_: Any) -> V1Pod:
        try:
            return PODS[(namespace, name)]
        except KeyError:
            raise ApiException(status=404, reason="Not Found") from None

    def _list(self, namespace: str, label_selector: str, **_: Any) -> Any:
        key, value = label_selector.split("=")
        return SimpleNamespace(items=[p for (ns, _), p in PODS.items()
                                      if ns == namespace and p.metadata.labels.get(key) == value])

    def _deployment(self, name: str, namespace: str, **_: Any) -> Any:
        if name not in ("web", "db"):
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(spec=SimpleNamespace(selector=V1LabelSelector(match_labels={"app": name})))


def grant(containers: frozenset[str] | None = None, ns: str = "shop") -> Grant:
    return Grant(namespace=ns, name="g", uid="u", user="u", keys=(),
                 selector=LabelSelector.from_dict({"matchLabels": {"app": "web"}}), containers=containers)


def refusal(target: str, grants: list[Grant]) -> str:
    with pytest.raises(TargetError) as err:
        PodResolver(FakeKube()).resolve(parse_target(target), grants)  # type: ignore[arg-type]
    return str(err.value)


def test_a_pod_outside_the_grant_answers_like_a_missing_one() -> None:
    missing = refusal("shop/nosuch", [grant()])
    assert missing == "unknown pod 'nosuch' in shop, or not permitted for this key"
    assert refusal("shop/db-1", [grant()]) == missing.replace("nosuch", "db-1")
    pending = refusal("shop/db-2", [grant()])  # not running, but neither phase nor containers are told
    assert pending == missing.replace("nosuch", "db-2") and "Pending" not in pending
    for text in (refusal("shop/db-1:secret-sidecar", [grant()]), refusal("db-1", [grant()])):
        assert "secret-sidecar" not in text and "containers" not in text
        assert "not permitted" in text and "Running" not in text


def test_a_workload_outside_the_grant_answers_like_a_missing_one() -> None:
    assert refusal("shop/deploy/db", [grant()]) == refusal("shop/deploy/nosuch", [grant()]).replace("nosuch", "db")
    assert PodResolver(FakeKube()).resolve(parse_target("shop/deploy/web"), [grant()]).pod == "web-1"  # type: ignore[arg-type]


def test_bare_names_find_only_pods_the_key_may_reach() -> None:
    both = [grant(), grant(ns="other")]
    with pytest.raises(TargetError, match="ambiguous"):
        PodResolver(FakeKube()).resolve(parse_target("web-1"), both)  # type: ignore[arg-type]
    assert "ambiguous" not in refusal("db-1", both)


def test_container_names_are_told_only_as_far_as_the_grant_allows() -> None:
    text = refusal("shop/web-1:nosuch", [grant(frozenset({"app"}))])
    assert "containers: app)" in text and "secret-sidecar" not in text
    assert refusal("shop/web-1:secret-sidecar", [grant(frozenset({"app"}))]) == text.replace("nosuch", "secret-sidecar")
    resolved = PodResolver(FakeKube()).resolve(parse_target("shop/web-1:app"), [grant(frozenset({"app"}))])  # type: ignore[arg-type]
    assert (resolved.pod, resolved.container) == ("web-1", "app")


def test_running_pods_are_those_the_grant_selects_in_its_namespace_and_running() -> None:
    """What `ssh ls@gateway` lists (no cache here: one list call): db-2 is Pending, web-1 of
    namespace other is another grant's."""
    db = Grant(namespace="shop", name="g", uid="u", user="u", keys=(),
               selector=LabelSelector.from_dict({"matchLabels": {"app": "db"}}))
    resolver = PodResolver(FakeKube())  # type: ignore[arg-type]
    assert [p.metadata.name for p in resolver.running_pods(db)] == ["db-1"]
    assert [(p.metadata.namespace, p.metadata.name) for p in resolver.running_pods(grant())] == [("shop", "web-1")]
