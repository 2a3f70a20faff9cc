"""`podssh serve --proxy-protocol`: behind a load balancer speaking the PROXY protocol (v1 and v2),
the real OpenSSH client gets its session, and the audit shows the client address the header
carries next to the proxy's; a plain connection from the proxy's address is refused."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import NS
from tests.support.gateway import SSHKey
from tests.support.tcpproxy import ProxyProtocolRelay


@pytest.mark.parametrize("version", [1, 2])
def test_client_address_from_the_proxy_header(make_gateway, keys: dict[str, SSHKey], version: int) -> None:
    gw = make_gateway("--proxy-protocol", "127.0.0.1/32")
    relay = ProxyProtocolRelay(("127.0.0.1", gw.port), version, claim=("203.0.113.7", 40000 + version))
    try:
        argv = gw.ssh_argv(f"{NS}/deb", keys["alice"])
        argv[argv.index("-p") + 1] = str(relay.port)
        done = subprocess.run([*argv, "echo via-proxy"], capture_output=True, timeout=60)
        assert (done.returncode, done.stdout) == (0, b"via-proxy\n"), done.stderr
    finally:
        relay.close()
    peer = f"203.0.113.7:{40000 + version}"
    opened = [e for e in gw.events("connection_open") if e.get("peer") == peer]
    assert opened and opened[0]["proxy"].startswith("127.0.0.1:")
    assert any(e.get("peer") == peer for e in gw.events("auth_success"))


def test_plain_connection_from_a_proxy_address_is_refused(make_gateway, keys: dict[str, SSHKey]) -> None:
    gw = make_gateway("--proxy-protocol", "127.0.0.1/32", "--proxy-timeout", "2")
    done = gw.ssh(f"{NS}/deb", "true", keys["alice"], timeout=30)
    assert done.returncode == 255
    assert gw.events("proxy_header_invalid")


def test_connections_waiting_for_their_header_are_capped_per_proxy(make_gateway, keys: dict[str, SSHKey]) -> None:
    """Two silent connections from the proxy's address hold its places; the third is refused at
    once, and a real login through the relay works again once they are gone."""
    import socket
    import time

    gw = make_gateway("--proxy-protocol", "127.0.0.1/32", "--proxy-timeout", "5", "--max-proxy-pending-per-source", "2")
    silent = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(2)]
    try:
        time.sleep(0.5)  # the accept loop has held both
        third = socket.create_connection(("127.0.0.1", gw.port))
        third.settimeout(5)
        assert third.recv(64) == b""  # closed at once, not after the 5 s header timeout
        third.close()
        assert any("from this proxy" in e.get("reason", "") for e in gw.events("connection_refused"))
    finally:
        for s in silent:
            s.close()
    time.sleep(0.5)
    relay = ProxyProtocolRelay(("127.0.0.1", gw.port), 2, claim=("203.0.113.9", 40100))
    try:
        argv = gw.ssh_argv(f"{NS}/deb", keys["alice"])
        argv[argv.index("-p") + 1] = str(relay.port)
        done = subprocess.run([*argv, "echo again"], capture_output=True, timeout=60)
        assert (done.returncode, done.stdout) == (0, b"again\n"), done.stderr
    finally:
        relay.close()
