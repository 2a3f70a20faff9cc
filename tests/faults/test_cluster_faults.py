"""Faults of the real cluster under live sessions: what the user sees, what is lost, and how
soon logins work again. Run after the end-to-end suite (they restart cluster components)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import NS
from tests.support.cluster import BUSYBOX, Cluster, api_address, kubeconfig_via
from tests.support.faults import bring_back, stop
from tests.support.gateway import Gateway, SSHKey, grant, make_key
from tests.support.tcpproxy import CuttableProxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.faults
WEB = f"{NS}/deploy/web"
FAULT_NS = "podssh-faults"


def live(gw: Gateway, key: SSHKey, command: str, stdin: int | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*gw.ssh_argv(WEB, key), f"echo started; {command}"],
                            stdin=stdin if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    return proc


def one_podssh_line(stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("podssh: "), lines
    return lines[0]


def login_works(gw: Gateway, key: SSHKey) -> bool:
    return gw.ssh(WEB, "true", key, timeout=30).returncode == 0


@pytest.fixture
def fault_gateway(make_gateway) -> Gateway:
    return make_gateway("--api-keepalive", "1", "--api-keepalive-timeout", "5")


def test_apiserver_killed_under_a_shell_ends_it_with_255_and_logins_return(
        fault_gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    client = live(fault_gateway, keys["alice"], "sleep 600")
    try:
        stop("kube-apiserver")
        _, err = client.communicate(timeout=30)
        assert client.returncode == 255, err
        one_podssh_line(err)
        # A login while it is down: one clear line, 255.
        proc = fault_gateway.ssh(WEB, "true", keys["alice"], timeout=60)
        assert proc.returncode == 255
        assert one_podssh_line(proc.stderr).startswith("podssh: cannot reach the Kubernetes API server")
    finally:
        if client.poll() is None:
            client.kill()
        back = bring_back()
    wait_for(lambda: login_works(fault_gateway, keys["alice"]), timeout=10, step=0.5,
             what="a login within 10 s of the API server being back")
    assert time.monotonic() - back < 12


def test_an_upload_cut_by_an_apiserver_restart_is_never_a_success(
        fault_gateway: Gateway, keys: dict[str, SSHKey], tmp_path: Path) -> None:
    blob = tmp_path / "upload.bin"
    blob.write_bytes(os.urandom(100 * 1024 * 1024))
    with open(blob, "rb") as src:
        client = live(fault_gateway, keys["alice"], "cat > /tmp/fault-upload.bin", stdin=src.fileno())
        try:
            time.sleep(0.5)  # the upload is under way
            stop("kube-apiserver")
            _, err = client.communicate(timeout=60)
        finally:
            if client.poll() is None:
                client.kill()
            bring_back()
    assert client.returncode != 0, "a cut upload reported success"
    assert client.returncode == 255, err
    one_podssh_line(err)
    wait_for(lambda: login_works(fault_gateway, keys["alice"]), timeout=10, step=0.5, what="logins again")


def test_kubelet_killed_under_a_running_exec_gives_a_reason_and_non_zero(
        fault_gateway: Gateway, keys: dict[str, SSHKey], workloads: Cluster) -> None:
    client = live(fault_gateway, keys["alice"], "sleep 600")
    try:
        stop("kubelet")
        _, err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
        bring_back()
    assert client.returncode == 255, err
    one_podssh_line(err)
    workloads.wait_ready(NS, "app=web", count=5)
    wait_for(lambda: login_works(fault_gateway, keys["alice"]), timeout=30, step=0.5, what="logins again")


@pytest.fixture(scope="module")
def victims(workloads: Cluster) -> Iterator[Cluster]:
    """Pods of this module's own namespace (one namespace for all: a deleted one stays
    Terminating for a while and takes no new pods)."""
    workloads.apply(f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {FAULT_NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: doomed, namespace: {FAULT_NS}, labels: {{app: victim}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: Never}}
---
apiVersion: v1
kind: Pod
metadata: {{name: small, namespace: {FAULT_NS}, labels: {{app: victim}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    resources: {{limits: {{memory: 48Mi}}}}
""")
    workloads.wait_ready(FAULT_NS, "app=victim", count=2)
    yield workloads
    workloads.kubectl("delete", "namespace", FAULT_NS, "--wait=true", "--timeout=120s", check=False)


@pytest.fixture
def victim_gateway(make_gateway, keys: dict[str, SSHKey]) -> Gateway:
    return make_gateway("--api-keepalive", "1", "--api-keepalive-timeout", "5",
                        grants=[grant("victims", FAULT_NS, [keys["alice"]], {"app": "victim"})])


def test_the_pod_deleted_under_a_session_ends_it_non_zero_with_a_reason(
        victims: Cluster, victim_gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    client = subprocess.Popen([*victim_gateway.ssh_argv(f"{FAULT_NS}/doomed", keys["alice"]),
                               "echo started; sleep 600"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdout is not None and client.stdout.readline() == b"started\n"
        victims.kubectl("-n", FAULT_NS, "delete", "pod", "doomed", "--wait=false")
        _, err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode != 0, "a session whose pod was deleted reported success"
    # The runtime reports the signal (137/143), or the stream broke first (255 with a reason).
    assert client.returncode in (137, 143, 255), (client.returncode, err)
    if client.returncode == 255:
        one_podssh_line(err)


def test_an_oom_killed_command_reports_137(victims: Cluster, victim_gateway: Gateway,
                                            keys: dict[str, SSHKey]) -> None:
    proc = victim_gateway.ssh(f"{FAULT_NS}/small", "head -c 200000000 /dev/zero | tail -n 1 >/dev/null",
                              keys["alice"], timeout=120)
    assert proc.returncode == 137, (proc.returncode, proc.stderr)


def test_etcd_stopped_keeps_grants_working_and_fails_execs_in_one_line(
        fault_gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    stop("etcd")
    try:
        time.sleep(2)
        # The key still authenticates from the gateway's snapshot; what needs the cluster fails
        # with one line naming the API server, not "Permission denied" and not a hang.
        proc = fault_gateway.ssh(WEB, "echo never", keys["alice"], timeout=90)
        assert proc.returncode == 255, proc.stderr
        line = one_podssh_line(proc.stderr)
        assert "Kubernetes API server" in line, line
        assert b"never" not in proc.stdout
        assert fault_gateway.events("auth_success"), "the key must still authenticate from the snapshot"
    finally:
        back = bring_back()
    wait_for(lambda: login_works(fault_gateway, keys["alice"]), timeout=10, step=0.5,
             what="a login within 10 s of etcd being back")
    assert time.monotonic() - back < 12


def test_clients_that_vanish_mid_shell_and_mid_upload_leave_nothing_behind(
        make_gateway, keys: dict[str, SSHKey], tmp_path: Path) -> None:
    """SIGKILLed clients (a laptop lid closed): the gateway frees every thread and descriptor,
    and the shell's child is hung up, while one that ignores SIGHUP (nohup) stays."""
    gw = make_gateway("--hang-up")
    for _ in range(3):  # warm the API client's connection pool
        assert gw.ssh(WEB, "true", keys["dave"]).returncode == 0
    time.sleep(0.5)
    baseline = gw.process_counts()
    shell = live(gw, keys["dave"], "sleep 4242 & (trap '' HUP; exec sleep 4343) >/dev/null 2>&1 & wait")
    blob = tmp_path / "put.bin"
    blob.write_bytes(os.urandom(64 * 1024 * 1024))
    put = subprocess.Popen(["sftp", *gw.client_options(keys["dave"]), "-b", "-", f"{WEB}@127.0.0.1"],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert put.stdin is not None
    put.stdin.write(f"put {blob} /tmp/vanish.bin\n".encode())
    put.stdin.flush()
    time.sleep(1.0)  # both under way
    for proc in (shell, put):
        proc.kill()
        proc.wait()

    def left(pattern: str) -> bool:
        return gw.ssh(WEB, f"ps -o args | grep -v grep | grep -q '{pattern}'", keys["dave"]).returncode == 0

    wait_for(lambda: gw.process_counts() == baseline, timeout=15, step=0.2,
             what=f"threads/fds back to {baseline}")
    wait_for(lambda: not left("sleep 4242"), timeout=15, step=0.5, what="the shell's child hung up")
    assert left("sleep 4343"), "a process ignoring SIGHUP must stay"
    gw.ssh(WEB, "pkill -f 'sleep 4343'; rm -f /tmp/vanish.bin", keys["dave"])


def test_a_grant_deleted_while_the_watch_is_down_ends_its_session_once_it_is_back(
        crd: Cluster, make_gateway, tmp_path: Path) -> None:
    key = make_key(tmp_path, "gap")
    proxy = CuttableProxy(api_address(crd.kubeconfig))
    proxied = kubeconfig_via(crd.kubeconfig, proxy.port, tmp_path / "proxied.kubeconfig")
    crd.kubectl("apply", "-f", "-", input=json.dumps(grant("gap-live", NS, [key], {"app": "web"})))
    try:
        gw = make_gateway("--resync-interval", "30", grants=None, kubeconfig=proxied)
        wait_for(lambda: login_works(gw, key), timeout=10, what="login with the grant")
        time.sleep(2)  # past the list that follows kopf's first listing (resync is 30 s away)
        started = time.monotonic()
        client = live(gw, key, "sleep 600")  # its exec stream is newer than the watch
        proxy.freeze(opened_before=started)  # the watch hangs; the session's stream does not
        crd.kubectl("-n", NS, "delete", "sshaccess", "gap-live", "--wait=true")  # via the real address
        time.sleep(3)
        assert client.poll() is None, "nothing can be known while the watch is down"
        proxy.cut(opened_before=started)  # the stalled watch breaks, as a healed partition's would
        back = time.monotonic()
        _, err = client.communicate(timeout=60)
        took = time.monotonic() - back
        assert b"revoked" in err and client.returncode == 255, (client.returncode, err)
        assert took < 2.5, f"session ended {took:.1f}s after the watch came back"
        assert not login_works(gw, key)
    finally:
        proxy.close()
        crd.kubectl("-n", NS, "delete", "sshaccess", "gap-live", "--ignore-not-found")


def test_the_apiserver_stopped_20s_delays_no_login_and_session_objects_catch_up(
        crd: Cluster, make_gateway, tmp_path: Path) -> None:
    """The SSHSession writer is off the login path: the deletions the outage left undone (the
    objects of the sessions it ended) are retried in the background, and the logins right after
    the API server is back take as long as before it."""
    key = make_key(tmp_path, "objs")
    replica = "fault-objs"

    def objects() -> list[dict]:
        return crd.get("sshsessions", "-n", NS, "-l", f"podssh.dev/replica={replica}")["items"]

    def timed_login() -> float:
        began = time.monotonic()
        assert login_works(gw, key)
        return time.monotonic() - began

    crd.kubectl("apply", "-f", "-", input=json.dumps(grant("fault-objs", NS, [key], {"app": "web"})))
    clients: list[subprocess.Popen[bytes]] = []
    try:
        gw = make_gateway("--replica", replica, "--api-keepalive", "1", "--api-keepalive-timeout", "5",
                          grants=None)
        wait_for(lambda: login_works(gw, key), timeout=15, what="a login with the grant")
        before = sorted(timed_login() for _ in range(3))[1]
        clients = [live(gw, key, "sleep 600") for _ in range(5)]
        wait_for(lambda: len(objects()) == 5, timeout=15, what="the live sessions' objects")
        stop("kube-apiserver")
        for client in clients:
            _, err = client.communicate(timeout=30)
            assert client.returncode == 255, err
        time.sleep(20)  # the writer fails its deletions all along
        bring_back()
        wait_for(lambda: login_works(gw, key), timeout=10, step=0.5, what="a login once the API server is back")
        after = sorted(timed_login() for _ in range(3))[1]
        assert after < before + 1.0, f"logins took {after:.2f}s after the outage, {before:.2f}s before"
        wait_for(lambda: objects() == [], timeout=30, what="the ended sessions' objects deleted after the outage")
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
        crd.kubectl("-n", NS, "delete", "sshaccess", "fault-objs", "--ignore-not-found")
