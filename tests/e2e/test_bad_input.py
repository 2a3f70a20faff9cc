"""Hostile or broken clients: the gateway logs, refuses and keeps serving everyone else."""

from __future__ import annotations

import socket
import time

import paramiko
import pytest

from tests.conftest import NS
from tests.support.gateway import Gateway, SSHKey

WEB = f"{NS}/deploy/web"


def _still_serves(gw: Gateway, keys: dict[str, SSHKey]) -> None:
    proc = gw.ssh(WEB, "echo still-here", keys["alice"])
    assert proc.stdout == b"still-here\n", proc.stderr


def test_huge_user_name(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    proc = gateway.ssh(f"{NS}/" + "a" * 3000, "true", keys["alice"])
    assert proc.returncode == 255  # refused by the gateway or by the client: 255 either way
    if proc.stderr.startswith(b"podssh: "):
        assert b"user name too long" in proc.stderr
    _still_serves(gateway, keys)


@pytest.mark.parametrize("payload", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00\xff" * 5000,
    b"SSH-2.0-broken\r\n" + b"\x00" * 64,
    b"SSH-1.5-ancient\r\n",
])
def test_garbage_instead_of_ssh(gateway: Gateway, keys: dict[str, SSHKey], payload: bytes) -> None:
    before = len(gateway.events("handshake_failed"))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(payload)
        s.settimeout(10)
        try:
            while s.recv(65536):
                pass
        except (ConnectionResetError, TimeoutError):
            pass
    _still_serves(gateway, keys)
    deadline = time.monotonic() + 5
    while len(gateway.events("handshake_failed")) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(gateway.events("handshake_failed")) > before


def test_client_vanishes_mid_handshake(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    for stage in (b"", b"SSH-2.0-OpenSSH_9.2\r\n"):
        s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        s.recv(256)  # the server's version line
        if stage:
            s.sendall(stage)
        s.close()
    _still_serves(gateway, keys)


def test_too_many_auth_attempts_disconnects(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    transport = paramiko.Transport(("127.0.0.1", gateway.port))
    transport.start_client(timeout=10)
    refused = 0
    try:
        for _ in range(10):
            try:
                transport.auth_publickey(WEB, paramiko.ECDSAKey.generate())
            except paramiko.AuthenticationException:
                refused += 1
            except (paramiko.SSHException, EOFError, OSError):
                break
    finally:
        transport.close()
    assert 1 <= refused <= 6
    _still_serves(gateway, keys)


def test_login_grace_time(make_gateway, keys: dict[str, SSHKey]) -> None:
    gw = make_gateway("--login-grace-time", "1.5")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"SSH-2.0-slowpoke\r\n")
        started = time.monotonic()
        s.settimeout(10)
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 5
    _still_serves(gw, keys)


def test_cap_on_unauthenticated_connections(make_gateway, keys: dict[str, SSHKey]) -> None:
    gw = make_gateway("--max-unauthenticated", "2", "--login-grace-time", "8")
    idle = [socket.create_connection(("127.0.0.1", gw.port), timeout=10) for _ in range(2)]
    try:
        for s in idle:
            assert s.recv(256).startswith(b"SSH-2.0-")
        time.sleep(0.3)
        third = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        third.settimeout(5)
        assert third.recv(256) == b""  # closed without a word
        third.close()
        refused = gw.events("connection_refused")
        assert refused and refused[-1]["reason"] == "too many unauthenticated connections"
    finally:
        for s in idle:
            s.close()
    time.sleep(0.5)
    _still_serves(gw, keys)
