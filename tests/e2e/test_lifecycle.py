"""Session lifecycle: disconnects, pod deletion, leaks, graceful shutdown."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import datetime

import pytest

from tests.conftest import NS
from tests.support.cluster import BUSYBOX, Cluster
from tests.support.gateway import Gateway, SSHKey
from tests.support.ptyclient import PtyClient
from tests.support.waiting import wait_for


def _ts(entry: dict) -> float:
    return datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()


def test_client_disconnect_closes_the_exec_stream_within_a_second(
        gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    argv = [*gateway.ssh_argv(f"{NS}/deploy/web", keys["alice"]), "echo started; sleep 300"]
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert client.stdout is not None
    assert client.stdout.readline() == b"started\n"
    before = len(gateway.events("session_end"))
    killed = time.time()
    client.send_signal(signal.SIGKILL)
    client.wait()
    end = wait_for(lambda: gateway.events("session_end")[before:], timeout=5)[0]
    assert end["reason"] == "client"
    assert _ts(end) - killed < 1.0


def test_a_channel_closed_after_stdin_eof_ends_its_session_at_once(
        gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    """With stdin at EOF the session waits for its channel's close (not polling it): a
    multiplexed client killed mid-command closes only its channel, and the session ends at once
    while the master connection stays."""
    path = ["-o", "ControlPath=/tmp/pseof-%C"]  # a socket path must stay short
    target = f"{NS}/deploy/web"
    master = subprocess.Popen([*gateway.ssh_argv(target, keys["alice"], "-o", "ControlMaster=yes", *path, "-N")],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    try:
        check = ["ssh", "-O", "check", *path, "-F", "/dev/null", "-p", str(gateway.port), f"{target}@127.0.0.1"]
        wait_for(lambda: subprocess.run(check, capture_output=True, timeout=10).returncode == 0, timeout=20,
                 what="the master connection")
        mux = ["-o", "ControlMaster=no", *path]
        command = "echo started-eof-mux; sleep 300"  # this test's own: the gateway is the module's
        client = subprocess.Popen([*gateway.ssh_argv(target, keys["alice"], *mux), command],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert client.stdout is not None and client.stdout.readline() == b"started-eof-mux\n"
        conn = next(e["conn"] for e in gateway.events("session_start") if e["command"] == command)
        time.sleep(1.5)  # idle after the EOF
        killed = time.time()
        client.send_signal(signal.SIGKILL)  # the mux client: the master closes its channel only
        client.wait()
        end = wait_for(lambda: [e for e in gateway.events("session_end") if e["conn"] == conn], timeout=5)[0]
        assert end["reason"] == "client"
        assert _ts(end) - killed < 1.0
        again = gateway.ssh(target, "echo still-here-eof-mux", keys["alice"], *mux)  # over the same master
        assert again.returncode == 0 and again.stdout == b"still-here-eof-mux\n", again.stderr
        on = [e["conn"] for e in gateway.events("session_start") if e["command"] == "echo still-here-eof-mux"]
        assert on == [conn]
        assert not [e for e in gateway.events("connection_close") if e["conn"] == conn]
    finally:
        for proc in (client, master):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def _running(gateway: Gateway, key: SSHKey, marker: str, target: str = f"{NS}/deb") -> list[str]:
    """Command lines in the target's container that contain marker (the probe itself excluded)."""
    ps = gateway.ssh(target, "ps -e -o args", key)
    assert ps.returncode == 0, ps.stderr
    return [line for line in ps.stdout.decode().splitlines() if marker in line and "ps -e" not in line]


def test_a_closed_output_pipe_ends_the_command(make_gateway, keys: dict[str, SSHKey]) -> None:
    gateway = make_gateway("--hang-up")
    # `| head` exits: OpenSSH tells the server (eow@openssh.com) and the writer must end, not run forever.
    ssh = " ".join(gateway.ssh_argv(f"{NS}/deb", keys["alice"]))
    piped = subprocess.run(["bash", "-c", f"{ssh} 'exec yes podssh-eow-7431' </dev/null | head -c 1000000 | wc -c"],
                           capture_output=True, timeout=30)
    assert piped.stdout.strip() == b"1000000"
    wait_for(lambda: not _running(gateway, keys["alice"], "podssh-eow-7431"), what="the writer ended")
    conn = next(e["conn"] for e in gateway.events("session_start") if e["command"] == "exec yes podssh-eow-7431")
    end = next(e for e in gateway.events("session_end") if e["conn"] == conn)
    assert end["reason"] == "client"
    hangup = wait_for(lambda: [e for e in gateway.events("session_hangup") if e["conn"] == conn])
    assert hangup[0]["pod"] == "deb" and hangup[0]["processes"] >= 1


@pytest.mark.parametrize("target", ["deb", "deploy/web"])  # coreutils+bash, busybox
def test_what_a_vanished_client_left_running_is_hung_up(make_gateway, keys: dict[str, SSHKey],
                                                        target: str) -> None:
    gateway = make_gateway("--hang-up")
    # As under sshd: the session's processes get SIGHUP; what ignores it (nohup) stays.
    key, where = keys["alice"], f"{NS}/{target}"
    command = "(trap '' HUP; exec sleep 9901) >/dev/null 2>&1 & echo started $!; sleep 9902"
    argv = [*gateway.ssh_argv(where, key), command]
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert client.stdout is not None
    started, survivor = client.stdout.readline().split()
    assert started == b"started"
    shell = PtyClient(gateway.ssh_argv(where, key, tty=True))
    try:
        shell.send(b"echo ready-$((40+3)); sleep 9903\n")
        shell.expect(b"ready-43")
        assert _running(gateway, key, "sleep 990", where) and _running(gateway, key, "sleep 9903", where)
    finally:
        client.kill()
        shell.kill()
    wait_for(lambda: not [line for line in _running(gateway, key, "sleep 990", where) if line != "sleep 9901"],
             what="the exec's and the shell's processes ended")
    assert _running(gateway, key, "sleep 9901", where) == ["sleep 9901"]  # it ignores SIGHUP
    assert gateway.ssh(where, f"kill {int(survivor)}", key).returncode == 0


def test_a_vanished_sftp_client_leaves_no_sftp_server(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    # The container's sftp-server ends at its stdin's EOF, which the stream's end delivers: no hangup needed.
    client = subprocess.Popen(["sftp", *gateway.client_options(keys["dave"]), "-b", "-", f"{NS}/deb@127.0.0.1"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _running(gateway, keys["alice"], "sftp-server"), what="the container's sftp-server")
    finally:
        client.kill()
    client.wait()
    wait_for(lambda: not _running(gateway, keys["alice"], "sftp-server"), what="sftp-server ended")


def test_pod_deletion_ends_the_session(workloads: Cluster, gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    workloads.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: doomed, namespace: {NS}, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: main, image: {BUSYBOX}, imagePullPolicy: Never}}]
""")
    workloads.wait_ready(NS, "app=web", count=6)
    argv = [*gateway.ssh_argv(f"{NS}/doomed", keys["alice"]), "echo started; sleep 300"]
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdout is not None and client.stdout.readline() == b"started\n"
    workloads.kubectl("delete", "pod", "-n", NS, "doomed", "--wait=false")
    try:
        code = client.wait(timeout=30)
    finally:
        client.kill()
    assert code != 0  # the command was killed: never a silent success, never a hang


def test_container_exit_ends_the_session_with_its_status(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    proc = gateway.ssh(f"{NS}/deploy/web", "exec sh -c 'kill -9 $$'", keys["alice"])
    assert proc.returncode == 137


def test_no_leaked_threads_or_sockets_after_fifty_sessions(
        gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    for _ in range(3):  # warm the API client's connection pool
        assert gateway.ssh(f"{NS}/deploy/web", "true", keys["alice"]).returncode == 0
    time.sleep(0.5)
    threads, fds = gateway.process_counts()
    for i in range(50):
        proc = gateway.ssh(f"{NS}/deploy/web", f"echo {i}", keys["alice"], input=b"x" * 1000)
        assert proc.returncode == 0 and proc.stdout == f"{i}\n".encode()
    deadline = time.monotonic() + 10
    while gateway.process_counts() != (threads, fds) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gateway.process_counts() == (threads, fds)


def test_sigterm_drains_live_sessions(make_gateway, keys: dict[str, SSHKey]) -> None:
    gw = make_gateway("--drain-timeout", "2")
    argv = [*gw.ssh_argv(f"{NS}/deploy/web", keys["alice"]), "echo started; sleep 300"]
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdout is not None and client.stdout.readline() == b"started\n"
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    _, err = client.communicate(timeout=20)
    assert b"gateway is shutting down" in err
    assert client.returncode != 0
    assert gw.proc.wait(20) == 0
    assert gw.events("stopped")
