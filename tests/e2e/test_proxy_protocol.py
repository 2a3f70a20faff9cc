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
