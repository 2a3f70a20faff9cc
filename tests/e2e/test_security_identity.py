"""Identity at the boundary, with the real OpenSSH client: user certificates as sshd treats them
(source-address, force-command, permit-pty, permit-port-forwarding, SHA-1 CAs), revoked keys
(`--revoked-keys`, KRL and key list, re-read on change), and host keys pinned from their Secret
(`podssh known-hosts`) instead of trusted on first use."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import NS
from tests.support.cluster import Cluster
from tests.support.gateway import PODSSH, Gateway, SSHKey, free_port, grant, stop_client, wait_port
from tests.support.ptyclient import PtyClient
from tests.support.sshkeygen import krl, sign
from tests.support.sshkeygen import make_key as keygen_key

ID_NS = "podssh-e2e-identity"  # this file's own namespace, for the host-key Secret


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("identity")


def user_key(d: Path, name: str, *options: str, ca: str = "ca", serial: int = 1, principal: str = "certuser",
             algorithm: str | None = None, ca_kind: str = "ed25519") -> SSHKey:
    """A key with its certificate next to it (ssh loads KEY-cert.pub by itself)."""
    ca_path = keygen_key(d, ca, ca_kind, 2048 if ca_kind == "rsa" else None)
    path = keygen_key(d, name)
    sign(ca_path, path, *options, principals=principal, serial=serial, algorithm=algorithm)
    return SSHKey(name, path)


def ca_grant(d: Path, ca: str = "ca", ca_kind: str = "ed25519", **spec: object) -> dict:
    keygen_key(d, ca, ca_kind, 2048 if ca_kind == "rsa" else None)
    g = grant("certuser", NS, [], {"app": "web"}, **spec)
    del g["spec"]["publicKeys"]
    g["spec"]["certificateAuthorities"] = [Path(f"{d / ca}.pub").read_text().strip()]
    return g


def failures(gw: Gateway) -> list[str]:
    return [e.get("reason") or "" for e in gw.events("auth_failure")]


def test_source_address_is_honoured(workloads: Cluster, make_gateway, d: Path) -> None:
    gw = make_gateway(grants=[ca_grant(d)])
    here = user_key(d, "from-here", "source-address=127.0.0.0/8,::1")
    elsewhere = user_key(d, "from-elsewhere", "source-address=10.99.0.0/16")
    ok = gw.ssh(f"{NS}/deploy/web", "echo in", here)
    assert (ok.returncode, ok.stdout) == (0, b"in\n"), ok.stderr
    refused = gw.ssh(f"{NS}/deploy/web", "echo in", elsewhere)
    assert refused.returncode == 255 and b"Permission denied" in refused.stderr
    assert "certificate source-address excludes this address" in failures(gw)


def test_force_command_runs_instead_and_sftp_is_refused(workloads: Cluster, make_gateway, d: Path) -> None:
    gw = make_gateway(grants=[ca_grant(d, allow={"shell": True, "exec": True, "sftp": True})])
    key = user_key(d, "forced", "force-command=echo forced-$((40+2)) \"$SSH_ORIGINAL_COMMAND\"")
    asked = gw.ssh(f"{NS}/deploy/web", "echo asked; touch /tmp/should-not-exist", key)
    assert (asked.returncode, asked.stdout) == (0, b"forced-42 echo asked; touch /tmp/should-not-exist\n"), \
        asked.stderr
    shell = gw.ssh(f"{NS}/deploy/web", None, key)
    assert (shell.returncode, shell.stdout) == (0, b"forced-42 \n"), shell.stderr
    tty = gw.ssh(f"{NS}/deploy/web", None, key, tty=True)
    assert tty.returncode == 0 and b"forced-42" in tty.stdout, tty.stderr
    check = gw.ssh(f"{NS}/deploy/web", "test -e /tmp/should-not-exist && echo exists || echo absent",
                   user_key(d, "unforced"))
    assert check.stdout == b"absent\n", check.stderr
    sftp = subprocess.run(["sftp", *gw.client_options(key), "-b", "-", f"{NS}/deploy/web@127.0.0.1"],
                          input=b"ls /\n", capture_output=True, timeout=60)
    assert sftp.returncode != 0 and b"force-command" in sftp.stderr, sftp.stderr
    starts = [e for e in gw.events("session_start") if e.get("forced")]
    assert starts and starts[0]["command"].startswith("echo forced-") and starts[0]["kind"] == "exec"
    assert starts[0]["requested_command"] == "echo asked; touch /tmp/should-not-exist"


def test_certificate_without_permit_pty_gets_no_terminal(workloads: Cluster, make_gateway, d: Path) -> None:
    gw = make_gateway(grants=[ca_grant(d)])
    key = user_key(d, "cleared", "clear")
    # `ssh -tt` insists on a terminal: the client gives up when the pty request is refused.
    insisted = gw.ssh(f"{NS}/deploy/web", "tty", key, tty=True)
    assert b"PTY allocation request failed" in insisted.stderr and b"/dev/pts/" not in insisted.stdout
    # A person at a terminal: ssh asks for a pty, is refused, and the shell runs without one (as sshd).
    client = PtyClient(gw.ssh_argv(f"{NS}/deploy/web", key))
    client.send(b"tty; echo ran-$((40+2))\n")
    client.expect(b"ran-42")
    assert b"not a tty" in client.output
    client.send(b"exit\n")
    assert client.wait() == 0
    normal = gw.ssh(f"{NS}/deploy/web", "tty", user_key(d, "with-pty"), tty=True)
    assert normal.returncode == 0 and b"/dev/pts/" in normal.stdout, normal.stderr
    assert any(e.get("reason") == "certificate without permit-pty" for e in gw.events("pty_refused"))


def _forward_answers(gw: Gateway, key: SSHKey) -> bool:
    port = free_port()
    proc = subprocess.Popen(gw.ssh_argv(f"{NS}/httpd", key, "-N", "-L", f"{port}:localhost:8080"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                return s.recv(64).startswith(b"HTTP/")
            except (ConnectionResetError, TimeoutError):
                return False
    finally:
        stop_client(proc)


def test_certificate_without_permit_port_forwarding_gets_no_tunnel(workloads: Cluster, make_gateway,
                                                                   d: Path) -> None:
    gw = make_gateway(grants=[ca_grant(d, allow={"exec": True, "portForward": [8080]})])
    assert _forward_answers(gw, user_key(d, "fw-ok"))
    assert not _forward_answers(gw, user_key(d, "fw-cleared", "clear", "permit-pty"))
    assert any(e.get("reason") == "certificate without permit-port-forwarding" for e in gw.events("forward_refused"))


def test_sha1_ca_signature_is_refused(workloads: Cluster, make_gateway, d: Path) -> None:
    gw = make_gateway(grants=[ca_grant(d, ca="rsa-ca", ca_kind="rsa")])
    good = gw.ssh(f"{NS}/deploy/web", "echo ok", user_key(d, "sha2", ca="rsa-ca", ca_kind="rsa",
                                                         algorithm="rsa-sha2-512"))
    assert good.stdout == b"ok\n", good.stderr
    bad = gw.ssh(f"{NS}/deploy/web", "echo ok", user_key(d, "sha1", ca="rsa-ca", ca_kind="rsa",
                                                        algorithm="ssh-rsa"))
    assert bad.returncode == 255 and b"Permission denied" in bad.stderr
    assert any("SHA-1" in r for r in failures(gw))


def test_revoked_keys_file_is_honoured_and_reread(workloads: Cluster, make_gateway, d: Path,
                                                 tmp_path: Path) -> None:
    plain = SSHKey("plain-revoked", keygen_key(d, "plain-revoked"))
    cert5 = user_key(d, "serial5", serial=5)
    cert6 = user_key(d, "serial6", serial=6)
    revoked = krl(tmp_path / "revoked.krl", Path(f"{plain.path}.pub").read_text())
    plain_grant = grant("plainuser", NS, [plain], {"app": "web"})
    gw = make_gateway("--revoked-keys", str(revoked), grants=[ca_grant(d), plain_grant])
    assert gw.ssh(f"{NS}/deploy/web", "true", plain).returncode == 255
    assert "key revoked" in failures(gw)
    assert gw.ssh(f"{NS}/deploy/web", "echo five", cert5).stdout == b"five\n"
    # Revoke serial 5 under the CA, without restarting: the next login sees it.
    krl(revoked, "serial: 5\n", ca=d / "ca", update=True)
    os.utime(revoked)
    denied = gw.ssh(f"{NS}/deploy/web", "echo five", cert5)
    assert denied.returncode == 255 and "certificate revoked" in failures(gw), denied.stderr
    assert gw.ssh(f"{NS}/deploy/web", "echo six", cert6).stdout == b"six\n"
    # A plain list of public keys works too: revoking the CA revokes its certificates.
    revoked.write_text(Path(f"{d / 'ca'}.pub").read_text())
    assert gw.ssh(f"{NS}/deploy/web", "echo six", cert6).returncode == 255
    assert "CA key revoked" in failures(gw)


def test_revoking_a_key_ends_its_live_sessions_and_its_multiplexed_connection(
        workloads: Cluster, make_gateway, d: Path, tmp_path: Path) -> None:
    """sshd checks RevokedKeys at login only; a gateway whose grants end live sessions does the
    same for a revoked key: its sessions end, and a ControlMaster connection opens no more."""
    key = SSHKey("live-revoked", keygen_key(d, "live-revoked"))
    revoked = tmp_path / "revoked.keys"
    revoked.write_text("")
    gw = make_gateway("--revoked-keys", str(revoked), grants=[grant("liveuser", NS, [key], {"app": "web"})])
    mux = ["-o", "ControlMaster=auto", "-o", "ControlPath=/tmp/psmux-%C", "-o", "ControlPersist=60"]
    client = subprocess.Popen([*gw.ssh_argv(f"{NS}/deploy/web", key, *mux), "echo started; sleep 600"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdout is not None and client.stdout.readline() == b"started\n"
        revoked.write_text(Path(f"{key.path}.pub").read_text())
        t0 = time.monotonic()
        _, err = client.communicate(timeout=30)
        assert time.monotonic() - t0 < 3
        assert client.returncode == 255 and b"this key was revoked (key revoked)" in err, err
        again = gw.ssh(f"{NS}/deploy/web", "echo never", key, *mux)  # over the same master connection
        assert again.returncode != 0 and b"never" not in again.stdout
        assert b"revoked" in again.stderr, again.stderr
    finally:
        if client.poll() is None:
            client.kill()
        subprocess.run(["ssh", "-O", "exit", *mux, "-F", "/dev/null", "-p", str(gw.port), f"{NS}/deploy/web@127.0.0.1"],
                       capture_output=True, timeout=10)


def test_malformed_revoked_keys_file_stops_the_start(workloads: Cluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.krl"
    bad.write_bytes(b"SSHKRL\n\0\0\0\0\1")
    proc = subprocess.run([PODSSH, "serve", "--listen", "127.0.0.1:0", "--kubeconfig", workloads.kubeconfig,
                           "--access", "/dev/null", "--revoked-keys", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"podssh: {bad}: KRL truncated"]


def test_host_keys_are_pinned_from_the_secret(workloads: Cluster, make_gateway, keys: dict,
                                             tmp_path: Path) -> None:
    workloads.apply(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ID_NS}}}\n")
    workloads.kubectl("-n", ID_NS, "delete", "secret", "podssh-hostkeys", "--ignore-not-found")
    # Shipped empty, as manifests/keep/ does; the gateway fills it in.
    workloads.apply(f"apiVersion: v1\nkind: Secret\nmetadata: {{name: podssh-hostkeys, namespace: {ID_NS}}}\n"
                    "type: Opaque\n")
    gw = make_gateway("--host-key-secret", f"{ID_NS}/podssh-hostkeys")
    data = workloads.get("secret", "-n", ID_NS, "podssh-hostkeys")["data"]
    assert set(data) == {"ssh_host_ed25519_key", "ssh_host_ecdsa_key"}
    assert not workloads.get("secret", "-n", ID_NS, "podssh-hostkeys")["metadata"].get("ownerReferences")
    out = subprocess.run([PODSSH, "known-hosts", "--host", "127.0.0.1", "--port", str(gw.port), "--alias", "gw-id",
                          "--kubeconfig", workloads.kubeconfig, "--secret", f"{ID_NS}/podssh-hostkeys"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    known = tmp_path / "known_hosts"
    known.write_text(out.stdout)
    scanned = subprocess.run(["ssh-keyscan", "-p", str(gw.port), "127.0.0.1"], capture_output=True, text=True,
                             timeout=30).stdout
    assert {tuple(line.split()[1:3]) for line in scanned.splitlines() if line and not line.startswith("#")} == \
        {tuple(line.split()[1:3]) for line in out.stdout.splitlines()}
    strict = ["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
    pinned = gw.ssh(f"{NS}/deploy/web", "echo pinned", keys["alice"], *strict)
    assert (pinned.returncode, pinned.stdout) == (0, b"pinned\n"), pinned.stderr
    # Through `podssh ssh-config`: HostKeyAlias names the same lines.
    config = subprocess.run([PODSSH, "ssh-config", "--host", "127.0.0.1", "--port", str(gw.port), "--alias", "gw-id",
                             "--known-hosts-file", str(known), "--identity", str(keys["alice"].path)],
                            capture_output=True, text=True, check=True).stdout
    (tmp_path / "config").write_text(config)
    via_config = subprocess.run(["ssh", "-F", str(tmp_path / "config"), "-o", "BatchMode=yes",
                                 f"{NS}/deploy/web@gw-id", "echo alias"], capture_output=True, timeout=60)
    assert (via_config.returncode, via_config.stdout) == (0, b"alias\n"), via_config.stderr
    # Another gateway with other keys is refused outright, never trusted on first use.
    other = make_gateway()
    stranger = subprocess.run(["ssh", *strict, "-o", f"HostKeyAlias=[127.0.0.1]:{gw.port}", "-o", "BatchMode=yes",
                               "-p", str(other.port), "-i", str(keys["alice"].path), "-o", "IdentitiesOnly=yes",
                               f"{NS}/deploy/web@127.0.0.1", "echo never"], capture_output=True, timeout=60)
    assert stranger.returncode == 255 and b"HOST IDENTIFICATION HAS CHANGED" in stranger.stderr
    assert known.read_text() == out.stdout  # and nothing was learnt
    # A restart reads the same keys back: the pinned lines stay valid.
    gw.stop()
    again = make_gateway("--host-key-secret", f"{ID_NS}/podssh-hostkeys")
    time.sleep(0.2)
    same = subprocess.run(["ssh", *strict, "-o", f"HostKeyAlias=[127.0.0.1]:{gw.port}", "-o", "BatchMode=yes",
                           "-p", str(again.port), "-i", str(keys["alice"].path), "-o", "IdentitiesOnly=yes",
                           f"{NS}/deploy/web@127.0.0.1", "echo again"], capture_output=True, timeout=60)
    assert same.stdout == b"again\n", same.stderr
    assert base64.b64decode(data["ssh_host_ed25519_key"]).startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")


def test_host_certificates_signed_by_a_host_ca(workloads: Cluster, make_gateway, keys: dict, tmp_path: Path) -> None:
    workloads.apply(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ID_NS}}}\n")
    secret = f"{ID_NS}/podssh-hostkeys-ca"
    workloads.kubectl("-n", ID_NS, "delete", "secret", "podssh-hostkeys-ca", "--ignore-not-found")
    first = make_gateway("--host-key-secret", secret)  # creates the keys
    ca = keygen_key(tmp_path, "host-ca")
    kube = ["--kubeconfig", workloads.kubeconfig, "--secret", secret]
    signed = subprocess.run([PODSSH, "host-cert", "--ca-key", str(ca), "--principals", "127.0.0.1", *kube],
                            capture_output=True, text=True, timeout=60)
    assert signed.returncode == 0 and "signed 2 host keys" in signed.stdout, signed.stderr
    first.stop()
    gw = make_gateway("--host-key-secret", secret)  # presents the certificates from its start
    out = subprocess.run([PODSSH, "known-hosts", "--ca", "--host", "127.0.0.1", "--port", str(gw.port), *kube],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("@cert-authority podssh,[127.0.0.1]:"), out.stderr
    assert out.stdout.split()[2:4] == Path(f"{ca}.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(out.stdout)
    strict = ["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "-v"]
    for algorithm in ("ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256-cert-v01@openssh.com"):
        proc = gw.ssh(f"{NS}/deploy/web", "echo certified", keys["alice"], *strict,
                      "-o", f"HostKeyAlgorithms={algorithm}")
        assert (proc.returncode, proc.stdout) == (0, b"certified\n"), proc.stderr[-2000:]
        assert b"Server host certificate: " + algorithm.encode() in proc.stderr
    # Clients that pinned the plain keys still get in: they are offered too.
    plain = subprocess.run([PODSSH, "known-hosts", "--host", "127.0.0.1", "--port", str(gw.port), *kube],
                           capture_output=True, text=True, timeout=60).stdout
    (tmp_path / "plain_known_hosts").write_text(plain)
    proc = gw.ssh(f"{NS}/deploy/web", "echo plain", keys["alice"], "-o",
                  f"UserKnownHostsFile={tmp_path / 'plain_known_hosts'}", "-o", "StrictHostKeyChecking=yes")
    assert proc.stdout == b"plain\n", proc.stderr
    # A gateway whose keys the CA did not sign is refused by the same known_hosts.
    other = make_gateway()
    proc = subprocess.run(["ssh", "-F", "/dev/null", "-o", f"UserKnownHostsFile={known}",
                           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                           "-o", f"HostKeyAlias=[127.0.0.1]:{gw.port}", "-p", str(other.port),
                           "-i", str(keys["alice"].path), f"{NS}/deploy/web@127.0.0.1", "echo never"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 255 and b"Host key verification failed" in proc.stderr, proc.stderr
