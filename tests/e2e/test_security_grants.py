"""Grants at the boundary, on the real cluster: what the CRD and the admission policies refuse at
`kubectl apply` time, and a gateway that keeps applying revocations while an object the parser
cannot use exists (issue 11, holes 2, 7 and 9)."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import NS
from tests.support.cluster import REPO, Cluster
from tests.support.gateway import Gateway, SSHKey, grant, make_key
from tests.support.grantors import dry_run, make_grantor
from tests.support.waiting import wait_for

WEB = f"{NS}/deploy/web"
# A namespace of this file's own, for the impersonation policy's binding (scoped to it alone, so
# that other tests' grants in other namespaces never meet it).
SG_NS = "podssh-e2e-sg"
GRANTOR = "sg-grantor"
GRANTOR_USER = f"system:serviceaccount:{SG_NS}:{GRANTOR}"


def compressed_ecdsa_line() -> str:
    """Passes the CRD's key pattern; the parser refuses it (cryptography: NotImplementedError)."""
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    blob = b"".join(struct.pack(">I", len(p)) + p for p in (b"ecdsa-sha2-nistp256", b"nistp256", point))
    return "ecdsa-sha2-nistp256 " + base64.b64encode(blob).decode()


def delete(cluster: Cluster, name: str, namespace: str = NS) -> None:
    cluster.kubectl("-n", namespace, "delete", "sshaccess", name, "--ignore-not-found", "--wait=true")


@pytest.fixture
def fresh_key(tmp_path: Path) -> SSHKey:
    return make_key(tmp_path, "sg")


@pytest.fixture(scope="module")
def grantor(crd: Cluster) -> Cluster:
    """A ServiceAccount that may write SSHAccess objects and exec (not port-forward) in NS and SG_NS."""
    make_grantor(crd, SG_NS, GRANTOR, (NS, SG_NS), "sg")
    return crd


@pytest.mark.parametrize(("change", "message"), [
    ({"limits": {"idleTimeout": "9" * 400 + "s"}}, "may not be more than 21"),
    ({"limits": {"maxSessionDuration": "1234567h"}}, "should match"),
    ({"limits": {"idleTimeout": "0s"}}, "longer than zero"),
    ({"limits": {"maxSessions": 100000}}, "less than or equal to 1000"),
    ({"user": "alice\r\nImpersonate-Group: system:masters"}, "spec.user in body should match"),
    ({"user": "alice\x00"}, "spec.user in body should match"),
    ({"groups": ["dev\n"]}, "spec.groups[0] in body should match"),
    ({"user": "system:serviceaccount:ns:sa "}, "spec.user in body should match"),
    ({"groups": [" system:masters"]}, "spec.groups[0] in body should match"),
    ({"groups": [f"g{i}" for i in range(17)]}, "must have at most 16 items"),
    ({"pods": {"selector": {"matchLabels": {"app": "web"}}, "containers": []}}, "should have at least 1 items"),
    ({"pods": {"selector": {"matchLabels": {"app": "web"}}, "containers": ["Web"]}}, "should match"),
    ({"pods": {"selector": {"matchLabels": {"app": "web\n"}}}}, "should match"),
    ({"pods": {"selector": {"matchLabels": {}}}}, "must not be empty"),
    ({"allow": {"shell": "false"}}, "must be of type boolean"),
    ({"shellCommand": []}, "should have at least 1 items"),
])
def test_the_api_server_refuses_values_the_gateway_cannot_use(
        crd: Cluster, fresh_key: SSHKey, change: dict[str, Any], message: str) -> None:
    obj = grant("sg-refused", NS, [fresh_key], {"app": "web"}, **change)
    proc = dry_run(crd, obj)
    assert proc.returncode != 0, f"accepted: {change}"
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert dry_run(crd, grant("sg-accepted", NS, [fresh_key], {"app": "web"})).returncode == 0


def test_port_forwarding_grants_need_portforward_rights(grantor: Cluster, fresh_key: SSHKey) -> None:
    """Hole 9: exec rights are always needed; port forwarding rights too when ports are listed."""
    shell = grant("sg-shell", NS, [fresh_key], {"app": "web"})
    ports = grant("sg-ports", NS, [fresh_key], {"app": "web"}, allow={"portForward": [8080]})
    both = grant("sg-both", NS, [fresh_key], {"app": "web"}, allow={"exec": True, "portForward": [8080]})
    wait_for(lambda: dry_run(grantor, shell, GRANTOR_USER).returncode == 0, what="the grantor may grant")
    for obj in (ports, both):
        refused = dry_run(grantor, obj, GRANTOR_USER)
        assert refused.returncode != 0
        assert "may grant port forwarding (spec.allow.portForward) there" in refused.stderr
        assert f"{GRANTOR_USER} is not" in refused.stderr
    # A second grantor who may port-forward but not exec may grant neither kind.
    forwarder = f"system:serviceaccount:{SG_NS}:sg-forwarder"
    grantor.apply(f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: sg-forwarder, namespace: {SG_NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: sg-grant-and-forward, namespace: {NS}}}
rules:
- {{apiGroups: [podssh.dev], resources: [sshaccesses], verbs: [get, list, create, update, patch, delete]}}
- {{apiGroups: [""], resources: [pods/portforward], verbs: [get, create]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: sg-forwarder-grants, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: sg-grant-and-forward}}
subjects:
- {{kind: ServiceAccount, name: sg-forwarder, namespace: {SG_NS}}}
- {{kind: ServiceAccount, name: {GRANTOR}, namespace: {SG_NS}}}
""")
    try:
        # The first grantor now holds both rights: both kinds of grant pass.
        wait_for(lambda: dry_run(grantor, ports, GRANTOR_USER).returncode == 0, what="port grant allowed")
        assert dry_run(grantor, both, GRANTOR_USER).returncode == 0
        # Port forwarding rights alone are not enough: every grant needs exec rights.
        refused = wait_for(lambda: (p := dry_run(grantor, ports, forwarder)).returncode != 0
                           and "pods/exec" in p.stderr and p, what="exec required of the forwarder")
        assert f"may grant SSH access there; {forwarder} is not" in refused.stderr
        assert "pods/portforward" not in refused.stderr
    finally:
        grantor.kubectl("-n", NS, "delete", "rolebinding", "sg-forwarder-grants", "--ignore-not-found")
        grantor.kubectl("-n", NS, "delete", "role", "sg-grant-and-forward", "--ignore-not-found")


@pytest.fixture
def impersonation_policy(grantor: Cluster):
    """components/impersonation's policy as shipped, bound to SG_NS only, under names of its own."""
    docs = list(yaml.safe_load_all(
        (REPO / "manifests" / "components" / "impersonation" / "admission-policy.yaml").read_text()))
    policy, binding = docs
    assert policy["kind"] == "ValidatingAdmissionPolicy" and binding["kind"] == "ValidatingAdmissionPolicyBinding"
    name = "sg-e2e-grantor-may-impersonate"
    policy["metadata"]["name"] = binding["metadata"]["name"] = binding["spec"]["policyName"] = name
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": SG_NS}}}
    grantor.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([policy, binding]))
    yield grantor
    grantor.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
    grantor.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")
    grantor.kubectl("delete", "clusterrolebinding", "sg-impersonate-bob", "--ignore-not-found")
    grantor.kubectl("delete", "clusterrole", "sg-impersonate-bob", "--ignore-not-found")


def test_impersonation_policy_requires_impersonate_rights(impersonation_policy: Cluster, fresh_key: SSHKey) -> None:
    cluster = impersonation_policy
    as_bob = grant("sg-bob", SG_NS, [fresh_key], {"app": "web"}, user="sg-bob")
    masters = grant("sg-masters", SG_NS, [fresh_key], {"app": "web"}, user="sg-bob", groups=["system:masters"])
    as_sa = grant("sg-sa", SG_NS, [fresh_key], {"app": "web"}, user=f"system:serviceaccount:{SG_NS}:default")
    refused = wait_for(lambda: (p := dry_run(cluster, as_bob, GRANTOR_USER)).returncode != 0 and p,
                       timeout=30, what="the impersonation policy in force")
    assert f"{GRANTOR_USER} may not impersonate user sg-bob" in refused.stderr
    sa_refused = dry_run(cluster, as_sa, GRANTOR_USER)
    assert sa_refused.returncode != 0 and "may not impersonate user system:serviceaccount" in sa_refused.stderr
    # The admin may impersonate anyone: the policy lets it through (the binding covers SG_NS only).
    assert dry_run(cluster, masters).returncode == 0
    cluster.apply(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: sg-impersonate-bob}}
rules:
- {{apiGroups: [""], resources: [users], verbs: [impersonate], resourceNames: [sg-bob]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: sg-impersonate-bob}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: sg-impersonate-bob}}
subjects: [{{kind: ServiceAccount, name: {GRANTOR}, namespace: {SG_NS}}}]
""")
    wait_for(lambda: dry_run(cluster, as_bob, GRANTOR_USER).returncode == 0, what="sg-bob grantable")
    denied = dry_run(cluster, masters, GRANTOR_USER)
    assert denied.returncode != 0
    assert f"{GRANTOR_USER} may not impersonate group system:masters" in denied.stderr
    # Outside SG_NS this copy of the policy does not apply (the grantor may exec in NS too).
    assert dry_run(cluster, {**masters, "metadata": {"name": "sg-masters", "namespace": NS}},
                   GRANTOR_USER).returncode == 0


def _login(gw: Gateway, key: SSHKey) -> bool:
    return gw.ssh(WEB, "true", key, timeout=20).returncode == 0


def test_revocation_goes_on_while_an_unparseable_grant_exists(
        crd: Cluster, make_gateway, fresh_key: SSHKey, tmp_path: Path) -> None:
    """Hole 2: the object passes the CRD, the parser refuses it; every other change still applies."""
    broken = grant("sg-broken", NS, [], {"app": "web"})
    broken["spec"]["publicKeys"] = [compressed_ecdsa_line()]
    crd.kubectl("apply", "-f", "-", input=json.dumps(broken))
    try:
        gw = make_gateway(grants=None)  # its first full list already holds the broken object

        def marked() -> bool:
            cond = ((crd.get("sshaccess", "-n", NS, "sg-broken").get("status") or {}).get("conditions") or [{}])[0]
            return cond.get("reason") == "InvalidKey" and "malformed" in cond.get("message", "")

        wait_for(marked, timeout=15, what="sg-broken marked InvalidKey")
        # A grant added afterwards applies...
        crd.kubectl("apply", "-f", "-", input=json.dumps(grant("sg-good", NS, [fresh_key], {"app": "web"})))
        wait_for(lambda: _login(gw, fresh_key), timeout=10, what="login with sg-good")
        argv = [*gw.ssh_argv(WEB, fresh_key), "echo started; sleep 300"]
        client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert client.stdout is not None and client.stdout.readline() == b"started\n"
            # ... and so does its deletion: the live session ends, and the key no longer logs in.
            deleted = time.monotonic()
            delete(crd, "sg-good")
            _, err = client.communicate(timeout=15)
            assert time.monotonic() - deleted < 3.0
            assert b"was revoked" in err
        finally:
            client.kill()
        assert not _login(gw, fresh_key)
        assert not [e for e in gw.events() if e.get("event") in ("grant_parser_error", "status_failed")]
    finally:
        delete(crd, "sg-good")
        delete(crd, "sg-broken")


def test_access_file_with_bad_objects_starts_and_serves_the_good_ones(
        workloads: Cluster, make_gateway, fresh_key: SSHKey, tmp_path: Path) -> None:
    other = make_key(tmp_path, "sg-other")
    good = grant("sg-file-good", NS, [fresh_key], {"app": "web"})
    bad = [
        grant("sg-file-digits", NS, [other], {"app": "web"}, limits={"idleTimeout": "9" * 400 + "s"}),
        grant("sg-file-false", NS, [other], {"app": "web"}, allow={"shell": "false", "exec": "false"}),
        grant("sg-file-ecdsa", NS, [], {"app": "web"}, publicKeys=[compressed_ecdsa_line()]),
        grant("sg-file-selector", NS, [other], {}),
        grant("sg-file-pods", NS, [other], {"app": "web"}, pods="x"),
    ]
    gw = make_gateway(grants=[good, *bad])
    ready = gw.events("ready")
    assert ready and ready[-1]["grants"] == 1
    reported = gw.events("access_object_invalid")
    assert sorted(e["object"] for e in reported) == sorted(f"{NS}/{b['metadata']['name']}" for b in bad)
    assert all(e["reason"] in ("InvalidSpec", "InvalidKey") and e["message"] for e in reported)
    assert "Traceback" not in gw.log_path.read_text()
    assert gw.ssh(WEB, "echo served", fresh_key).stdout == b"served\n"
    refused = gw.ssh(WEB, "true", other)
    assert refused.returncode == 255 and b"Permission denied" in refused.stderr
