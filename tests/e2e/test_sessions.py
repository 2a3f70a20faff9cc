"""Live sessions as SSHSession objects in the real cluster: listed with their columns, ended by
`kubectl delete`, gone when the session ends or its gateway is SIGKILLed, and guarded by RBAC
and the admission policy."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import NS
from tests.support.cluster import REPO, Cluster
from tests.support.gateway import Gateway, SSHKey, grant, make_key
from tests.support.ptyclient import PtyClient
from tests.support.waiting import wait_for

REPLICA = "e2e-sessions"
COLUMNS = ["NAME", "USER", "GRANT", "POD", "CONTAINER", "KIND", "COMMAND", "REPLICA", "STARTED", "AGE", "IDLE",
           "IN", "OUT"]


@pytest.fixture(scope="module")
def sess_gateway(crd: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway watching the cluster's SSHAccess objects, so writing SSHSession objects."""
    gw = Gateway(tmp_path_factory.mktemp("sessgw"), crd.kubeconfig, None, extra_args=["--replica", REPLICA]).start()
    yield gw
    gw.stop()


@pytest.fixture
def user(crd: Cluster, sess_gateway: Gateway, tmp_path: Path) -> Iterator[SSHKey]:
    """A fresh key with a grant `sess-e2e` (shell and exec on app=web), applied and removed."""
    key = make_key(tmp_path, "sess")
    crd.kubectl("apply", "-f", "-", input=json.dumps(
        grant("sess-e2e", NS, [key], {"app": "web"}, allow={"shell": True, "exec": True})))
    wait_for(lambda: sess_gateway.ssh(f"{NS}/deb", "true", key, timeout=20).returncode == 0, timeout=15,
             what="a login with the new grant")
    yield key
    crd.kubectl("-n", NS, "delete", "sshaccess", "sess-e2e", "--ignore-not-found", "--wait=true")


def objects(cluster: Cluster, replica: str = REPLICA, namespace: str = NS) -> list[dict[str, Any]]:
    return cluster.get("sshsessions", "-n", namespace, "-l", f"podssh.dev/replica={replica}")["items"]


def the_one(cluster: Cluster, predicate, replica: str = REPLICA, timeout: float = 10) -> dict[str, Any]:
    found = wait_for(lambda: [o for o in objects(cluster, replica) if predicate(o)], timeout=timeout, step=0.2,
                     what="the session's SSHSession object")
    assert len(found) == 1, found
    return found[0]


def live_exec(gw: Gateway, key: SSHKey, command: str = "echo started; sleep 300") -> subprocess.Popen[bytes]:
    client = subprocess.Popen([*gw.ssh_argv(f"{NS}/deb", key), command], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdout is not None and client.stdout.readline() == b"started\n"
    return client


def test_listing_shows_a_live_shell_with_its_columns(crd: Cluster, sess_gateway: Gateway, user: SSHKey) -> None:
    shell = PtyClient(sess_gateway.ssh_argv(f"{NS}/deb", user, tty=True))
    try:
        shell.send(b"echo ready-$((40+2))\n")
        shell.expect(b"ready-42")
        obj = the_one(crd, lambda o: o["spec"]["kind"] == "shell" and o["spec"]["user"] == "sess-e2e")
        spec = obj["spec"]
        assert (spec["grant"], spec["grantNamespace"], spec["pod"], spec["container"], spec["replica"]) == (
            "sess-e2e", NS, "deb", "main", REPLICA)
        assert "command" not in spec  # a shell runs no command of the client's
        name = obj["metadata"]["name"]
        assert name.startswith("sess-e2e-")
        table = crd.kubectl("get", "sshs", "-n", NS, name).stdout.splitlines()
        assert table[0].split() == COLUMNS
        # Cells by the header's columns (an empty cell, as COMMAND for a shell, has no word).
        starts = [m.start() for m in re.finditer(r"\S+", table[0])]
        row = [table[1][a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        assert row[:8] == [name, "sess-e2e", "sess-e2e", "deb", "main", "shell", "", REPLICA]
        # Bytes each way arrive within the update interval (5 s) and the writer's pace.
        shell.send(b"head -c 20000 /dev/zero | od | tail -1; echo done-$((1+1))\n")
        shell.expect(b"done-2")
        status = wait_for(lambda: (s := crd.get("sshsession", "-n", NS, name).get("status") or {})
                          .get("bytesOut", 0) > 100 and s.get("bytesIn", 0) > 10 and s, timeout=15, step=0.5,
                          what="the byte counts")
        assert status["lastActivityTime"].endswith("Z")
        # `kubectl describe pod` shows who was in it.
        events = crd.get("events", "-n", NS, "--field-selector", "involvedObject.kind=Pod,involvedObject.name=deb,"
                         "reason=SSHSessionStarted")["items"]
        assert any("sess-e2e started a shell session" in e["message"] for e in events)
    finally:
        shell.kill()
    wait_for(lambda: not [o for o in objects(crd) if o["metadata"]["name"] == name], timeout=10,
             what="the object gone after the shell ended")


def test_deleting_the_object_ends_the_session_with_a_message_and_255(
        crd: Cluster, sess_gateway: Gateway, user: SSHKey) -> None:
    client = live_exec(sess_gateway, user)
    try:
        obj = the_one(crd, lambda o: o["spec"].get("command") == "echo started; sleep 300")
        name = obj["metadata"]["name"]
        deleted = time.monotonic()
        crd.kubectl("-n", NS, "delete", "sshsession", name, "--wait=false")
        _, err = client.communicate(timeout=15)
        took = time.monotonic() - deleted  # kubectl's own run included
    finally:
        client.kill()
    print(f"\nkubectl delete sshsession -> session ended: {took * 1000:.0f} ms")
    assert took < 2.0
    assert client.returncode == 255
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert lines == [f"podssh: this session was ended through the Kubernetes API (sshsession {NS}/{name} deleted)"]
    session = obj["spec"]["sessionID"]
    requested = wait_for(lambda: [e for e in sess_gateway.events("session_end_requested") if e["session"] == session])
    assert requested[0]["via"] == "kubernetes-api" and requested[0]["reason"] == "deleted"
    end = wait_for(lambda: [e for e in sess_gateway.events("session_end") if e.get("session") == session])
    assert end[0]["reason"] == "deleted"
    events = wait_for(lambda: [e for e in crd.get("events", "-n", NS, "--field-selector",
                                                  "involvedObject.name=deb,reason=SSHSessionEnded")["items"]
                               if f"sshsession {NS}/{name} deleted" in e["message"]], timeout=10, step=0.5)
    assert "ended through the Kubernetes API" in events[0]["message"]
    time.sleep(1)
    assert crd.kubectl("-n", NS, "get", "sshsession", name, check=False).returncode != 0  # never written again


def test_an_exec_that_ends_takes_its_object_with_it(crd: Cluster, sess_gateway: Gateway, user: SSHKey) -> None:
    client = live_exec(sess_gateway, user, "echo started; sleep 3; echo finished")
    try:
        obj = the_one(crd, lambda o: o["spec"].get("command") == "echo started; sleep 3; echo finished")
        out, _ = client.communicate(timeout=20)
    finally:
        client.kill()
    assert client.returncode == 0 and out == b"finished\n"
    name = obj["metadata"]["name"]
    wait_for(lambda: crd.kubectl("-n", NS, "get", "sshsession", name, check=False).returncode != 0, timeout=10,
             step=0.2, what="the object deleted")


def _session_admin_role() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "manifests" / "rbac.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == "podssh-session-admin")


def test_rbac_decides_who_lists_and_deletes_and_only_the_gateway_writes(
        crd: Cluster, sess_gateway: Gateway, user: SSHKey) -> None:
    crd.kubectl("apply", "-f", "-", input=json.dumps(_session_admin_role()))
    crd.kubectl("apply", "-f", "-", input=crd.kubectl(
        "-n", NS, "create", "rolebinding", "e2e-lead-sessions", "--clusterrole=podssh-session-admin",
        "--user=e2e-lead", "--dry-run=client", "-o", "yaml").stdout)
    writer_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "e2e-session-writer", "namespace": NS},
                   "rules": [{"apiGroups": ["podssh.dev"], "resources": ["sshsessions"],
                              "verbs": ["create", "update", "patch", "get"]}]}
    crd.kubectl("apply", "-f", "-", input=json.dumps(writer_role))
    crd.kubectl("apply", "-f", "-", input=crd.kubectl(
        "-n", NS, "create", "rolebinding", "e2e-session-writer", "--role=e2e-session-writer",
        "--user=e2e-writer", "--dry-run=client", "-o", "yaml").stdout)
    client = live_exec(sess_gateway, user)
    try:
        obj = the_one(crd, lambda o: o["spec"].get("command") == "echo started; sleep 300")
        name = obj["metadata"]["name"]
        # Nobody without RBAC on sshsessions in the namespace sees or ends it.
        for args in (("get", "sshsessions"), ("delete", "sshsession", name)):
            denied = crd.kubectl("--as=e2e-stranger", "-n", NS, *args, check=False)
            assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
        assert client.poll() is None
        # Nor may anyone but the gateway create or change one, even holding create and patch.
        forged = {"apiVersion": "podssh.dev/v1alpha1", "kind": "SSHSession",
                  "metadata": {"name": "forged", "namespace": NS},
                  "spec": {"user": "nobody", "pod": "deb", "kind": "shell", "replica": "x", "sessionID": "x"}}
        refused = crd.kubectl("--as=e2e-writer", "create", "-f", "-", input=json.dumps(forged), check=False)
        assert refused.returncode != 0 and "only the podssh gateway writes SSHSession objects" in refused.stderr
        patched = crd.kubectl("--as=e2e-writer", "-n", NS, "patch", "sshsession", name, "--type=merge",
                              "-p", '{"spec": {"user": "someone-else"}}', check=False)
        assert patched.returncode != 0 and "only the podssh gateway" in patched.stderr
        # The team lead with podssh-session-admin in the namespace lists and ends it.
        listed = crd.kubectl("--as=e2e-lead", "-n", NS, "get", "sshsessions", "-o", "name").stdout
        assert f"sshsession.podssh.dev/{name}" in listed.split()
        assert crd.kubectl("--as=e2e-lead", "-n", NS, "get", "sshsessions", "-A", check=False).returncode != 0
        crd.kubectl("--as=e2e-lead", "-n", NS, "delete", "sshsession", name, "--wait=false")
        client.communicate(timeout=10)
        assert client.returncode == 255
    finally:
        client.kill()
        for kind, name in (("rolebinding", "e2e-lead-sessions"), ("rolebinding", "e2e-session-writer"),
                           ("role", "e2e-session-writer")):
            crd.kubectl("-n", NS, "delete", kind, name, "--ignore-not-found")


def test_a_sigkilled_gateways_objects_are_gone_within_a_minute(
        crd: Cluster, sess_gateway: Gateway, user: SSHKey, tmp_path: Path) -> None:
    # sess_gateway lives on and cleans up; the doomed one shares its Lease namespace (default).
    doomed = Gateway(tmp_path / "doomed", crd.kubeconfig, None, extra_args=["--replica", "e2e-doomed"]).start()
    try:
        client = live_exec(doomed, user)
        obj = the_one(crd, lambda o: True, replica="e2e-doomed")
        assert crd.get("lease", "-n", "default", "podssh-gateway-e2e-doomed")["spec"]["holderIdentity"] == "e2e-doomed"
        assert doomed.proc is not None
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
        killed = time.monotonic()
        client.kill()
        wait_for(lambda: not objects(crd, "e2e-doomed"), timeout=60, step=1,
                 what="the SIGKILLed replica's objects removed by the living one")
        print(f"\nSIGKILL -> object {obj['metadata']['name']} gone: {time.monotonic() - killed:.1f} s")
        wait_for(lambda: crd.kubectl("-n", "default", "get", "lease", "podssh-gateway-e2e-doomed",
                                     check=False).returncode != 0, timeout=30, step=1, what="its Lease removed")
        reaped = [e for e in sess_gateway.events("session_object_reaped") if e.get("replica") == "e2e-doomed"]
        assert reaped
    finally:
        doomed.stop()


def test_session_objects_false_writes_none(crd: Cluster, make_gateway, user: SSHKey) -> None:
    gw = make_gateway("--session-objects=false", "--replica", "e2e-off", grants=None)
    client = live_exec(gw, user)
    try:
        time.sleep(3)
        assert objects(crd, "e2e-off") == []
        assert crd.kubectl("-n", "default", "get", "lease", "podssh-gateway-e2e-off", check=False).returncode != 0
    finally:
        client.kill()
