"""What a grant holder can do inside a session, and no more (issue 11): env names never become
shell code, an sftp-only grant never gets a program of its own run, refusals say nothing about
pods outside the grant, and audit records stay whole. Real OpenSSH client, real cluster, own
namespace."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import BUSYBOX, DEBIAN, Cluster
from tests.support.gateway import Gateway, SSHKey, grant, make_key
from tests.support.ptyclient import PtyClient
from tests.support.waiting import wait_for

NS = "podssh-e2e-secsess"
MENU = ["/bin/sh", "-c", 'printf "[%s]\\n" "$LC_FOO"']

MANIFEST = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: bb, namespace: {NS}, labels: {{app: sess}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: main, image: {BUSYBOX}, imagePullPolicy: Never}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: deb, namespace: {NS}, labels: {{app: sess}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: main, image: {DEBIAN}, imagePullPolicy: Never}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: nonroot, namespace: {NS}, labels: {{app: sess}}}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsUser: 65534, runAsGroup: 65534}}
  containers: [{{name: main, image: {BUSYBOX}, imagePullPolicy: Never}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: hidden, namespace: {NS}, labels: {{app: hidden}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: secret-sidecar, image: {BUSYBOX}, imagePullPolicy: Never}}]
"""


@pytest.fixture(scope="module")
def pods(cluster: Cluster) -> Iterator[Cluster]:
    # Fresh pods each run (the tests plant files in them): wait out a previous run's deletion.
    deadline = time.monotonic() + 120
    while cluster.kubectl("get", "namespace", NS, check=False).returncode == 0:
        assert time.monotonic() < deadline, f"namespace {NS} still terminating"
        time.sleep(1)
    cluster.apply(MANIFEST)
    cluster.wait_ready(NS, "app=sess", count=3)
    cluster.wait_ready(NS, "app=hidden")
    yield cluster
    cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SSHKey]:
    d = tmp_path_factory.mktemp("keys")
    return {n: make_key(d, n) for n in ("menu", "filer", "both", "nobody")}


@pytest.fixture(scope="module")
def gw(pods: Cluster, users: dict[str, SSHKey], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    sess = {"app": "sess"}
    grants = [
        grant("sess-menu", NS, [users["menu"]], sess, allow={"shell": True, "exec": False}, shellCommand=MENU),
        grant("sess-filer", NS, [users["filer"]], sess, allow={"sftp": True}),
        grant("sess-both", NS, [users["both"]], sess, allow={"exec": True, "sftp": True}),
    ]
    gateway = Gateway(tmp_path_factory.mktemp("gw"), pods.kubeconfig, grants).start()
    yield gateway
    gateway.stop()


def in_pod(cluster: Cluster, pod: str, *argv: str) -> str:
    return cluster.kubectl("exec", "-n", NS, pod, "--", *argv).stdout


def sftp(gw: Gateway, key: SSHKey, target: str, batch: str, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    script = tmp_path / "batch"
    script.write_text(batch)
    argv = ["sftp", *gw.client_options(key), "-b", str(script), "-o", f"User={target}", "127.0.0.1"]
    return subprocess.run(argv, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def test_setenv_attack_runs_nothing_and_values_arrive_verbatim(gw: Gateway, pods: Cluster,
                                                               users: dict[str, SSHKey]) -> None:
    marker = "/tmp/pwned-secsess"
    in_pod(pods, "bb", "rm", "-f", marker)
    attack = f"SetEnv=LC_X;id>{marker};echo${{IFS}}X;exit;LC_Y=2"
    proc = gw.ssh(f"{NS}/bb", None, users["menu"], "-o", attack)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"[]\n"  # the shellCommand ran, and only it
    with_tty = gw.ssh(f"{NS}/bb", None, users["menu"], "-o", attack, tty=True)  # the stty prelude path too
    assert b"[]" in with_tty.stdout
    assert "pwned" not in in_pod(pods, "bb", "ls", "/tmp")
    legit = gw.ssh(f"{NS}/bb", None, users["menu"], "-o", 'SetEnv=LC_FOO="a b$(x)"')
    assert legit.stdout == b"[a b$(x)]\n", legit.stderr
    # exec stays refused for this grant
    assert gw.ssh(f"{NS}/bb", "id", users["menu"]).returncode == 255


FAKE = "#!/bin/sh\ntouch /tmp/ran-{name}\nexec /bin/{name} \"$@\"\n"


def test_an_sftp_only_grant_cannot_make_the_gateway_run_uploaded_programs(
        gw: Gateway, pods: Cluster, users: dict[str, SSHKey], tmp_path: Path) -> None:
    for name in ("stat", "find", "cat", "mkdir"):
        (tmp_path / name).write_text(FAKE.format(name=name))
    (tmp_path / "sftp-server").write_text("#!/bin/sh\ntouch /tmp/ran-sftp-server\nexit 1\n")
    (tmp_path / "hello").write_text("hello\n")
    # /usr/local/bin comes first in the image's PATH; /usr/lib/openssh/sftp-server is where a
    # container's own sftp-server is looked for.
    plant = sftp(gw, users["filer"], f"{NS}/bb", f"""
-mkdir /usr/local
-mkdir /usr/local/bin
-mkdir /usr/lib
-mkdir /usr/lib/openssh
put {tmp_path}/stat /usr/local/bin/stat
put {tmp_path}/find /usr/local/bin/find
put {tmp_path}/cat /usr/local/bin/cat
put {tmp_path}/mkdir /usr/local/bin/mkdir
put {tmp_path}/sftp-server /usr/lib/openssh/sftp-server
chmod 755 /usr/local/bin/stat
chmod 755 /usr/local/bin/find
chmod 755 /usr/local/bin/cat
chmod 755 /usr/local/bin/mkdir
chmod 755 /usr/lib/openssh/sftp-server
""", tmp_path)
    assert plant.returncode == 0, plant.stderr
    in_pod(pods, "bb", "rm", "-f", "/tmp/ran-stat", "/tmp/ran-find", "/tmp/ran-cat", "/tmp/ran-mkdir",
           "/tmp/ran-sftp-server")
    use = sftp(gw, users["filer"], f"{NS}/bb", f"""
ls /usr/local/bin
put {tmp_path}/hello /tmp/hello
get /tmp/hello {tmp_path}/back
-mkdir /tmp/newdir
""", tmp_path)
    assert use.returncode == 0, use.stderr
    assert (tmp_path / "back").read_text() == "hello\n"
    assert "ran-" not in in_pod(pods, "bb", "ls", "/tmp")
    starts = [e for e in gw.events("session_start") if e.get("kind") == "sftp" and e.get("grant") == f"{NS}/sess-filer"]
    assert starts and all(e.get("sftp") == "gateway" for e in starts)


def test_the_container_sftp_server_serves_only_grants_that_may_exec(
        gw: Gateway, users: dict[str, SSHKey], tmp_path: Path) -> None:
    (tmp_path / "f").write_text("data\n")
    for user in ("filer", "both"):
        proc = sftp(gw, users[user], f"{NS}/deb", f"put {tmp_path}/f /tmp/f-{user}\nget /tmp/f-{user} {tmp_path}/g\n",
                    tmp_path)
        assert proc.returncode == 0, proc.stderr
    starts = {e["grant"]: e for e in gw.events("session_start") if e.get("kind") == "sftp" and e.get("pod") == "deb"}
    assert starts[f"{NS}/sess-filer"].get("sftp") == "gateway"
    assert starts[f"{NS}/sess-both"].get("sftp") is None  # the container's own sftp-server (fast path)


def test_a_pod_outside_the_grant_is_answered_like_a_missing_one(gw: Gateway, users: dict[str, SSHKey]) -> None:
    hidden = gw.ssh(f"{NS}/hidden:secret-sidecar", "true", users["both"])
    missing = gw.ssh(f"{NS}/nosuch:secret-sidecar", "true", users["both"])
    assert hidden.returncode == missing.returncode == 255
    assert hidden.stderr == missing.stderr.replace(b"nosuch", b"hidden")
    assert b"secret-sidecar" not in hidden.stderr and b"Running" not in hidden.stderr


def test_audit_records_stay_whole_with_unicode_line_ends_in_the_target(gw: Gateway, users: dict[str, SSHKey]) -> None:
    target = "a\u2028b\u0085c"
    proc = gw.ssh(target, "true", users["nobody"])  # a key without grant: an auth_failure naming the target
    assert proc.returncode == 255
    raw = gw.log_path.read_bytes()
    assert "\u2028".encode() not in raw and "\u0085".encode() not in raw
    assert any(e.get("target") == target for e in gw.events("auth_failure"))


# --- what the fixes must not break: the same paths, under this file's own grants and pods --------

@pytest.mark.parametrize(("user", "pod"), [("filer", "bb"), ("filer", "deb"), ("both", "deb"), ("filer", "nonroot")])
def test_sftp_round_trip_keeps_content_times_and_modes(gw: Gateway, users: dict[str, SSHKey], tmp_path: Path,
                                                       user: str, pod: str) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 * 1024 * 1024 + 123))
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    os.chmod(tree / "a.txt", 0o640)
    os.utime(tree / "a.txt", (1_600_000_000, 1_600_000_000))
    out = tmp_path / "out"
    out.mkdir()
    remote = f"/tmp/rt-{user}"
    proc = sftp(gw, users[user], f"{NS}/{pod}", f"""
-rm {remote}/big2.bin
-rmdir {remote}
mkdir {remote}
cd {remote}
put {big} big.bin
put -rp {tree} tree
rename big.bin big2.bin
get big2.bin {out}/big.bin
get -rp tree {out}/tree
mkdir gone
rmdir gone
rm big2.bin
ls -l
""", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "big.bin").read_bytes() == big.read_bytes()
    assert (out / "tree" / "sub" / "b.bin").read_bytes() == (tree / "sub" / "b.bin").read_bytes()
    assert (out / "tree" / "a.txt").stat().st_mtime == 1_600_000_000
    assert (out / "tree" / "a.txt").stat().st_mode & 0o777 == 0o640
    scp = subprocess.run(["scp", *gw.client_options(users[user]), "-o", f"User={NS}/{pod}", str(big),
                          f"127.0.0.1:{remote}/scp.bin"], capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert scp.returncode == 0, scp.stderr


def test_a_terminal_still_gets_its_size_before_the_command(gw: Gateway, users: dict[str, SSHKey]) -> None:
    for pod in ("bb", "deb"):
        client = PtyClient([*gw.ssh_argv(f"{NS}/{pod}", users["both"], tty=True), "stty size"], rows=33, cols=111)
        try:
            client.expect(b"33 111")
            assert client.wait() == 0
        finally:
            client.kill()


def test_the_hangup_still_finds_the_sessions_processes(pods: Cluster, users: dict[str, SSHKey],
                                                       tmp_path: Path) -> None:
    grants = [grant("sess-both", NS, [users["both"]], {"app": "sess"}, allow={"exec": True})]
    hanging = Gateway(tmp_path / "gw", pods.kubeconfig, grants, extra_args=["--hang-up"]).start()
    try:
        argv = [*hanging.ssh_argv(f"{NS}/bb", users["both"]), "echo started; sleep 3517"]
        client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert client.stdout is not None and client.stdout.readline() == b"started\n"
        client.kill()
        client.wait()
        hangup = wait_for(lambda: hanging.events("session_hangup"), timeout=20)
        assert hangup[0]["processes"] >= 1
        wait_for(lambda: "sleep 3517" not in in_pod(pods, "bb", "ps", "-o", "args"), what="the sleep ended")
    finally:
        hanging.stop()
