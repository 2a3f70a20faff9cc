"""Distroless pods through ephemeral debug containers (issue 16), on the real cluster: a shell
and commands run in a debug container of an allowed image, the target's files at /proc/1/root,
SFTP rooted there, one container reused by later sessions; refusals without spec.debug, for an
image not in the list, and at `kubectl apply` for a grantor without the ephemeralcontainers right.

Needs the image podssh.local/distroless:1 (hack/lib/build-images.sh: one static binary, no
shell, no libc), imported by `hack/cluster up`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NS
from tests.support.cluster import BUSYBOX, DEBIAN, DISTROLESS, Cluster
from tests.support.gateway import Gateway, SSHKey, grant, make_key
from tests.support.grantors import dry_run, make_grantor
from tests.support.waiting import wait_for

APP_CONF = b"greeting=hello from the distroless target\n"
NOTICE = "podssh: starting a debug container"
DBG_NS = "podssh-e2e-dbg"
RESTRICTED_NS = "podssh-e2e-restricted"
GRANTOR = "dbg-grantor"
GRANTOR_USER = f"system:serviceaccount:{DBG_NS}:{GRANTOR}"


def distroless_pod(name: str, namespace: str = NS) -> str:
    """Like a distroless `nonroot` deployment: Pod Security `restricted`-clean, uid 65532."""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: distroless, pod: {name}}}}}
spec:
  terminationGracePeriodSeconds: 2
  securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
  - name: app
    image: {DISTROLESS}
    imagePullPolicy: Never
    securityContext:
      runAsUser: 65532
      runAsGroup: 65532
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL]}}
"""


def ephemeral(cluster: Cluster, pod: str) -> list[dict[str, Any]]:
    return cluster.get("pod", pod, "-n", NS)["spec"].get("ephemeralContainers") or []


@pytest.fixture(scope="module")
def pods(workloads: Cluster) -> Iterator[Cluster]:
    """Fresh pods per run: ephemeral containers cannot be removed, only the pod can."""
    for name in ("distroless", "distroless-reuse"):
        workloads.kubectl("delete", "pod", name, "-n", NS, "--ignore-not-found", "--wait=true")
        workloads.apply(distroless_pod(name))
    workloads.wait_ready(NS, "app=distroless", count=2)
    yield workloads
    workloads.kubectl("delete", "pod", "distroless", "distroless-reuse", "-n", NS, "--ignore-not-found",
                      "--wait=false")


@pytest.fixture(scope="module")
def dbg_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SSHKey]:
    d = tmp_path_factory.mktemp("dbg-keys")
    return {n: make_key(d, n) for n in ("debugger", "plain")}


@pytest.fixture
def gw(pods: Cluster, make_gateway: Any, dbg_keys: dict[str, SSHKey]) -> Gateway:
    everything = {"shell": True, "exec": True, "sftp": True}
    grants = [
        grant("debugger", NS, [dbg_keys["debugger"]], {"app": "distroless"}, allow=everything,
              debug={"images": [BUSYBOX, DEBIAN]}),
        grant("plain", NS, [dbg_keys["plain"]], {"app": "distroless"}, allow=everything),
    ]
    return make_gateway(grants=grants)


def sftp(gateway: Gateway, key: SSHKey, target: str, batch: str, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    script = tmp_path / "batch"
    script.write_text(batch)
    return subprocess.run(["sftp", *gateway.client_options(key), "-b", str(script), f"{target}@127.0.0.1"],
                          capture_output=True, timeout=300, stdin=subprocess.DEVNULL)


def test_the_target_really_has_no_shell(pods: Cluster) -> None:
    proc = pods.kubectl("exec", "-n", NS, "distroless", "--", "/bin/sh", "-c", "true", check=False)
    assert proc.returncode != 0


def test_a_shell_runs_in_a_debug_container_and_sees_the_targets_files(gw: Gateway,
                                                                      dbg_keys: dict[str, SSHKey]) -> None:
    proc = gw.ssh(f"{NS}/distroless", None, dbg_keys["debugger"], tty=True,
                  input=b"ls /proc/1/root/etc; id -u; exit\n", timeout=120)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, (out, proc.stderr)
    assert "app.conf" in out and "passwd" in out
    assert "65532" in out  # the target's user, copied into the debug container


def test_a_command_reads_a_file_of_the_target(gw: Gateway, dbg_keys: dict[str, SSHKey]) -> None:
    proc = gw.ssh(f"{NS}/distroless", "cat /proc/1/root/etc/app.conf", dbg_keys["debugger"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == APP_CONF


def test_sftp_put_and_get_round_trip_in_the_targets_file_system(gw: Gateway, dbg_keys: dict[str, SSHKey],
                                                                pods: Cluster, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "up.bin").write_bytes(data)
    proc = sftp(gw, dbg_keys["debugger"], f"{NS}/distroless", f"""
cd /data
put {tmp_path / "up.bin"} up.bin
ls -l /etc
get up.bin {tmp_path / "down.bin"}
get /etc/app.conf {tmp_path / "app.conf"}
""", tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "app.conf" in proc.stdout.decode()  # /etc is the target's, not the debug image's
    assert hashlib.sha256((tmp_path / "down.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert (tmp_path / "app.conf").read_bytes() == APP_CONF
    # The file landed in the target container's own file system.
    seen = gw.ssh(f"{NS}/distroless", "wc -c < /proc/1/root/data/up.bin", dbg_keys["debugger"], timeout=120)
    assert seen.stdout.strip() == str(len(data)).encode()


def test_a_second_session_reuses_the_debug_container(gw: Gateway, dbg_keys: dict[str, SSHKey],
                                                     pods: Cluster) -> None:
    target = f"{NS}/distroless-reuse"
    first = gw.ssh(target, "echo one", dbg_keys["debugger"], timeout=120)
    assert first.returncode == 0 and first.stdout == b"one\n", first.stderr
    assert NOTICE in first.stderr.decode() and "/proc/1/root" in first.stderr.decode()
    [container] = ephemeral(pods, "distroless-reuse")
    assert container["name"].startswith("podssh-debug-") and container["targetContainerName"] == "app"
    assert container["image"] == BUSYBOX
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True  # shared by later sessions: nobody changes its tools
    second = gw.ssh(target, "echo two", dbg_keys["debugger"], timeout=60)
    assert second.returncode == 0 and second.stdout == b"two\n", second.stderr
    assert NOTICE not in second.stderr.decode()
    assert [c["name"] for c in ephemeral(pods, "distroless-reuse")] == [container["name"]]
    # The audit trail says where the sessions ran.
    starts = [e for e in gw.events("session_start") if e.get("pod") == "distroless-reuse"]
    assert len(starts) == 2
    assert all(e["debug_container"] == container["name"] and e["debug_image"] == BUSYBOX
               and e["target_container"] == "app" for e in starts), starts


def test_another_image_of_the_list_on_request(gw: Gateway, dbg_keys: dict[str, SSHKey], pods: Cluster) -> None:
    proc = gw.ssh(f"{NS}/distroless", "cat /etc/debian_version && cat /proc/1/root/etc/app.conf",
                  dbg_keys["debugger"], "-o", f"SetEnv=PODSSH_DEBUG_IMAGE={DEBIAN}", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(APP_CONF)
    assert DEBIAN in {c["image"] for c in ephemeral(pods, "distroless")}


def test_an_image_not_in_the_list_is_refused_by_name(gw: Gateway, dbg_keys: dict[str, SSHKey]) -> None:
    proc = gw.ssh(f"{NS}/distroless", "true", dbg_keys["debugger"], "-o",
                  "SetEnv=PODSSH_DEBUG_IMAGE=registry.example.com/tools:1")
    assert proc.returncode == 255
    err = proc.stderr.decode()
    assert "'registry.example.com/tools:1' is not in spec.debug.images" in err and err.count("\n") == 1


@pytest.mark.parametrize("how", ["shell", "exec", "sftp"])
def test_without_spec_debug_a_clear_refusal(gw: Gateway, dbg_keys: dict[str, SSHKey], tmp_path: Path,
                                            how: str) -> None:
    if how == "sftp":
        proc = sftp(gw, dbg_keys["plain"], f"{NS}/distroless", "ls /\n", tmp_path)
    else:
        proc = gw.ssh(f"{NS}/distroless", None if how == "shell" else "true", dbg_keys["plain"],
                      tty=how == "shell", timeout=60)
        assert proc.returncode == 255, proc.stderr
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert "no shell in this container" in err and "spec.debug" in err, err
    assert NOTICE not in err


@pytest.fixture(scope="module")
def restricted(workloads: Cluster) -> Iterator[Cluster]:
    """A namespace enforcing Pod Security `restricted` (at its latest version), with a distroless pod."""
    workloads.apply(f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {RESTRICTED_NS}
  labels: {{pod-security.kubernetes.io/enforce: restricted, pod-security.kubernetes.io/enforce-version: latest}}
""")
    workloads.kubectl("delete", "pod", "distroless", "-n", RESTRICTED_NS, "--ignore-not-found", "--wait=true")
    workloads.apply(distroless_pod("distroless", RESTRICTED_NS))
    workloads.wait_ready(RESTRICTED_NS, "app=distroless", count=1)
    yield workloads
    workloads.kubectl("delete", "namespace", RESTRICTED_NS, "--wait=false", check=False)


def test_a_restricted_namespace_admits_the_debug_container(restricted: Cluster, make_gateway: Any,
                                                           dbg_keys: dict[str, SSHKey], tmp_path: Path) -> None:
    # The admission controller itself refuses a container that breaks the profile in this namespace
    # (so the check below is not vacuous): a root, capability-keeping debug container is turned away.
    bad = {"spec": {"ephemeralContainers": [{"name": "not-restricted", "image": BUSYBOX, "imagePullPolicy": "Never",
                                             "targetContainerName": "app", "command": ["sleep", "1"]}]}}
    refused = restricted.kubectl("patch", "pod", "distroless", "-n", RESTRICTED_NS, "--subresource",
                                 "ephemeralcontainers", "--type", "strategic", "-p", json.dumps(bad), check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr
    gw = make_gateway(grants=[grant("debugger", RESTRICTED_NS, [dbg_keys["debugger"]], {"app": "distroless"},
                                    allow={"shell": True, "exec": True, "sftp": True},
                                    debug={"images": [BUSYBOX]})])
    proc = gw.ssh(f"{RESTRICTED_NS}/distroless", "cat /proc/1/root/etc/app.conf; id -u", dbg_keys["debugger"],
                  timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == APP_CONF + b"65532\n"
    [container] = restricted.get("pod", "distroless", "-n", RESTRICTED_NS)["spec"]["ephemeralContainers"]
    assert container["name"].startswith("podssh-debug-")
    # SFTP through it as well, rooted at the target's files.
    listing = sftp(gw, dbg_keys["debugger"], f"{RESTRICTED_NS}/distroless", "ls /etc\n", tmp_path)
    assert listing.returncode == 0 and "app.conf" in listing.stdout.decode(), listing.stderr


@pytest.fixture(scope="module")
def grantor(crd: Cluster) -> Cluster:
    """A ServiceAccount that may grant SSH access (exec) in NS, but not update ephemeral containers."""
    make_grantor(crd, DBG_NS, GRANTOR, (NS,), "dbg")
    return crd


def create(cluster: Cluster, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return dry_run(cluster, obj, GRANTOR_USER)


def test_a_grantor_without_the_ephemeralcontainers_right_cannot_grant_debug(grantor: Cluster, tmp_path: Path) -> None:
    key = make_key(tmp_path, "g")
    plain = grant("dbg-plain", NS, [key], {"app": "distroless"})
    assert create(grantor, plain).returncode == 0  # exec alone is enough without spec.debug
    debug = grant("dbg-debug", NS, [key], {"app": "distroless"}, debug={"images": [BUSYBOX]})
    # A policy just created (a fresh cluster's first minutes) takes a moment to be in force.
    refused = wait_for(lambda: (p := create(grantor, debug)).returncode != 0 and p, timeout=30,
                       what="the admission policy refusing the debug grant")
    assert f"only a user allowed to update pods/ephemeralcontainers in namespace {NS}" in refused.stderr
    grantor.apply(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: dbg-ephemeral, namespace: {NS}}}
rules:
- {{apiGroups: [""], resources: [pods/ephemeralcontainers], verbs: [update]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: dbg-ephemeral, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: dbg-ephemeral}}
subjects: [{{kind: ServiceAccount, name: {GRANTOR}, namespace: {DBG_NS}}}]
""")
    try:
        wait_for(lambda: create(grantor, debug).returncode == 0, timeout=30, what="the new Role in force")
    finally:
        grantor.kubectl("delete", "rolebinding", "dbg-ephemeral", "-n", NS, "--ignore-not-found")
        grantor.kubectl("delete", "role", "dbg-ephemeral", "-n", NS, "--ignore-not-found")


@pytest.mark.parametrize(("images", "message"), [
    ([], "should have at least 1 items"),
    (["Busybox:1"], "should match"),
    ([f"img{i}" for i in range(17)], "must have at most 16 items"),
])
def test_the_crd_refuses_bad_debug_images(crd: Cluster, tmp_path: Path, images: list[str], message: str) -> None:
    obj = grant("dbg-bad", NS, [make_key(tmp_path, "b")], {"app": "distroless"}, debug={"images": images})
    proc = crd.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
