"""Fixtures: the real local cluster, the test workloads, SSH keys and a running gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import BUSYBOX, DEBIAN, REPO, Cluster, cluster_up
from tests.support.gateway import Gateway, SSHKey, grant, make_key

NS = "podssh-e2e"
NS_B = "podssh-e2e-b"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # The teardown folder stops the cluster: it needs (and ends) it, so `-m 'not cluster'` skips it too.
        if any(f"/{d}/" in str(item.path) for d in ("e2e", "faults", "teardown")):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    return cluster_up()


def _pod(name: str, namespace: str, labels: dict[str, str], image: str = BUSYBOX,
         containers: tuple[str, ...] = ("main",), annotations: dict[str, str] | None = None,
         command: list[str] | None = None) -> str:
    cmd = f"""
    command: {json.dumps(command)}""" if command else ""
    conts = "".join(
        f"""
  - name: {c}
    image: {image}
    imagePullPolicy: Never{cmd}"""
        for c in containers
    )
    lab = ", ".join(f"{k}: {v}" for k, v in labels.items())
    ann = ", ".join(f"{k}: {v}" for k, v in (annotations or {}).items())
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{{lab}}}, annotations: {{{ann}}}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:{conts}
---"""


WORKLOADS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {NS_B}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web, tier: front}}}}
  template:
    metadata: {{labels: {{app: web, tier: front}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - {{name: web, image: {BUSYBOX}, imagePullPolicy: Never}}
---
{_pod("deb", NS, {"app": "web", "kind": "debian"}, image=DEBIAN)}
{_pod("multi", NS, {"app": "web", "kind": "multi"}, containers=("main", "side"),
      annotations={"kubectl.kubernetes.io/default-container": "side"})}
{_pod("other", NS, {"app": "other"})}
{_pod("httpd", NS, {"app": "web", "kind": "httpd"}, command=["httpd", "-f", "-p", "8080", "-h", "/var/www"])}
{_pod("shared", NS, {"app": "web", "kind": "shared"})}
{_pod("shared", NS_B, {"app": "web", "kind": "shared"})}
"""


@pytest.fixture(scope="session")
def workloads(cluster: Cluster) -> Cluster:
    cluster.apply(WORKLOADS)
    cluster.wait_ready(NS, "app=web", count=5)
    cluster.wait_ready(NS, "app=other")
    cluster.wait_ready(NS_B, "app=web")
    return cluster


@pytest.fixture(scope="session")
def crd(workloads: Cluster) -> Cluster:
    """The SSHAccess and SSHSession CRDs and the admission policies from manifests/."""
    workloads.kubectl("apply", "-f", str(REPO / "manifests" / "crd.yaml"),
                      "-f", str(REPO / "manifests" / "admission-policy.yaml"))
    workloads.kubectl("wait", "--for=condition=established", "crd/sshaccesses.podssh.dev",
                      "crd/sshsessions.podssh.dev", "--timeout=60s")
    return workloads


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SSHKey]:
    d = tmp_path_factory.mktemp("keys")
    return {n: make_key(d, n) for n in ("alice", "bob", "carol", "dave", "mallory")}


def default_grants(keys: dict[str, SSHKey]) -> list[dict]:
    web = {"app": "web"}
    return [
        grant("alice", NS, [keys["alice"]], web, allow={"shell": True, "exec": True}, env=["FOO"]),
        grant("bob", NS, [keys["bob"]], web, allow={"exec": True}),
        grant("carol-a", NS, [keys["carol"]], web),
        grant("carol-b", NS_B, [keys["carol"]], web),
        grant("dave", NS, [keys["dave"]], web, allow={"exec": True, "sftp": True, "portForward": [8080]}),
    ]


@pytest.fixture(scope="session")
def gateway(workloads: Cluster, keys: dict[str, SSHKey], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("gateway"), workloads.kubeconfig, default_grants(keys),
                 extra_args=["--banner", "podssh e2e gateway: authorized use only"]).start()
    yield gw
    gw.stop()


@pytest.fixture
def make_gateway(workloads: Cluster, keys: dict[str, SSHKey], tmp_path: Path) -> Iterator:
    """Starts extra gateways with their own settings; stops them after the test."""
    started: list[Gateway] = []

    def start(*extra_args: str, grants: list[dict] | str | None = "default", kubeconfig: str | None = None
              ) -> Gateway:
        """grants: a list for an access file, None to watch the cluster's SSHAccess objects."""
        chosen = default_grants(keys) if grants == "default" else grants
        gw = Gateway(tmp_path / f"gw{len(started)}", kubeconfig or workloads.kubeconfig, chosen,  # type: ignore[arg-type]
                     extra_args=extra_args).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
