"""`ssh -L` into pods through the Kubernetes portforward API."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import NS
from tests.support.gateway import Gateway, SSHKey, free_port, stop_client, wait_port


def _forward(gateway: Gateway, key: SSHKey, spec: str) -> subprocess.Popen[bytes]:
    argv = [*gateway.ssh_argv(f"{NS}/httpd", key, "-N", "-L", spec)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def tunnel(gateway: Gateway, keys: dict[str, SSHKey]):
    port = free_port()
    client = _forward(gateway, keys["dave"], f"127.0.0.1:{port}:localhost:8080")
    wait_port(port)
    yield port
    stop_client(client)


def _refused(port: int) -> bool:
    """The local end of a refused -L channel: closed or reset without a byte of answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        try:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return s.recv(100) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


def _get(port: int) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=30) as resp:
        return resp.status, resp.read()


def test_fifty_parallel_requests_through_one_tunnel(tunnel: int) -> None:
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: _get(tunnel), range(50)))
    assert results == [(200, b"podssh test page\n")] * 50


def test_bulk_transfer_both_ways(gateway: Gateway, keys: dict[str, SSHKey], tunnel: int) -> None:
    # busybox httpd serves a 20 MB file made in the pod; the bytes must arrive intact.
    made = gateway.ssh(f"{NS}/httpd", "head -c 20000000 /dev/urandom > /var/www/big.bin && md5sum /var/www/big.bin",
                       keys["dave"])
    assert made.returncode == 0, made.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{tunnel}/big.bin", timeout=60) as resp:
        body = resp.read()
    assert hashlib.md5(body).hexdigest() == made.stdout.split()[0].decode()


@pytest.mark.parametrize(("who", "destination", "reason"), [
    ("dave", "localhost:9999", "port not allowed"),
    ("dave", "db.example.invalid:8080", "not the pod itself (use localhost)"),
    ("alice", "localhost:8080", "port not allowed"),  # alice's grant lists no ports at all
])
def test_forwards_outside_the_grant_are_refused(gateway: Gateway, keys: dict[str, SSHKey], who: str,
                                                destination: str, reason: str) -> None:
    port = free_port()
    client = _forward(gateway, keys[who], f"127.0.0.1:{port}:{destination}")
    try:
        wait_port(port)
        assert _refused(port)
    finally:
        stop_client(client)
    refused = gateway.events("forward_refused")[-1]
    assert refused["reason"] == reason and refused["port"] == int(destination.rsplit(":", 1)[1])
    # The login is in the audit trail, and before what was done under it, even for a client this brief.
    login = [e for e in gateway.events("auth_success") if e["conn"] == refused["conn"]]
    assert len(login) == 1 and login[0]["ts"] <= refused["ts"], login
