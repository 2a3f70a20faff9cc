"""SSHAccess objects in the real cluster reconfigure running gateways live."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import NS
from tests.support.cluster import Cluster, api_address, kubeconfig_via
from tests.support.gateway import Gateway, SSHKey, grant, make_key
from tests.support.ptyclient import PtyClient
from tests.support.tcpproxy import CuttableProxy
from tests.support.waiting import wait_for

WEB = f"{NS}/deploy/web"


def apply(cluster: Cluster, obj: dict, kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    args = ["apply", "-f", "-"] if kubeconfig is None else ["--kubeconfig", kubeconfig, "apply", "-f", "-"]
    return cluster.kubectl(*args, input=json.dumps(obj), check=kubeconfig is None)


def delete(cluster: Cluster, name: str) -> None:
    cluster.kubectl("-n", NS, "delete", "sshaccess", name, "--ignore-not-found", "--wait=true")


def login_works(gw: Gateway, key: SSHKey, target: str = WEB) -> bool:
    return gw.ssh(target, "true", key, timeout=20).returncode == 0


def live_session(gw: Gateway, key: SSHKey) -> subprocess.Popen[bytes]:
    argv = [*gw.ssh_argv(WEB, key), "echo started; sleep 300"]
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdout is not None and client.stdout.readline() == b"started\n"
    return client


def ended_within(client: subprocess.Popen[bytes], seconds: float) -> tuple[float, bytes]:
    start = time.monotonic()
    try:
        _, err = client.communicate(timeout=seconds + 10)
    finally:
        client.kill()
    return time.monotonic() - start, err


@pytest.fixture(scope="module")
def op_gateway(crd: Cluster, tmp_path_factory: pytest.TempPathFactory):
    gw = Gateway(tmp_path_factory.mktemp("opgw"), crd.kubeconfig, None).start()
    yield gw
    gw.stop()


@pytest.fixture
def fresh_key(tmp_path: Path) -> SSHKey:
    return make_key(tmp_path, "dev")


def test_apply_then_delete(crd: Cluster, op_gateway: Gateway, fresh_key: SSHKey) -> None:
    assert not login_works(op_gateway, fresh_key)
    apply(crd, grant("prop", NS, [fresh_key], {"app": "web"}))
    applied = time.monotonic()
    wait_for(lambda: login_works(op_gateway, fresh_key), timeout=10, step=0.01, what="login with the new grant")
    propagation = time.monotonic() - applied
    print(f"\nkubectl apply -> first successful ssh: {propagation * 1000:.0f} ms")
    assert propagation < 1.0, f"grant took {propagation:.2f}s to propagate"

    client = live_session(op_gateway, fresh_key)
    deleted = time.monotonic()
    delete(crd, "prop")
    _, err = ended_within(client, 2)
    revoke = time.monotonic() - deleted  # includes running kubectl delete itself
    print(f"kubectl delete -> live session ended: {revoke * 1000:.0f} ms")
    assert revoke < 2.0
    assert b"was revoked" in err
    assert client.returncode != 0
    assert not login_works(op_gateway, fresh_key)


def test_expiry_edited_into_the_past_ends_sessions(crd: Cluster, op_gateway: Gateway, fresh_key: SSHKey) -> None:
    obj = grant("expiring", NS, [fresh_key], {"app": "web"}, expiresAt="2099-01-01T00:00:00Z")
    apply(crd, obj)
    wait_for(lambda: login_works(op_gateway, fresh_key), timeout=10)
    client = live_session(op_gateway, fresh_key)
    obj["spec"]["expiresAt"] = "2020-01-01T00:00:00Z"
    apply(crd, obj)
    elapsed, err = ended_within(client, 2)
    assert elapsed < 2.0
    assert b"expired" in err
    ready = crd.get("sshaccess", "-n", NS, "expiring")["status"]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "Expired")
    delete(crd, "expiring")


@pytest.mark.parametrize("change", ["remove-key", "narrow-selector"])
def test_narrowing_a_grant_ends_the_sessions_it_no_longer_covers(
        crd: Cluster, op_gateway: Gateway, fresh_key: SSHKey, tmp_path: Path, change: str) -> None:
    other = make_key(tmp_path, "other")
    obj = grant("narrow", NS, [fresh_key, other], {"app": "web"})
    apply(crd, obj)
    wait_for(lambda: login_works(op_gateway, fresh_key), timeout=10)
    client = live_session(op_gateway, fresh_key)
    if change == "remove-key":
        obj["spec"]["publicKeys"] = [other.public]
    else:
        obj["spec"]["pods"]["selector"]["matchLabels"] = {"app": "web", "kind": "debian"}
    apply(crd, obj)
    elapsed, err = ended_within(client, 2)
    assert elapsed < 2.0 and b"revoked" in err
    if change == "narrow-selector":
        assert login_works(op_gateway, fresh_key, f"{NS}/deb")
    delete(crd, "narrow")


def test_invalid_object_is_marked_and_isolated(crd: Cluster, op_gateway: Gateway, fresh_key: SSHKey) -> None:
    apply(crd, grant("good", NS, [fresh_key], {"app": "web"}))
    # Passes the schema's pattern, but is not a valid ed25519 key.
    bad = grant("broken", NS, [], {"app": "web"})
    bad["spec"]["publicKeys"] = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMq"]
    apply(crd, bad)

    def marked() -> bool:
        status = crd.get("sshaccess", "-n", NS, "broken").get("status") or {}
        cond = (status.get("conditions") or [{}])[0]
        return cond.get("status") == "False" and cond.get("reason") == "InvalidKey"

    wait_for(marked, timeout=10)
    assert login_works(op_gateway, fresh_key)
    events = crd.kubectl("-n", NS, "get", "events", "--field-selector", "involvedObject.name=broken",
                         "-o", "json").stdout
    assert "InvalidKey" in events
    good = crd.get("sshaccess", "-n", NS, "good")["status"]
    assert good["conditions"][0]["status"] == "True" and good["keyCount"] == 1
    fp = subprocess.run(["ssh-keygen", "-lf", str(fresh_key.path.with_suffix(".pub"))], capture_output=True,
                        text=True).stdout.split()[1]
    assert good["fingerprints"] == [fp]
    row = crd.kubectl("-n", NS, "get", "ssha", "good", "--no-headers").stdout.split()
    assert row[:3] == ["good", "good", "1"] and "True" in row
    delete(crd, "good")
    delete(crd, "broken")


def test_schema_rejects_malformed_keys_with_a_readable_message(crd: Cluster, fresh_key: SSHKey) -> None:
    bad = grant("malformed", NS, [], {"app": "web"})
    bad["spec"]["publicKeys"] = ["ssh-ed25519 definitely not a key"]
    proc = crd.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert "must be an OpenSSH public key line" in proc.stderr
    empty = grant("empty", NS, [], {"app": "web"})
    proc = crd.kubectl("apply", "-f", "-", input=json.dumps(empty), check=False)
    assert "at least one public key" in proc.stderr


def test_session_events_and_last_login(crd: Cluster, op_gateway: Gateway, fresh_key: SSHKey) -> None:
    apply(crd, grant("audited", NS, [fresh_key], {"app": "web"}))
    wait_for(lambda: login_works(op_gateway, fresh_key), timeout=10)

    def recorded() -> bool:
        out = crd.kubectl("-n", NS, "get", "events", "--field-selector", "involvedObject.name=audited",
                          "-o", "jsonpath={.items[*].reason}").stdout.split()
        status = crd.get("sshaccess", "-n", NS, "audited").get("status") or {}
        return {"SessionStarted", "SessionEnded"} <= set(out) and bool(status.get("lastLoginTime"))

    wait_for(recorded, timeout=10)
    delete(crd, "audited")


def test_limits(crd: Cluster, op_gateway: Gateway, fresh_key: SSHKey) -> None:
    apply(crd, grant("limited", NS, [fresh_key], {"app": "web"},
                     limits={"maxSessions": 1, "idleTimeout": "2s", "maxSessionDuration": "4s"}))
    wait_for(lambda: login_works(op_gateway, fresh_key), timeout=10)
    first = live_session(op_gateway, fresh_key)  # silent: idle after 2 s
    second = op_gateway.ssh(WEB, "true", fresh_key)
    assert second.returncode == 255 and b"at most 1 concurrent sessions" in second.stderr
    _, err = ended_within(first, 5)
    assert b"idle for 2s" in err
    busy = op_gateway.ssh(WEB, "while true; do echo tick; sleep 0.5; done", fresh_key, timeout=30)
    assert b"maximum session duration" in busy.stderr
    assert busy.returncode != 0
    delete(crd, "limited")


def test_watch_gap_deletion_is_noticed(crd: Cluster, fresh_key: SSHKey, make_gateway, tmp_path: Path) -> None:
    proxy = CuttableProxy(api_address(crd.kubeconfig))
    proxied = kubeconfig_via(crd.kubeconfig, proxy.port, tmp_path / "proxied.kubeconfig")
    try:
        apply(crd, grant("gap", NS, [fresh_key], {"app": "web"}))
        gw = make_gateway("--resync-interval", "5", grants=None, kubeconfig=proxied)
        wait_for(lambda: login_works(gw, fresh_key), timeout=10)
        proxy.cut()
        delete(crd, "gap")  # through the real address: the gateway cannot see it
        time.sleep(2)
        proxy.restore()
        wait_for(lambda: not login_works(gw, fresh_key), timeout=15, step=0.5)
    finally:
        proxy.close()


def test_two_replicas_authorize_and_settle(crd: Cluster, fresh_key: SSHKey, make_gateway) -> None:
    a = make_gateway(grants=None)
    b = make_gateway(grants=None)
    apply(crd, grant("shared", NS, [fresh_key], {"app": "web"}))
    wait_for(lambda: login_works(a, fresh_key) and login_works(b, fresh_key), timeout=10)

    def patches() -> int:  # condition patches; lastLoginTime is written once per login by design
        return sum(1 for gw in (a, b) for e in gw.events("status_patched")
                   if e.get("object") == f"{NS}/shared" and "conditions" in e.get("fields", []))

    time.sleep(3)
    settled = patches()
    time.sleep(5)
    assert patches() == settled, "status patches keep coming: the replicas are fighting"
    assert settled <= 2, f"{settled} status patches for one new object"
    delete(crd, "shared")


def _sign(ca: Path, key: SSHKey, principal: str, validity: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", f"cert-{principal}", "-n", principal,
                    "-V", validity, str(key.path.with_suffix(".pub"))], check=True)


def test_certificate_authentication(crd: Cluster, op_gateway: Gateway, tmp_path: Path) -> None:
    ca = make_key(tmp_path, "ca")
    other_ca = make_key(tmp_path, "otherca")
    obj = grant("certs", NS, [], {"app": "web"})
    obj["spec"]["user"] = "alice"
    obj["spec"]["certificateAuthorities"] = [ca.public]
    apply(crd, obj)
    cases = {"good": (ca, "alice", "-5m:+1h", True), "wrongprincipal": (ca, "bob", "-5m:+1h", False),
             "expired": (ca, "alice", "20200101:20200102", False), "unknownca": (other_ca, "alice", "-5m:+1h", False)}
    results = {}
    for name, (signer, principal, validity, _) in cases.items():
        (tmp_path / name).mkdir()
        key = make_key(tmp_path / name, "user")
        _sign(signer.path, key, principal, validity)
        if name == "good":
            wait_for(lambda k=key: login_works(op_gateway, k), timeout=10)
        results[name] = login_works(op_gateway, key)
    assert results == {name: expected for name, (*_, expected) in cases.items()}
    success = [e for e in op_gateway.events("auth_success") if e.get("method") == "publickey-cert"]
    assert success and success[-1]["cert_key_id"] == "cert-alice"
    delete(crd, "certs")


def _exec_role(cluster: Cluster) -> None:
    cluster.apply(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: exec, namespace: {NS}}}
rules:
- {{apiGroups: [""], resources: [pods/exec], verbs: [get, create]}}
""")


def _bind_exec(cluster: Cluster, name: str, user: str) -> None:
    """Gives `user` the exec Role in the test namespace."""
    cluster.apply(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {name}, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: exec}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
""")


def test_impersonation_lets_cluster_rbac_decide(crd: Cluster, fresh_key: SSHKey, make_gateway, tmp_path: Path) -> None:
    other = make_key(tmp_path, "frank")
    apply(crd, grant("eve", NS, [fresh_key], {"app": "web"}))
    apply(crd, grant("frank", NS, [other], {"app": "web"}))
    _exec_role(crd)
    _bind_exec(crd, "frank-exec", "frank")
    gw = make_gateway("--impersonate", grants=None)
    wait_for(lambda: gw.ssh(WEB, "true", other).returncode == 0, timeout=10)
    denied = gw.ssh(WEB, "true", fresh_key)
    assert denied.returncode == 255
    assert b"forbidden" in denied.stderr and b'"eve"' in denied.stderr
    delete(crd, "eve")
    delete(crd, "frank")


def test_admission_policy_requires_exec_rights(crd: Cluster, fresh_key: SSHKey, tmp_path: Path) -> None:
    pki = Path(crd.kubeconfig).parent / "pki"
    key, csr, crt = tmp_path / "grantor.key", tmp_path / "grantor.csr", tmp_path / "grantor.crt"
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                    "-subj", "/CN=grantor"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key",
                    "-CAcreateserial", "-out", crt, "-days", "1"], check=True, capture_output=True)
    cfg = yaml.safe_load(Path(crd.kubeconfig).read_text())
    cfg["users"] = [{"name": "grantor", "user": {"client-certificate": str(crt), "client-key": str(key)}}]
    cfg["contexts"][0]["context"]["user"] = "grantor"
    kubeconfig = tmp_path / "grantor.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(cfg))
    crd.apply(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: grant-writer, namespace: {NS}}}
rules:
- {{apiGroups: [podssh.dev], resources: [sshaccesses], verbs: [get, list, create, update, patch, delete]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: grantor-writes, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: grant-writer}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: grantor}}]
""")
    _exec_role(crd)
    crd.kubectl("-n", NS, "delete", "rolebinding", "grantor-execs", "--ignore-not-found")
    delete(crd, "by-grantor")
    obj = grant("by-grantor", NS, [fresh_key], {"app": "web"})
    refused = apply(crd, obj, kubeconfig=str(kubeconfig))
    assert refused.returncode != 0
    assert "may grant SSH access there" in refused.stderr and "grantor is not" in refused.stderr
    _bind_exec(crd, "grantor-execs", "grantor")
    wait_for(lambda: apply(crd, obj, kubeconfig=str(kubeconfig)).returncode == 0, what="grantor's apply allowed")
    delete(crd, "by-grantor")


def test_recording_is_complete_when_the_session_is_revoked(crd: Cluster, fresh_key: SSHKey, make_gateway,
                                                          tmp_path: Path) -> None:
    gw = make_gateway("--record-dir", str(tmp_path / "rec"), grants=None)
    apply(crd, grant("recorded", NS, [fresh_key], {"app": "web"}))
    wait_for(lambda: login_works(gw, fresh_key), timeout=10)
    client = PtyClient(gw.ssh_argv(f"{NS}/deb", fresh_key, tty=True))
    try:
        client.send(b"echo before-$((40+2))\n")
        client.expect(b"before-42")
        delete(crd, "recorded")
        client.expect(b"was revoked")
        client.wait()
    finally:
        client.kill()
    (cast,) = (tmp_path / "rec").glob("*.cast")
    lines = cast.read_text().splitlines()
    output = "".join(json.loads(line)[2] for line in lines[1:])
    assert "before-42" in output and "was revoked" in output
