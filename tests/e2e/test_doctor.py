"""`podssh doctor` run from this machine against the local cluster with podssh installed the way
users install it (hack/demo: manifests/ applied, the gateway running as its ServiceAccount, its
host keys in the Secret, its NodePort): the installation checks are all OK, the host keys it
reports are the ones the gateway serves, a key without a grant FAILs (exit 1) and the demo's
granted key is OK with its grant."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.cluster import REPO, Cluster
from tests.support.gateway import PODSSH, make_key

GW_NS = "podssh-system"
NODE_PORT = 30022  # hack/kustomize/local's nodePort of the gateway Service


@pytest.fixture(scope="module")
def demo_key(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`hack/demo up` (harmless when it ran before): podssh deployed from manifests/ and the grant
    demo/demo (shell, exec, sftp on the pods app=web of namespace demo) for a key of this module's."""
    home = tmp_path_factory.mktemp("doctor-home")
    env = dict(cluster.env, PODSSH_DEMO_KEY=str(home / "id_demo"))
    proc = subprocess.run([str(REPO / "hack" / "demo"), "up"], env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home / "id_demo.pub"


def doctor(cluster: Cluster, *args: str) -> tuple[int, list[str]]:
    proc = subprocess.run([PODSSH, "doctor", "--kubeconfig", cluster.kubeconfig,
                           "--address", f"{cluster.node_ip}:{NODE_PORT}", *args],
                          env=cluster.env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout.splitlines()


def line(lines: list[str], what: str) -> str:
    found = [x for x in lines if x[5:].startswith(what)]
    assert len(found) == 1, (what, lines)
    return found[0]


def served_fingerprints(cluster: Cluster) -> set[str]:
    """The SHA256 fingerprints of the host keys the gateway presents on its NodePort."""
    scan = subprocess.run(["ssh-keyscan", "-p", str(NODE_PORT), cluster.node_ip], capture_output=True, text=True,
                          timeout=30).stdout
    listed = subprocess.run(["ssh-keygen", "-lf", "-"], input=scan, capture_output=True, text=True, timeout=30).stdout
    return {word for word in listed.split() if word.startswith("SHA256:")}


def test_the_installation_is_all_ok(cluster: Cluster, demo_key: Path) -> None:
    code, lines = doctor(cluster)
    assert code == 0, lines
    assert line(lines, "CRD sshaccesses.podssh.dev") == "OK   CRD sshaccesses.podssh.dev: serves podssh.dev/v1alpha1"
    assert line(lines, "CRD sshsessions.podssh.dev") == "OK   CRD sshsessions.podssh.dev: serves podssh.dev/v1alpha1"
    for policy in ("podssh-grantor-holds-exec", "podssh-sessions-written-by-gateway"):
        assert line(lines, f"admission policy {policy}") == \
            f"OK   admission policy {policy}: installed and bound (Deny)"
    assert line(lines, "gateway RBAC").startswith(f"OK   gateway RBAC (serviceaccount {GW_NS}/podssh): holds the ")
    assert line(lines, "exec protocol v5.channel.k8s.io").startswith("OK ")
    assert line(lines, "gateway at").startswith(f"OK   gateway at {cluster.node_ip}:{NODE_PORT}: answers SSH-2.0-")
    assert not [x for x in lines if not x.startswith("OK ")], lines


def test_the_host_keys_reported_are_the_ones_the_gateway_serves(cluster: Cluster, demo_key: Path) -> None:
    _, lines = doctor(cluster)
    keys = line(lines, f"host keys (secret {GW_NS}/podssh-hostkeys)")
    assert keys.startswith("OK ")
    served = served_fingerprints(cluster)
    assert len(served) == 2, served  # ed25519 and ecdsa
    assert all(fp in keys for fp in served), (keys, served)


def test_a_key_without_a_grant_fails(cluster: Cluster, demo_key: Path, tmp_path: Path) -> None:
    key = make_key(tmp_path, "nobody")
    code, lines = doctor(cluster, "--key", str(key.path.with_suffix(".pub")))
    assert code == 1, lines
    failed = [x for x in lines if x.startswith("FAIL")]
    assert len(failed) == 1, lines
    assert failed[0].startswith("FAIL key SHA256:")
    assert ": no grant in force for this key — fix: podssh grant " in failed[0]


def test_the_demo_key_is_ok_with_its_grant(cluster: Cluster, demo_key: Path) -> None:
    code, lines = doctor(cluster, "--key", str(demo_key))
    assert code == 0, lines
    granted = line(lines, "key SHA256:")
    assert granted.startswith("OK ")
    assert "namespace(s) demo: " in granted
    assert "demo/demo (user " in granted and "pods app=web, shell+exec+sftp)" in granted
