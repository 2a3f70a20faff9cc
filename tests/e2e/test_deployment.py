"""podssh installed the way users install it: image from the Dockerfile, `kubectl apply -k`,
`make demo`; the gateway then runs with nothing but the manifests' ServiceAccount."""

from __future__ import annotations

import os
import shlex
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.cluster import REPO, Cluster, wait_http
from tests.support.waiting import wait_for

GW_NS = "podssh-system"


@pytest.fixture(scope="module")
def demo(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("home")
    env = dict(cluster.env, PODSSH_DEMO_KEY=str(home / "id_demo"))
    proc = subprocess.run([str(REPO / "hack" / "demo"), "up"], env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    command = next(line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("ssh "))
    *options, destination = shlex.split(command)
    argv = [*options, "-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "BatchMode=yes", destination]
    return {"command": argv, "env": env}


def run(cmd: list[str], remote: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, remote], capture_output=True, text=True, timeout=60)


def test_make_demo_ends_with_a_working_ssh(demo: dict) -> None:
    proc = run(demo["command"], "echo demo-ok; cat /etc/debian_version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("demo-ok\n")


def test_both_replicas_ready_and_hardened(cluster: Cluster, demo: dict) -> None:
    ready = cluster.wait_ready(GW_NS, "app.kubernetes.io/component=gateway", count=2)
    assert len(ready) == 2
    pod = cluster.get("pod", "-n", GW_NS, ready[0])
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"]
    assert pod["spec"]["serviceAccountName"] == "podssh"


def _host_key(cluster: Cluster) -> str:
    out = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", "30022", cluster.node_ip],
                         capture_output=True, text=True, timeout=30).stdout
    return out.split()[-1]


def test_losing_a_replica_keeps_the_host_key_and_logins(cluster: Cluster, demo: dict) -> None:
    key = _host_key(cluster)
    victim = cluster.wait_ready(GW_NS, "app.kubernetes.io/component=gateway", count=2)[0]
    cluster.kubectl("-n", GW_NS, "delete", "pod", victim, "--grace-period=1", "--wait=false")
    for i in range(10):
        proc = run(demo["command"], f"echo login-{i}")
        assert proc.stdout == f"login-{i}\n", proc.stderr
        assert _host_key(cluster) == key
    cluster.wait_ready(GW_NS, "app.kubernetes.io/component=gateway", count=2)
    assert _host_key(cluster) == key


def _gateway_pid(cluster: Cluster, pod: str) -> int:
    """The host PID of the gateway process in `pod` (the local cluster's node is this machine):
    the process whose cgroup names the pod's UID and whose command line is `podssh serve`."""
    uid = cluster.get("pod", "-n", GW_NS, pod)["metadata"]["uid"]
    marks = (uid, uid.replace("-", "_"))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(m in cgroup for m in marks) and b"serve" in cmdline and any(b"podssh" in a for a in cmdline):
            return int(entry.name)
    raise AssertionError(f"no gateway process found for pod {pod}")


def test_a_replica_killed_outright_costs_no_login_and_no_host_key_change(cluster: Cluster, demo: dict) -> None:
    """SIGKILL (no drain, no readiness change first): logins go to the other replica within
    seconds and then all succeed, and the clients see the same host key all along. Connections
    that were in the dead process's accept queue at the kill are reset (nothing can answer
    them); later ones the Service still sends there are refused, which ssh retries
    (ConnectionAttempts 3 in `podssh ssh-config` and the demo's command)."""
    import time

    key = _host_key(cluster)
    victim = cluster.wait_ready(GW_NS, "app.kubernetes.io/component=gateway", count=2)[0]
    os.kill(_gateway_pid(cluster, victim), signal.SIGKILL)
    killed = time.monotonic()
    while (first := run(demo["command"], "echo first")).stdout != "first\n":
        assert time.monotonic() - killed < 5, first.stderr
    for i in range(10):
        proc = run(demo["command"], f"echo after-kill-{i}")
        assert proc.stdout == f"after-kill-{i}\n", proc.stderr
    assert _host_key(cluster) == key
    cluster.wait_ready(GW_NS, "app.kubernetes.io/component=gateway", count=2)
    assert _host_key(cluster) == key


def _as_gateway(cluster: Cluster, path: str) -> int:
    token = cluster.kubectl("-n", GW_NS, "create", "token", "podssh").stdout.strip()
    ca = str(Path(cluster.kubeconfig).parent / "pki" / "ca.crt")
    ctx = ssl.create_default_context(cafile=ca)
    req = urllib.request.Request(f"https://127.0.0.1:6443{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_least_privilege_is_enforced_by_the_cluster(cluster: Cluster, demo: dict) -> None:
    # Allowed: what the gateway needs.
    assert _as_gateway(cluster, "/api/v1/namespaces/demo/pods") == 200
    assert _as_gateway(cluster, "/apis/podssh.dev/v1alpha1/sshaccesses") == 200
    assert _as_gateway(cluster, f"/api/v1/namespaces/{GW_NS}/secrets/podssh-hostkeys") == 200
    # Denied: anything else, e.g. Secrets elsewhere, other Secrets of its own namespace, nodes.
    assert _as_gateway(cluster, "/api/v1/namespaces/default/secrets") == 403
    assert _as_gateway(cluster, "/api/v1/namespaces/demo/secrets") == 403
    assert _as_gateway(cluster, f"/api/v1/namespaces/{GW_NS}/secrets") == 403
    assert _as_gateway(cluster, "/api/v1/nodes") == 403
    assert _as_gateway(cluster, "/api/v1/namespaces/kube-system/configmaps") == 403


def test_gateway_metrics_and_readiness_in_cluster(cluster: Cluster, demo: dict) -> None:
    pod = cluster.wait_ready(GW_NS, "app.kubernetes.io/component=gateway", count=2)[0]
    ip = cluster.get("pod", "-n", GW_NS, pod)["status"]["podIP"]
    assert wait_http(f"http://{ip}:9090/readyz") == b"ready\n"
    text = wait_http(f"http://{ip}:9090/metrics").decode()
    assert "podssh_build_info" in text and "podssh_access_grants" in text


def test_the_gateway_may_write_sessions_and_leases_and_users_see_them(cluster: Cluster, demo: dict) -> None:
    assert _as_gateway(cluster, "/apis/podssh.dev/v1alpha1/sshsessions") == 200
    assert _as_gateway(cluster, f"/apis/coordination.k8s.io/v1/namespaces/{GW_NS}/leases") == 200
    assert _as_gateway(cluster, "/apis/coordination.k8s.io/v1/namespaces/default/leases") == 403
    leases = cluster.get("leases", "-n", GW_NS, "-l", "podssh.dev/gateway-lease=true")["items"]
    replicas = set(cluster.wait_ready(GW_NS, "app.kubernetes.io/component=gateway", count=2))
    assert replicas <= {lease["spec"]["holderIdentity"] for lease in leases}


def test_a_killed_replicas_session_objects_are_cleaned_up_within_a_minute(cluster: Cluster, demo: dict) -> None:
    """A force-deleted pod gets 2 s before SIGKILL, less than its --shutdown-delay=3: it dies
    before it can delete anything itself, so the living replica's cleanup is what removes them."""
    cluster.wait_ready(GW_NS, "app.kubernetes.io/component=gateway", count=2)
    client = subprocess.Popen([*demo["command"], "echo started; sleep 300"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=demo["env"])
    try:
        assert client.stdout is not None and client.stdout.readline() == b"started\n"
        found = wait_for(lambda: [o for o in cluster.get("sshsessions", "-n", "demo")["items"]
                                  if o["spec"].get("command") == "echo started; sleep 300"],
                         timeout=15, step=0.5, what="the session's object")
        replica = found[0]["spec"]["replica"]
        cluster.kubectl("-n", GW_NS, "delete", "pod", replica, "--grace-period=0", "--force", "--wait=false")
        killed = time.monotonic()
        wait_for(lambda: not cluster.get("sshsessions", "-n", "demo", "-l", f"podssh.dev/replica={replica}")["items"],
                 timeout=60, step=1, what="the dead replica's objects removed")
        print(f"\nreplica killed -> its objects gone: {time.monotonic() - killed:.1f} s")
    finally:
        client.kill()
    cluster.wait_ready(GW_NS, "app.kubernetes.io/component=gateway", count=2)
