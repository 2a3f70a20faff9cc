"""`podssh doctor`, run through `main` against a stand-in API server over HTTP (the real kubernetes
client makes the real requests): a healthy installation is all OK and exit 0; each check fails
on its own fault with one line and a fix, and the exit status is then 1; an unreachable API server
or a missing kubeconfig is one FAIL line, never a traceback. The healthy cluster's CRDs and
policies are the ones in manifests/, and the rights asked for are the ones manifests/rbac.yaml grants."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sshoperator.cli import main
from sshoperator.doctor import Install, Result, Status, check_address, gateway_rights, parse_address, server_release

from sshserver.grants.keys import fingerprint
from tests.support.fakeapiserver import REVIEWS, FakeApiServer, status_body
from tests.support.inproc import closed_port, running_gateway

from .conftest import sshaccess, stamp

REPO = Path(__file__).resolve().parents[3]
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
VAPS = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
BINDINGS = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
SECRET = "/api/v1/namespaces/podssh-system/secrets/podssh-hostkeys"
SERVICE = "/api/v1/namespaces/podssh-system/services/podssh"
GRANTS = "/apis/podssh.dev/v1alpha1/sshaccesses"
SA_USER = "system:serviceaccount:podssh-system:podssh"


def _manifests(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "manifests" / name).read_text()) if d]


def _host_key_pem(kind: str) -> bytes:
    key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def _secret(data: dict[str, bytes]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "podssh-hostkeys", "namespace": "podssh-system"},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


@pytest.fixture(scope="module")
def host_keys() -> dict[str, bytes]:
    return {"ssh_host_ed25519_key": _host_key_pem("ed25519"), "ssh_host_ecdsa_key": _host_key_pem("ecdsa")}


@pytest.fixture
def api(host_keys: dict[str, bytes]) -> Iterator[FakeApiServer]:
    """A cluster where podssh is installed as manifests/ installs it, and the gateway has started."""
    with FakeApiServer() as fake:
        fake.put("/version", {"major": "1", "minor": "33", "gitVersion": "v1.33.13"})
        for crd in _manifests("crd.yaml"):
            crd["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
            fake.put(f"{CRDS}/{crd['metadata']['name']}", crd)
        for doc in _manifests("admission-policy.yaml"):
            base = VAPS if doc["kind"] == "ValidatingAdmissionPolicy" else BINDINGS
            fake.put(f"{base}/{doc['metadata']['name']}", doc)
        fake.put(SECRET, _secret(host_keys))
        fake.put(GRANTS, {"apiVersion": "podssh.dev/v1alpha1", "kind": "SSHAccessList", "items": []})
        yield fake


def doctor(api: FakeApiServer | None, tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    """Runs `podssh doctor` with a kubeconfig naming the fake API; (exit status, output lines)."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig") if api else str(tmp_path / "none")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["doctor", "--kubeconfig", kubeconfig, *args])
    return code, out.getvalue().splitlines()


def line(lines: list[str], what: str) -> str:
    found = [x for x in lines if x[5:].startswith(what)]
    assert len(found) == 1, (what, lines)
    return found[0]


def _keygen_fp(tmp_path: Path, host_keys: dict[str, bytes], name: str) -> str:
    """The key's fingerprint as `ssh-keygen -lf` prints it."""
    path = tmp_path / name
    path.write_bytes(host_keys[name])
    path.chmod(0o600)
    out = subprocess.run(["ssh-keygen", "-lf", str(path)], capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def test_a_healthy_installation_is_all_ok(api: FakeApiServer, tmp_path: Path, host_keys: dict[str, bytes]) -> None:
    code, lines = doctor(api, tmp_path)
    assert code == 0, lines
    assert line(lines, "CRD sshaccesses.podssh.dev") == "OK   CRD sshaccesses.podssh.dev: serves podssh.dev/v1alpha1"
    assert line(lines, "CRD sshsessions.podssh.dev").startswith("OK ")
    assert line(lines, "admission policy podssh-grantor-holds-exec").startswith("OK ")
    assert line(lines, "admission policy podssh-sessions-written-by-gateway").startswith("OK ")
    rbac = line(lines, "gateway RBAC (serviceaccount podssh-system/podssh)")
    assert rbac.startswith("OK ") and f"the {len(gateway_rights(Install()))} rights" in rbac
    keys = line(lines, "host keys (secret podssh-system/podssh-hostkeys)")
    ed, ecd = (_keygen_fp(tmp_path, host_keys, f"ssh_host_{k}_key") for k in ("ed25519", "ecdsa"))
    assert keys == f"OK   host keys (secret podssh-system/podssh-hostkeys): ssh-ed25519 {ed}, ecdsa-sha2-nistp256 {ecd}"
    assert line(lines, "exec protocol v5.channel.k8s.io") == \
        "OK   exec protocol v5.channel.k8s.io: the API server is v1.33.13"
    assert line(lines, "gateway reachability").startswith("SKIP ")  # no --address, no Service
    assert not any(x.startswith(("FAIL", "WARN")) for x in lines)


def test_the_rbac_check_asks_for_the_service_account_with_its_groups(api: FakeApiServer, tmp_path: Path) -> None:
    doctor(api, tmp_path)
    specs = [b["spec"] for b in api.bodies("POST", REVIEWS)]
    assert {s["user"] for s in specs} == {SA_USER}
    assert specs[0]["groups"] == ["system:serviceaccounts", "system:serviceaccounts:podssh-system",
                                  "system:authenticated"]
    attributes = [s["resourceAttributes"] for s in specs]
    assert {"verb": "create", "resource": "pods", "group": "", "subresource": "exec"} in attributes
    assert {"verb": "get", "resource": "secrets", "group": "", "namespace": "podssh-system",
            "name": "podssh-hostkeys"} in attributes
    assert {"verb": "publish", "resource": "sshsessions", "group": "podssh.dev"} in attributes


def test_the_rights_asked_for_are_those_manifests_rbac_grants() -> None:
    """So that a right added to the manifests (or dropped) is noticed here."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _manifests("rbac.yaml")}
    granted = set()
    for (kind, name), namespace in ((("ClusterRole", "podssh-gateway"), ""), (("Role", "podssh-hostkeys"), "x"),
                                    (("Role", "podssh-replica-leases"), "x")):
        for rule in docs[(kind, name)]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for res_name in rule.get("resourceNames") or [""]:
                            granted.add((verb, group, resource, namespace, res_name))
    rights = gateway_rights(Install(namespace="x"))
    asked = {(r.verb, r.group, f"{r.resource}/{r.subresource}" if r.subresource else r.resource, r.namespace, r.name)
             for r in rights}
    assert asked == granted
    assert len(asked) == len(rights)


def test_a_missing_crd_fails_with_the_install_command(api: FakeApiServer, tmp_path: Path) -> None:
    api.forget(f"{CRDS}/sshsessions.podssh.dev")
    code, lines = doctor(api, tmp_path)
    assert code == 1
    assert line(lines, "CRD sshsessions.podssh.dev") == \
        "FAIL CRD sshsessions.podssh.dev: not installed — fix: kubectl apply -k manifests/ " \
        "(Helm: helm upgrade --install podssh charts/podssh)"
    assert line(lines, "CRD sshaccesses.podssh.dev").startswith("OK ")


def test_a_crd_serving_another_version_fails(api: FakeApiServer, tmp_path: Path) -> None:
    crd = _manifests("crd.yaml")[0]
    crd["spec"]["versions"][0]["name"] = "v1beta1"
    crd["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
    api.put(f"{CRDS}/sshaccesses.podssh.dev", crd)
    code, lines = doctor(api, tmp_path)
    assert code == 1
    assert "serves v1beta1, not v1alpha1" in line(lines, "CRD sshaccesses.podssh.dev")


def test_a_crd_not_established_fails(api: FakeApiServer, tmp_path: Path) -> None:
    crd = _manifests("crd.yaml")[0]
    crd["status"] = {"conditions": [{"type": "Established", "status": "False", "message": "names conflict"}]}
    api.put(f"{CRDS}/sshaccesses.podssh.dev", crd)
    code, lines = doctor(api, tmp_path)
    assert code == 1
    assert line(lines, "CRD sshaccesses.podssh.dev").startswith("FAIL CRD sshaccesses.podssh.dev: not established: "
                                                                "names conflict")


def test_a_missing_policy_binding_fails(api: FakeApiServer, tmp_path: Path) -> None:
    api.forget(f"{BINDINGS}/podssh-grantor-holds-exec")
    code, lines = doctor(api, tmp_path)
    assert code == 1
    assert "not installed: nothing stops users from granting access" in \
        line(lines, "admission policy podssh-grantor-holds-exec")
    assert line(lines, "admission policy podssh-sessions-written-by-gateway").startswith("OK ")


def test_a_binding_that_only_audits_fails(api: FakeApiServer, tmp_path: Path) -> None:
    binding = next(d for d in _manifests("admission-policy.yaml") if d["kind"] == "ValidatingAdmissionPolicyBinding")
    binding["spec"]["validationActions"] = ["Audit"]
    api.put(f"{BINDINGS}/podssh-grantor-holds-exec", binding)
    code, lines = doctor(api, tmp_path)
    assert code == 1
    assert "its binding does not deny" in line(lines, "admission policy podssh-grantor-holds-exec")


def test_an_api_server_without_admission_policies_fails_naming_the_release(api: FakeApiServer, tmp_path: Path) -> None:
    for name in Install().policies:
        api.put(f"{VAPS}/{name}", status_body(404, "the server could not find the requested resource"), status=404)
    code, lines = doctor(api, tmp_path)
    assert code == 1
    policy = line(lines, "admission policy podssh-grantor-holds-exec")
    assert "does not serve admissionregistration.k8s.io/v1 ValidatingAdmissionPolicies" in policy
    assert policy.endswith("— fix: Kubernetes 1.30 or later")


def test_each_missing_right_is_one_fail_line(api: FakeApiServer, tmp_path: Path) -> None:
    denied = {("create", "exec"), ("publish", "")}
    api.authorize = lambda spec: (spec["resourceAttributes"]["verb"],
                                  spec["resourceAttributes"].get("subresource", "")) not in denied
    code, lines = doctor(api, tmp_path)
    assert code == 1
    rbac = [x for x in lines if "gateway RBAC" in x]
    assert rbac == [
        "FAIL gateway RBAC (serviceaccount podssh-system/podssh): may not create pods/exec (all namespaces) — fix: "
        "apply ClusterRole podssh-gateway and its binding: kubectl apply -k manifests/ "
        "(Helm: helm upgrade --install podssh charts/podssh)",
        "FAIL gateway RBAC (serviceaccount podssh-system/podssh): may not publish sshsessions.podssh.dev "
        "(all namespaces) — fix: apply ClusterRole podssh-gateway and its binding: kubectl apply -k manifests/ "
        "(Helm: helm upgrade --install podssh charts/podssh)",
    ]


def test_a_missing_namespaced_right_names_its_role(api: FakeApiServer, tmp_path: Path) -> None:
    api.authorize = lambda spec: spec["resourceAttributes"].get("name") != "podssh-hostkeys"
    code, lines = doctor(api, tmp_path)
    assert code == 1
    rbac = [x for x in lines if "gateway RBAC" in x]
    assert len(rbac) == 2
    assert "may not get secrets podssh-hostkeys in podssh-system" in rbac[0] and "Role podssh-hostkeys" in rbac[0]
    assert "may not update secrets podssh-hostkeys" in rbac[1]


def test_other_names_are_asked_for_with_the_flags(api: FakeApiServer, tmp_path: Path) -> None:
    doctor(api, tmp_path, "--namespace", "ops", "--name", "team-podssh", "--service-account", "gw")
    specs = [b["spec"] for b in api.bodies("POST", REVIEWS)]
    assert {s["user"] for s in specs} == {"system:serviceaccount:ops:gw"}
    assert {s["resourceAttributes"].get("name") for s in specs} == {None, "team-podssh-hostkeys"}
    assert ("GET", f"{VAPS}/team-podssh-grantor-holds-exec") in api.calls()
    assert ("GET", "/api/v1/namespaces/ops/secrets/team-podssh-hostkeys") in api.calls()


def test_a_user_who_may_not_review_gets_a_warning_not_a_failure(api: FakeApiServer, tmp_path: Path) -> None:
    api.put(REVIEWS, status=403, method="POST")
    code, lines = doctor(api, tmp_path)
    assert code == 0, lines
    assert line(lines, "gateway RBAC").startswith("WARN gateway RBAC (serviceaccount podssh-system/podssh): cannot "
                                                  "check (Forbidden (fake))")


def test_a_missing_host_key_secret_fails(api: FakeApiServer, tmp_path: Path) -> None:
    api.forget(SECRET)
    code, lines = doctor(api, tmp_path)
    assert code == 1
    assert line(lines, "host keys") == "FAIL host keys (secret podssh-system/podssh-hostkeys): no such Secret — fix: " \
        "kubectl apply -k manifests/keep/ (an empty Secret: the first gateway replica fills it in)"


def test_an_empty_host_key_secret_fails(api: FakeApiServer, tmp_path: Path) -> None:
    api.put(SECRET, _secret({}))
    code, lines = doctor(api, tmp_path)
    assert code == 1
    keys = line(lines, "host keys")
    assert "lacks ssh_host_ed25519_key, ssh_host_ecdsa_key" in keys
    assert "rollout status deploy/podssh" in keys


def test_an_unparseable_host_key_fails(api: FakeApiServer, tmp_path: Path, host_keys: dict[str, bytes]) -> None:
    api.put(SECRET, _secret({**host_keys, "ssh_host_ecdsa_key": b"-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n"}))
    code, lines = doctor(api, tmp_path)
    assert code == 1
    assert line(lines, "host keys").startswith("FAIL host keys (secret podssh-system/podssh-hostkeys): host key "
                                               "ssh_host_ecdsa_key cannot be loaded")


@pytest.mark.parametrize(("version", "status"), [
    ({"major": "1", "minor": "29", "gitVersion": "v1.29.4"}, "FAIL"),
    ({"major": "1", "minor": "30", "gitVersion": "v1.30.0"}, "OK"),
    ({"major": "1", "minor": "31+", "gitVersion": "v1.31.2-eks-7f9249a"}, "OK"),
    ({"major": "1", "minor": "28+"}, "FAIL"),
    ({"major": "", "minor": "", "gitVersion": "custom"}, "WARN"),
])
def test_the_exec_protocol_follows_the_api_servers_release(api: FakeApiServer, tmp_path: Path,
                                                           version: dict[str, str], status: str) -> None:
    api.put("/version", version)
    code, lines = doctor(api, tmp_path)
    assert code == (1 if status == "FAIL" else 0)
    assert line(lines, "exec protocol v5.channel.k8s.io").startswith(status)
    if status == "FAIL":
        assert line(lines, "exec protocol").endswith("— fix: Kubernetes 1.30 or later")


def test_server_release_reads_git_version_before_minor() -> None:
    assert server_release({"gitVersion": "v1.33.13", "minor": "9"}) == (1, 33)
    assert server_release({"major": "1", "minor": "30+"}) == (1, 30)
    assert server_release({}) is None


def test_an_unreachable_api_server_is_one_fail_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{closed_port()}"}}],
        "users": [{"name": "u", "user": {}}], "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["doctor", "--kubeconfig", str(kubeconfig)])
    assert code == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("FAIL Kubernetes API server: cannot reach the Kubernetes API server (")
    assert lines[0].endswith("— fix: check --kubeconfig and --context (kubectl cluster-info)")


def test_refused_credentials_are_one_fail_line(api: FakeApiServer, tmp_path: Path) -> None:
    api.put("/version", status=401)
    code, lines = doctor(api, tmp_path)
    assert code == 1
    assert lines == ["FAIL Kubernetes API server: refused the request (Unauthorized (fake)) — fix: check your "
                     "credentials: kubectl --context CONTEXT get --raw /version"]


def test_a_missing_kubeconfig_is_one_fail_line(tmp_path: Path) -> None:
    code, lines = doctor(None, tmp_path)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(f"FAIL Kubernetes configuration: {tmp_path / 'none'}: ")
    assert lines[0].endswith("— fix: pass --kubeconfig FILE (and --context NAME), or set KUBECONFIG")


def test_a_server_error_fails_its_check_and_the_others_still_run(api: FakeApiServer, tmp_path: Path) -> None:
    api.put(f"{CRDS}/sshaccesses.podssh.dev", status=500)
    code, lines = doctor(api, tmp_path)
    assert code == 1
    assert line(lines, "CRD sshaccesses.podssh.dev") == "FAIL CRD sshaccesses.podssh.dev: InternalError (fake)"
    assert line(lines, "host keys").startswith("OK ")


# Reachability ----------------------------------------------------------------------------------


def test_a_gateway_at_the_address_answers_with_its_version_line(api: FakeApiServer, tmp_path: Path) -> None:
    with running_gateway([]) as gw:
        port = gw.port
        code, lines = doctor(api, tmp_path, "--address", f"127.0.0.1:{port}")
    assert code == 0, lines
    assert line(lines, "gateway at") == f"OK   gateway at 127.0.0.1:{port}: answers SSH-2.0-OpenSSH_podssh"


def test_an_address_where_nothing_listens_fails(api: FakeApiServer, tmp_path: Path) -> None:
    port = closed_port()
    code, lines = doctor(api, tmp_path, "--address", f"127.0.0.1:{port}")
    assert code == 1
    assert line(lines, f"gateway at 127.0.0.1:{port}").startswith(f"FAIL gateway at 127.0.0.1:{port}: ")
    assert "Connection refused" in line(lines, "gateway at")


def test_a_listener_that_says_nothing_fails_after_the_timeout() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        result = check_address("127.0.0.1", port, timeout=0.3)
    assert result.status is Status.FAIL
    assert result.line().startswith(f"FAIL gateway at 127.0.0.1:{port}: no SSH version line within 0.3s — fix:")


def test_a_listener_that_speaks_http_fails() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def answer() -> None:
            conn, _ = server.accept()
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

        threading.Thread(target=answer, daemon=True).start()
        result = check_address("127.0.0.1", server.getsockname()[1], timeout=2)
    assert result.status is Status.FAIL and "closed without an SSH version line" in result.why


def test_the_version_line_reaches_the_terminal_without_its_control_characters() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def answer() -> None:
            conn, _ = server.accept()
            conn.sendall(b"SSH-2.0-evil\x1b]0;owned\x07\x1b[2J\rFAKE OK\x9b\r\n")
            conn.recv(1)
            conn.close()

        threading.Thread(target=answer, daemon=True).start()
        result = check_address("127.0.0.1", server.getsockname()[1], timeout=2)
    assert result.status is Status.OK
    assert result.why == "answers SSH-2.0-evil ]0;owned  [2J FAKE OK\ufffd"  # a byte above 127: replaced
    assert result.line().isprintable()
    # and whatever else from the cluster a result carries (an API message, a condition)
    assert Result(Status.FAIL, "grant", "bad\x1b[2J\nnews").line() == "FAIL grant: bad [2J news"


def _service(kind: str, ingress: list[dict[str, str]] | None = None, node_port: int | None = None) -> dict[str, Any]:
    port: dict[str, Any] = {"name": "ssh", "port": 22, "targetPort": "ssh"}
    if node_port:
        port["nodePort"] = node_port
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podssh", "namespace": "podssh-system"},
            "spec": {"type": kind, "ports": [port]}, "status": {"loadBalancer": {"ingress": ingress or []}}}


def test_without_an_address_the_load_balancers_address_is_named(api: FakeApiServer, tmp_path: Path) -> None:
    api.put(SERVICE, _service("LoadBalancer", [{"ip": "203.0.113.7"}], node_port=31022))
    code, lines = doctor(api, tmp_path)
    assert code == 0
    assert line(lines, "gateway Service") == (
        "OK   gateway Service podssh-system/podssh: clients would use 203.0.113.7:22 (its load balancer); "
        "not connected: try podssh doctor --address 203.0.113.7:22")


def test_without_a_load_balancer_address_the_node_port_is_named(api: FakeApiServer, tmp_path: Path) -> None:
    api.put(SERVICE, _service("LoadBalancer", node_port=30022))
    api.put("/api/v1/nodes", {"items": [{"status": {"addresses": [{"type": "Hostname", "address": "n1"},
                                                                  {"type": "InternalIP", "address": "10.0.0.5"}]}}]})
    code, lines = doctor(api, tmp_path)
    assert code == 0
    assert "clients would use 10.0.0.5:30022 (its NodePort on any node)" in line(lines, "gateway Service")


def test_a_cluster_ip_service_is_a_warning(api: FakeApiServer, tmp_path: Path) -> None:
    api.put(SERVICE, _service("ClusterIP"))
    code, lines = doctor(api, tmp_path)
    assert code == 0
    assert line(lines, "gateway Service").startswith("WARN gateway Service podssh-system/podssh: type ClusterIP "
                                                     "without an external address")


@pytest.mark.parametrize(("text", "address"), [
    ("gw.example.com", ("gw.example.com", 22)), ("10.0.0.1:2222", ("10.0.0.1", 2222)),
    ("[::1]:2200", ("::1", 2200)), ("[fe80::1]", ("fe80::1", 22)),
])
def test_addresses_take_an_optional_port(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["", "::1", "host:99999", "host:port", "a b"])
def test_a_bad_address_is_a_usage_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["doctor", "--address", text])
    assert exited.value.code == 2
    assert "--address" in capsys.readouterr().err


# A key's grants -----------------------------------------------------------------------------------


def _key_file(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "id.pub"
    path.write_text(line + "\n")
    return path


def test_a_granted_key_gets_its_grants_and_namespaces(api: FakeApiServer, tmp_path: Path, pubkey: str,
                                                      other_pubkey: str) -> None:
    b = sshaccess(pubkey, name="bob", allow={"exec": True, "sftp": True, "portForward": [8080]})
    b["metadata"]["namespace"] = "shop-b"
    api.put(GRANTS, {"items": [sshaccess(pubkey), b, sshaccess(other_pubkey, name="other")]})
    code, lines = doctor(api, tmp_path, "--key", str(_key_file(tmp_path, pubkey)))
    assert code == 0, lines
    fp = fingerprint(base64.b64decode(pubkey.split()[1]))
    assert line(lines, f"key {fp}") == (
        f"OK   key {fp}: 2 grant(s) in force, namespace(s) shop, shop-b: "
        "shop/alice (user alice, pods app=web, shell+exec); shop-b/bob (user bob, pods app=web, exec+sftp+port 8080)")


def test_a_key_without_grants_fails(api: FakeApiServer, tmp_path: Path, pubkey: str, other_pubkey: str) -> None:
    api.put(GRANTS, {"items": [sshaccess(other_pubkey, name="other")]})
    code, lines = doctor(api, tmp_path, "--key", str(_key_file(tmp_path, pubkey)))
    assert code == 1
    fp = fingerprint(base64.b64decode(pubkey.split()[1]))
    assert line(lines, f"key {fp}") == (
        f"FAIL key {fp}: no grant in force for this key — fix: podssh grant --user NAME --key FILE -n NAMESPACE "
        "-l LABELS | kubectl apply -f -")


def test_an_expired_or_invalid_grant_of_the_key_is_named(api: FakeApiServer, tmp_path: Path, pubkey: str) -> None:
    expired = sshaccess(pubkey, name="old", expiresAt=stamp(datetime.now(UTC) - timedelta(hours=1)))
    broken = sshaccess(pubkey, name="broken", pods={"selector": {}})
    api.put(GRANTS, {"items": [expired, broken]})
    code, lines = doctor(api, tmp_path, "--key", str(_key_file(tmp_path, pubkey)))
    assert code == 1
    why = line(lines, "key SHA256:")
    assert "no grant in force for this key (shop/old lists it but is not in force now; " in why
    assert "shop/broken lists it but is invalid (" in why


def test_a_certificate_gets_the_grants_of_its_ca_for_its_principal(api: FakeApiServer, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "user")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "alice", "-n", "alice", "-V", "-5m:+1h",
                    str(tmp_path / "user.pub")], check=True)
    ca = (tmp_path / "ca.pub").read_text().strip()
    grant = sshaccess(ca, certificateAuthorities=[ca])
    del grant["spec"]["publicKeys"]
    other = sshaccess(ca, name="carol", certificateAuthorities=[ca])  # principal carol: not this certificate's
    del other["spec"]["publicKeys"]
    api.put(GRANTS, {"items": [grant, other]})
    code, lines = doctor(api, tmp_path, "--key", str(tmp_path / "user-cert.pub"))
    assert code == 0, lines
    assert "1 grant(s) in force, namespace(s) shop: shop/alice (user alice" in line(lines, "key SHA256:")


def test_a_private_key_or_missing_file_fails_without_asking_the_cluster(api: FakeApiServer, tmp_path: Path) -> None:
    private = tmp_path / "id"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n")
    code, lines = doctor(api, tmp_path, "--key", str(private))
    assert code == 1
    assert line(lines, f"key {private}").startswith(f"FAIL key {private}: {private} is a private key: pass the .pub")
    code, lines = doctor(api, tmp_path, "--key", str(tmp_path / "absent.pub"))
    assert code == 1
    assert "cannot read" in line(lines, "key ") and "No such file" in line(lines, "key ")
    assert ("GET", GRANTS) not in api.calls()


def test_a_user_who_may_not_list_grants_gets_a_warning(api: FakeApiServer, tmp_path: Path, pubkey: str) -> None:
    api.put(GRANTS, status=403)
    code, lines = doctor(api, tmp_path, "--key", str(_key_file(tmp_path, pubkey)))
    assert code == 0
    assert line(lines, "key SHA256:").startswith("WARN ")


def test_an_answer_of_an_unexpected_shape_is_a_fail_line_not_a_traceback(api: FakeApiServer, tmp_path: Path) -> None:
    api.put(f"{CRDS}/sshaccesses.podssh.dev", ["not", "an", "object"])
    code, lines = doctor(api, tmp_path)
    assert code == 1
    assert line(lines, "CRD sshaccesses.podssh.dev").startswith("FAIL CRD sshaccesses.podssh.dev: unexpected ")
    assert line(lines, "CRD sshsessions.podssh.dev").startswith("OK ")


def test_a_malformed_kubeconfig_is_one_fail_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("clusters: [not closed\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["doctor", "--kubeconfig", str(kubeconfig)])
    assert code == 1
    assert out.getvalue().splitlines() == [
        f"FAIL Kubernetes configuration: {kubeconfig}: while parsing a flow sequence — fix: pass --kubeconfig FILE "
        "(and --context NAME), or set KUBECONFIG"]


def test_something_that_is_no_api_server_is_one_fail_line(api: FakeApiServer, tmp_path: Path) -> None:
    api.put("/version", ["a", "list"])
    code, lines = doctor(api, tmp_path)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("FAIL Kubernetes API server: unexpected answer to /version (")
