"""Host keys without trust on first use: the Secret shipped empty and filled by the first replica
(get/update only, optimistic concurrency), known_hosts lines and the ssh_config that pins them,
and the manifests that keep the Secret out of `kubectl delete -k manifests/`."""

from __future__ import annotations

import base64
import copy
import subprocess
from pathlib import Path

import paramiko
import pytest
import yaml
from kubernetes.client import V1ObjectMeta, V1Secret
from kubernetes.client.exceptions import ApiException
from sshoperator.cli import main
from sshoperator.manifests import ssh_config

from sshserver.ssh import hostcerts, hostkeys

REPO = Path(__file__).resolve().parents[3]


class FakeSecrets:
    """The Secret API with resourceVersion conflicts; `forbid_create` mimics the manifests' RBAC."""

    def __init__(self, secret: V1Secret | None = None, forbid_create: bool = True) -> None:
        self.secret = secret
        self.forbid_create = forbid_create
        self.version = 1
        self.before_replace = None  # lets a test sneak in another replica's write
        self.created = self.replaced = 0

    def read_namespaced_secret(self, name: str, namespace: str) -> V1Secret:
        if self.secret is None:
            raise ApiException(status=404, reason="Not Found")
        s = copy.deepcopy(self.secret)
        s.metadata.resource_version = str(self.version)
        return s

    def create_namespaced_secret(self, namespace: str, body: V1Secret) -> None:
        if self.forbid_create:
            raise ApiException(status=403, reason="Forbidden")
        if self.secret is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        self.secret, self.created = copy.deepcopy(body), self.created + 1

    def replace_namespaced_secret(self, name: str, namespace: str, body: V1Secret) -> None:
        if self.before_replace is not None:
            self.before_replace, hook = None, self.before_replace
            hook()
        if body.metadata.resource_version != str(self.version):
            raise ApiException(status=409, reason="Conflict")
        self.secret, self.version, self.replaced = copy.deepcopy(body), self.version + 1, self.replaced + 1


def empty_secret() -> V1Secret:
    return V1Secret(metadata=V1ObjectMeta(name="podssh-hostkeys", namespace="podssh-system"), type="Opaque")


def blobs(keys: list[paramiko.PKey]) -> list[bytes]:
    return [k.asbytes() for k in keys]


def test_the_empty_secret_is_filled_once_and_then_read() -> None:
    api = FakeSecrets(empty_secret())
    first = hostkeys.from_secret(api, "podssh-system", "podssh-hostkeys")
    assert api.replaced == 1 and api.created == 0
    assert set(api.secret.data) == set(hostkeys.KEY_NAMES)
    assert not api.secret.metadata.owner_references  # nothing garbage-collects it
    again = hostkeys.from_secret(api, "podssh-system", "podssh-hostkeys")
    assert blobs(again) == blobs(first) and api.replaced == 1
    assert blobs(hostkeys.read_secret(api, "podssh-system", "podssh-hostkeys")) == blobs(first)


def test_two_replicas_filling_at_once_end_with_the_same_keys() -> None:
    api = FakeSecrets(empty_secret())
    other = FakeSecrets(empty_secret())
    theirs = hostkeys.from_secret(other, "ns", "n")  # what the other replica writes first

    def race() -> None:
        api.secret, api.version = copy.deepcopy(other.secret), api.version + 1

    api.before_replace = race
    mine = hostkeys.from_secret(api, "ns", "n")
    assert blobs(mine) == blobs(theirs)


def test_partly_filled_secret_keeps_what_it_has() -> None:
    api = FakeSecrets(empty_secret())
    pem = hostkeys._generate("ssh_host_ed25519_key")
    api.secret.data = {"ssh_host_ed25519_key": base64.b64encode(pem).decode()}
    keys = hostkeys.from_secret(api, "ns", "n")
    assert api.secret.data["ssh_host_ed25519_key"] == base64.b64encode(pem).decode()
    assert len(keys) == 2


def test_a_missing_secret_points_to_the_manifests_when_create_is_forbidden() -> None:
    with pytest.raises(hostkeys.HostKeyError, match=r"kubectl apply -k manifests/keep/"):
        hostkeys.from_secret(FakeSecrets(None), "podssh-system", "podssh-hostkeys")
    allowed = FakeSecrets(None, forbid_create=False)  # `podssh serve` run by hand with an admin kubeconfig
    assert len(hostkeys.from_secret(allowed, "ns", "n")) == 2 and allowed.created == 1


def test_read_secret_never_writes() -> None:
    api = FakeSecrets(empty_secret())
    with pytest.raises(hostkeys.HostKeyError, match="lacks"):
        hostkeys.read_secret(api, "ns", "n")
    assert api.replaced == 0 and api.created == 0
    with pytest.raises(hostkeys.HostKeyError, match="Not Found"):
        hostkeys.read_secret(FakeSecrets(None), "ns", "n")


def test_known_hosts_lines_are_what_ssh_keygen_reads(tmp_path: Path) -> None:
    api = FakeSecrets(empty_secret())
    keys = hostkeys.from_secret(api, "ns", "n")
    lines = hostkeys.known_hosts_lines(keys, host="ssh.example.com", port=2222, alias="prod")
    assert [line.split()[:2] for line in lines] == [["prod,[ssh.example.com]:2222", "ssh-ed25519"],
                                                    ["prod,[ssh.example.com]:2222", "ecdsa-sha2-nistp256"]]
    assert hostkeys.known_hosts_lines(keys, host="10.0.0.1")[0].startswith("10.0.0.1 ssh-ed25519 ")
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    for name in ("prod", "[ssh.example.com]:2222"):
        found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(path)], capture_output=True, text=True)
        found_lines = [line for line in found.stdout.splitlines() if not line.startswith("#")]
        assert found.returncode == 0 and len(found_lines) == 2, name
    with pytest.raises(hostkeys.HostKeyError):
        hostkeys.known_hosts_lines(keys, host="a b")


def test_ssh_config_pins_the_host_keys(tmp_path: Path) -> None:
    text = ssh_config(host="ssh.example.com", port=2222, alias="prod", known_hosts="~/.ssh/prod_known_hosts")
    assert "    HostKeyAlias prod\n" in text
    assert "    UserKnownHostsFile ~/.ssh/prod_known_hosts\n" in text
    assert "    StrictHostKeyChecking yes\n" in text
    # What ssh itself makes of it.
    (tmp_path / "config").write_text(text)
    out = subprocess.run(["ssh", "-G", "-F", str(tmp_path / "config"), "prod"], capture_output=True, text=True)
    options = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert options["hostkeyalias"] == "prod" and options["stricthostkeychecking"] in ("true", "yes")
    assert options["hostname"] == "ssh.example.com" and options["port"] == "2222"
    with pytest.raises(ValueError, match="--alias"):
        ssh_config(host="h", port=22, alias="a b")


def test_known_hosts_command_refuses_bad_input_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["known-hosts", "--host", "h", "--secret", "no-slash"])
    assert "expected NAMESPACE/NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["known-hosts", "--host", "h", "--kubeconfig", "/nonexistent/kubeconfig"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("podssh: cannot load Kubernetes configuration") and err.count("\n") == 1


def test_manifests_keep_the_secret_out_of_the_base_and_never_create_secrets() -> None:
    base = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    keep = yaml.safe_load((REPO / "manifests" / "keep" / "kustomization.yaml").read_text())
    assert "namespace.yaml" not in base["resources"]  # `delete -k manifests/` would delete the Secret with it
    assert keep["resources"] == ["namespace.yaml", "hostkeys-secret.yaml"]
    secret = yaml.safe_load((REPO / "manifests" / "keep" / "hostkeys-secret.yaml").read_text())
    assert secret["metadata"]["name"] == "podssh-hostkeys" and "data" not in secret
    deployment = (REPO / "manifests" / "deployment.yaml").read_text()
    assert "--host-key-secret=$(POD_NAMESPACE)/podssh-hostkeys" in deployment
    rules = [r for doc in yaml.safe_load_all((REPO / "manifests" / "rbac.yaml").read_text())
             for r in (doc.get("rules") or [])]
    secret_rules = [r for r in rules if "secrets" in r["resources"]]
    assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["podssh-hostkeys"],
                             "verbs": ["get", "update"]}]
    pods = next(r for r in rules if r["resources"] == ["pods"])
    assert pods["verbs"] == ["get", "list", "watch"]  # watch: the pod cache, and nothing more


# --- host certificates -------------------------------------------------------------------------


def _ca(tmp_path: Path, kind: str = "ed25519") -> bytes:
    path = tmp_path / f"hostca-{kind}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path.read_bytes()


def test_host_keys_signed_by_the_ca_are_presented_as_certificates(tmp_path: Path) -> None:
    api = FakeSecrets(empty_secret())
    keys = hostkeys.from_secret(api, "ns", "n")
    ca = _ca(tmp_path)
    entries = {}
    for name, key in zip(hostkeys.KEY_NAMES, keys, strict=True):
        cert, ca_line = hostcerts.sign_host_key(ca, f"{key.get_name()} {key.get_base64()}".encode(),
                                                ["gw.example.com", "10.0.0.1"], 3600)
        entries[hostcerts.cert_entry(name)], entries[hostcerts.CA_PUBLIC_KEY] = cert, ca_line
    hostkeys.store_certificates(api, "ns", "n", entries)
    loaded = hostkeys.from_secret(api, "ns", "n")
    names = [k.get_name() for k in loaded]
    assert names == ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-ed25519-cert-v01@openssh.com",
                     "ecdsa-sha2-nistp256-cert-v01@openssh.com"]
    # What ssh-keygen makes of the certificate the kex will send.
    cert_key = loaded[2]
    (tmp_path / "c-cert.pub").write_text(f"{cert_key.get_name()} {base64.b64encode(cert_key.asbytes()).decode()}\n")
    listed = subprocess.run(["ssh-keygen", "-L", "-f", str(tmp_path / "c-cert.pub")], capture_output=True, text=True)
    assert "host certificate" in listed.stdout and "gw.example.com" in listed.stdout
    # The signature is the host key's own (PROTOCOL.certkeys).
    sig = cert_key.sign_ssh_data(b"exchange hash")
    public = paramiko.Ed25519Key(data=loaded[0].asbytes())
    assert public.verify_ssh_sig(b"exchange hash", paramiko.Message(sig.asbytes()))
    # known-hosts: plain lines never include the certificates; --ca prints the CA line.
    assert len(hostkeys.known_hosts_lines(loaded, host="gw.example.com")) == 2
    ca_line = hostkeys.read_ca(api, "ns", "n")
    assert hostcerts.cert_authority_line(ca_line, host="gw.example.com", port=2222, alias="gw") == \
        f"@cert-authority gw,[gw.example.com]:2222 {' '.join(ca_line.split()[:2])}"


def test_a_certificate_of_another_key_or_a_user_certificate_is_refused(tmp_path: Path) -> None:
    api = FakeSecrets(empty_secret())
    keys = hostkeys.from_secret(api, "ns", "n")
    ca = _ca(tmp_path)
    other = FakeSecrets(empty_secret())
    other_key = hostkeys.from_secret(other, "ns", "n")[0]
    cert, _ = hostcerts.sign_host_key(ca, f"ssh-ed25519 {other_key.get_base64()}".encode(), ["gw"], 3600)
    with pytest.raises(hostkeys.HostKeyError, match="certifies another key"):
        hostkeys.with_certificates(keys, {hostcerts.cert_entry(hostkeys.KEY_NAMES[0]): cert})
    (tmp_path / "k.pub").write_text(f"ssh-ed25519 {keys[0].get_base64()}\n")
    (tmp_path / "ca").write_bytes(ca)
    (tmp_path / "ca").chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "u", "-n", "gw", str(tmp_path / "k.pub")],
                   check=True)
    user_cert = (tmp_path / "k-cert.pub").read_bytes()
    with pytest.raises(hostkeys.HostKeyError, match="not a host certificate"):
        hostkeys.with_certificates(keys, {hostcerts.cert_entry(hostkeys.KEY_NAMES[0]): user_cert})
    with pytest.raises(hostkeys.HostKeyError, match="cannot be read"):
        hostkeys.with_certificates(keys, {hostcerts.cert_entry(hostkeys.KEY_NAMES[0]): b"garbage"})


def test_signing_refuses_bad_input(tmp_path: Path) -> None:
    line = b"ssh-ed25519 " + base64.b64encode(hostkeys.from_secret(FakeSecrets(empty_secret()), "n", "n")[0].asbytes())
    ca = _ca(tmp_path)
    with pytest.raises(hostcerts.HostCertError, match="principals"):
        hostcerts.sign_host_key(ca, line, [], 3600)
    with pytest.raises(hostcerts.HostCertError, match="validity"):
        hostcerts.sign_host_key(ca, line, ["gw"], 0)
    with pytest.raises(hostcerts.HostCertError, match="cannot be loaded"):
        hostcerts.sign_host_key(b"not a key", line, ["gw"], 3600)
    with pytest.raises(hostkeys.HostKeyError, match="no host CA"):
        hostkeys.read_ca(FakeSecrets(empty_secret()), "ns", "n")


def test_known_hosts_and_host_cert_say_in_one_line_what_went_wrong_with_the_cluster(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A kubeconfig that is not YAML, an API server that does not answer, one that refuses:
    each one `podssh:` line and exit 2, never a traceback."""
    import socket

    from tests.support.fakeapiserver import FakeApiServer

    broken = tmp_path / "broken"
    broken.write_text("clusters: [\n  - {name: x\n")
    ca_key = tmp_path / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca_key)], check=True)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    with FakeApiServer() as api:
        refusing = api.write_kubeconfig(tmp_path / "refusing")
        api.put("/api/v1/namespaces/podssh-system/secrets/podssh-hostkeys", status=500)
        dead = tmp_path / "dead"
        dead.write_text(Path(refusing).read_text().replace(api.url, f"http://127.0.0.1:{dead_port}"))
        for kubeconfig, words in ((broken, "cannot load Kubernetes configuration"),
                                  (dead, "cannot reach the Kubernetes API server"),
                                  (refusing, "")):
            for argv in (["known-hosts", "--host", "h"],
                         ["host-cert", "--ca-key", str(ca_key), "--principals", "h"]):
                try:
                    code = main([*argv, "--kubeconfig", str(kubeconfig)])
                except SystemExit as exited:
                    code = exited.code
                err = capsys.readouterr().err
                assert code == 2 and err.startswith("podssh: ") and err.count("\n") == 1, (argv, kubeconfig, err)
                assert words in err and "Traceback" not in err
