"""Limits against floods, with the real OpenSSH client and a real `podssh serve`: one address's
idle connections do not lock out another address, and a connection's session channels are
capped (sshd's MaxSessions) while the rest of the connection keeps working."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import NS
from tests.support.gateway import SSHKey


def test_idle_connections_from_one_address_do_not_lock_out_another(make_gateway, keys: dict[str, SSHKey]) -> None:
    gw = make_gateway("--max-unauthenticated-per-source", "3", "--max-startups", "50:30:60")
    idle = [socket.create_connection(("127.0.0.1", gw.port), timeout=10) for _ in range(4)]
    try:
        for s in idle[:3]:
            assert s.recv(256).startswith(b"SSH-2.0-")
        idle[3].settimeout(5)
        try:
            fourth = idle[3].recv(256)
        except ConnectionResetError:
            fourth = b""
        assert fourth == b""  # the fourth from 127.0.0.1: closed at once
        done = gw.ssh(f"{NS}/deb", "echo still-in", keys["alice"], "-b", "127.0.0.2")
        assert (done.returncode, done.stdout) == (0, b"still-in\n"), done.stderr
    finally:
        for s in idle:
            s.close()
    refused = gw.events("connection_refused")
    assert any(e["reason"] == "too many unauthenticated connections from this address" for e in refused)


def test_session_channels_per_connection(make_gateway, keys: dict[str, SSHKey], tmp_path: Path) -> None:
    gw = make_gateway("--max-sessions", "2")
    control = str(tmp_path / "ctl")
    base = gw.ssh_argv(f"{NS}/deb", keys["alice"], "-S", control)
    master = subprocess.Popen([*base[:1], "-M", "-N", *base[1:]], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    sleepers: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 20
        while subprocess.run([*base[:1], "-O", "check", *base[1:]], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and master.poll() is None, "the control master did not start"
            time.sleep(0.2)
        sleepers = [subprocess.Popen([*base, "sleep 8"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for _ in range(2)]
        time.sleep(3)  # both sessions open
        third = subprocess.run([*base, "echo third"], capture_output=True, timeout=30)
        # The master's connection refuses a third session; OpenSSH then falls back to a
        # connection of its own, which has its own places.
        assert b"Session open refused by peer" in third.stderr, third.stderr
        assert (third.returncode, third.stdout) == (0, b"third\n")
        for p in sleepers:
            assert p.wait(30) == 0  # the two within the cap ran to their end
        again = subprocess.run([*base, "echo again"], capture_output=True, timeout=30)
        assert (again.returncode, again.stdout) == (0, b"again\n"), again.stderr  # places given back
    finally:
        for p in sleepers:
            p.kill()
        subprocess.run([*base[:1], "-O", "exit", *base[1:]], capture_output=True)
        master.kill()
        master.wait()
    assert any(e.get("reason") == "too many channels" for e in gw.events("channel_refused"))
