"""podssh installed with Helm, as the README's Helm path says: the image built from the
Dockerfile, `helm install` of charts/podssh (the helm binary built by hack/lib/build-helm.sh), an
ssh login through the release's Service, and `helm uninstall` keeping the host-key Secret so a
reinstall serves the same host key.

The release lives beside the kustomize install of test_deployment.py (namespace podssh-system):
its own namespace, and its cluster-wide objects named after the release, so neither disturbs
the other. The CRD is shared (Helm installs it only when it is missing and never deletes it)."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import tomllib
from collections.abc import Iterator

import pytest

from tests.conftest import NS
from tests.support.charts import CHART, helm
from tests.support.cluster import REPO, Cluster
from tests.support.gateway import grant, make_key

RELEASE = "podssh-helm"  # contains the chart's name: the objects are named podssh-helm, podssh-helm-…
HELM_NS = "podssh-helm"
SECRET = f"{RELEASE}-hostkeys"
IMAGE_REPOSITORY, IMAGE_TAG = "podssh.local/podssh", "dev"
GATEWAY = "app.kubernetes.io/component=gateway"


def install(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    """The README's command with the locally built image (imported into containerd, never pulled)
    and a NodePort Service (no load balancer here); --wait: until the gateway pods are Ready."""
    return helm("upgrade", "--install", RELEASE, str(CHART), "--namespace", HELM_NS, "--wait", "--timeout", "5m",
                "--set", f"image.repository={IMAGE_REPOSITORY}", "--set", f"image.tag={IMAGE_TAG}",
                "--set", "image.pullPolicy=Never", "--set", "service.type=NodePort",
                env=cluster.env, timeout=400)


def node_port(cluster: Cluster) -> int:
    return int(cluster.get("service", "-n", HELM_NS, RELEASE)["spec"]["ports"][0]["nodePort"])


def host_key(cluster: Cluster) -> str:
    out = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(node_port(cluster)), cluster.node_ip],
                         capture_output=True, text=True, timeout=30).stdout
    return out.split()[-1]


@pytest.fixture(scope="module")
def release(crd: Cluster) -> Iterator[Cluster]:
    cluster = crd
    proc = subprocess.run([str(REPO / "hack" / "build-image")], env=cluster.env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
    # The namespace as manifests/keep/ makes it: Pod Security `restricted` enforced.
    cluster.apply(f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {HELM_NS}
  labels: {{pod-security.kubernetes.io/enforce: restricted}}
""")
    install(cluster)
    yield cluster
    helm("uninstall", RELEASE, "--namespace", HELM_NS, "--wait", env=cluster.env, check=False, timeout=300)
    cluster.kubectl("delete", "namespace", HELM_NS, "--wait=false", check=False)


@pytest.fixture(scope="module")
def login(release: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """An ssh command line with a key of its own, granted shell+exec on the e2e workloads, and the
    host keys pinned from the release's Secret (`podssh known-hosts`), never trusted on first use."""
    home = tmp_path_factory.mktemp("helm-client")
    key = make_key(home, "helm")
    access = grant("helm-login", NS, [key], {"app": "web"}, allow={"shell": True, "exec": True})
    release.apply(json.dumps(access))
    known_hosts = home / "known_hosts"
    port = node_port(release)
    deadline = time.monotonic() + 60
    while True:  # the first replica fills the Secret in moments after it starts
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "podssh"), "known-hosts", "--host", release.node_ip,
                               "--port", str(port), "--secret", f"{HELM_NS}/{SECRET}"],
                              env=release.env, capture_output=True, text=True, timeout=60)
        if proc.returncode == 0 and proc.stdout.strip():
            break
        assert time.monotonic() < deadline, proc.stderr
        time.sleep(1)
    known_hosts.write_text(proc.stdout)
    yield ["ssh", "-p", str(port), "-i", str(key.path), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=10", f"{NS}/deb@{release.node_ip}"]
    release.kubectl("-n", NS, "delete", "sshaccess", "helm-login", "--ignore-not-found")


def ssh(argv: list[str], command: str, attempts: int = 30) -> subprocess.CompletedProcess[str]:
    """Retries while the grant reaches the gateways' snapshot (a refused login exits 255)."""
    for _ in range(attempts):
        proc = subprocess.run([*argv, command], capture_output=True, text=True, timeout=60)
        if proc.returncode != 255:
            return proc
        time.sleep(1)
    return proc


def test_helm_release_runs_the_chart_defaults(release: Cluster) -> None:
    ready = release.wait_ready(HELM_NS, GATEWAY, count=2)
    pod = release.get("pod", "-n", HELM_NS, ready[0])
    container = pod["spec"]["containers"][0]
    assert container["image"] == f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
    assert pod["spec"]["serviceAccountName"] == RELEASE
    assert f"--host-key-secret=$(POD_NAMESPACE)/{SECRET}" in container["args"]
    status = json.loads(helm("status", RELEASE, "--namespace", HELM_NS, "-o", "json", env=release.env).stdout)
    assert status["info"]["status"] == "deployed"


def test_ssh_login_through_the_helm_release(login: list[str]) -> None:
    proc = ssh(login, "echo helm-ok; cat /etc/debian_version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("helm-ok\n")


def test_doctor_checks_the_release_under_its_own_names(release: Cluster, login: list[str]) -> None:
    """`podssh doctor --namespace --name` finds the release's objects (podssh-helm-…), its
    ServiceAccount's rights, its host keys and the login key's grant."""
    key = login[login.index("-i") + 1] + ".pub"
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "podssh"), "doctor", "--kubeconfig", release.kubeconfig,
                           "--namespace", HELM_NS, "--name", RELEASE, "--address",
                           f"{release.node_ip}:{node_port(release)}", "--key", key],
                          env=release.env, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, (lines, proc.stderr)
    assert not [x for x in lines if not x.startswith("OK ")], lines
    text = proc.stdout
    assert f"OK   admission policy {RELEASE}-grantor-holds-exec: installed and bound (Deny)" in text
    assert f"OK   gateway RBAC (serviceaccount {HELM_NS}/{RELEASE}): holds the " in text
    assert f"OK   host keys (secret {HELM_NS}/{SECRET}): ssh-ed25519 SHA256:" in text
    assert f": 1 grant(s) in force, namespace(s) {NS}: {NS}/helm-login (user helm-login, " in text


def test_the_image_carries_its_labels_and_no_pip(release: Cluster) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    info = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"],
                                     capture_output=True, text=True, check=True, timeout=60).stdout)
    labels = info["OCIv1"]["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    pod = release.wait_ready(HELM_NS, GATEWAY)[0]
    listing = release.kubectl("-n", HELM_NS, "exec", pod, "-c", "gateway", "--", "python3", "-c",
                              "import importlib.util as u; print([m for m in ('pip', 'setuptools')"
                              " if u.find_spec(m)]); import importlib.metadata as md; print(md.version('podssh'))")
    found, installed = listing.stdout.splitlines()
    assert found == "[]"  # neither pip nor setuptools importable by the gateway's Python
    assert installed == version


def test_uninstall_keeps_the_host_key_secret_and_a_reinstall_serves_the_same_key(
        release: Cluster, login: list[str]) -> None:
    before = release.get("secret", "-n", HELM_NS, SECRET)
    assert before["data"], "the gateway filled in no host keys"
    key = host_key(release)

    helm("uninstall", RELEASE, "--namespace", HELM_NS, "--wait", env=release.env, timeout=300)
    after = release.get("secret", "-n", HELM_NS, SECRET)
    assert after["data"] == before["data"]
    assert release.kubectl("-n", HELM_NS, "get", "deployment", RELEASE, check=False).returncode != 0
    assert release.kubectl("get", "clusterrole", f"{RELEASE}-gateway", check=False).returncode != 0
    assert {k: base64.b64decode(v) for k, v in after["data"].items()}  # real keys, not placeholders

    install(release)  # adopts the kept Secret: same release name and namespace
    release.wait_ready(HELM_NS, GATEWAY, count=2)
    assert release.get("secret", "-n", HELM_NS, SECRET)["data"] == before["data"]
    assert host_key(release) == key
    # The new Service may have another node port; the pinned known_hosts must still match.
    again = [*login]
    old_port = again[again.index("-p") + 1]
    again[again.index("-p") + 1] = str(node_port(release))
    again[1:1] = ["-o", f"HostKeyAlias=[{release.node_ip}]:{old_port}"]  # the entry pinned before
    proc = ssh(again, "echo again")
    assert proc.returncode == 0 and proc.stdout == "again\n", proc.stderr
