"""The PROXY protocol: the strict parser (v1 and v2) and the gateway that requires it from trusted
proxies only, counting and auditing the client address it carries."""

from __future__ import annotations

import socket
import struct
import time

import paramiko
import pytest

from sshserver.ssh.proxyprotocol import (
    V2_SIGNATURE,
    ProxyHeaderError,
    TrustedProxies,
    parse_v1,
    parse_v2,
    read_header,
)
from tests.support.inproc import grant_object, running_gateway
from tests.support.tcpproxy import ProxyProtocolRelay, proxy_header

KEY = paramiko.ECDSAKey.generate()


def test_v1_tcp4_tcp6_unknown() -> None:
    h = parse_v1(b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 22\r\n")
    assert (h.version, h.source, h.destination) == (1, ("203.0.113.7", 40000), ("10.0.0.1", 22))
    h6 = parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n")
    assert h6.source == ("2001:db8::1", 1)
    assert parse_v1(b"PROXY UNKNOWN ffff::1 whatever\r\n").source is None
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    longest = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(longest) == 104 and parse_v1(longest).source is not None


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 22\n",  # no CR
    b"PROXY TCP4 203.0.113.7 10.0.0.1 40000\r\n",  # a field missing
    b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",  # IPv6 in TCP4
    b"PROXY TCP6 10.0.0.1 10.0.0.2 1 2\r\n",  # IPv4 in TCP6
    b"PROXY TCP4 10.0.0.1 10.0.0.2 65536 2\r\n",  # port out of range
    b"PROXY TCP4 10.0.0.1 10.0.0.2 01 2\r\n",  # leading zero
    b"PROXY TCP4 10.0.0.1  10.0.0.2 1 2\r\n",  # double space
    b"PROXY UDP4 10.0.0.1 10.0.0.2 1 2\r\n",
    b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\r\n",
    b"proxy TCP4 10.0.0.1 10.0.0.2 1 2\r\n",
    b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n",  # over 107 bytes
])
def test_v1_malformed(line: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_v1(line)


def v2(cmd: int, fam: int, payload: bytes) -> tuple[bytes, bytes]:
    return V2_SIGNATURE + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(payload)), payload


def test_v2_tcp4_tcp6_local_unspec_and_tlvs() -> None:
    h = parse_v2(*v2(1, 0x11, bytes([203, 0, 113, 7, 10, 0, 0, 1]) + struct.pack(">HH", 40000, 22)))
    assert (h.version, h.source, h.destination) == (2, ("203.0.113.7", 40000), ("10.0.0.1", 22))
    six = socket.inet_pton(socket.AF_INET6, "2001:db8::1") + socket.inet_pton(socket.AF_INET6, "::1")
    assert parse_v2(*v2(1, 0x21, six + struct.pack(">HH", 5, 6) + b"\x04\x00\x01x")).source == ("2001:db8::1", 5)
    assert parse_v2(*v2(0, 0x11, b"")).source is None  # LOCAL: a health check of the proxy itself
    assert parse_v2(*v2(1, 0x00, b"")).source is None  # UNSPEC


@pytest.mark.parametrize("header,payload", [
    v2(1, 0x11, b"\x01" * 11),  # too short for TCP4
    v2(1, 0x21, b"\x01" * 35),
    v2(1, 0x12, b"\x01" * 12),  # UDP
    v2(1, 0x31, b"\x01" * 216),  # UNIX
    v2(2, 0x11, b"\x01" * 12),  # unknown command
    (V2_SIGNATURE + b"\x11\x11\x00\x0c", b"\x01" * 12),  # version 1 in a v2 header
    (V2_SIGNATURE + b"\x21\x11\x00\x0d", b"\x01" * 12),  # length mismatch
    v2(1, 0x11, b"\x01" * 3000),  # over the cap
])
def test_v2_malformed(header: bytes, payload: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_v2(header, payload)


@pytest.mark.parametrize("version", [1, 2])
def test_read_header_reads_exactly_the_header(version: int) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(proxy_header(version, ("198.51.100.9", 1234), ("10.0.0.1", 22)) + b"SSH-2.0-x\r\n")
        assert read_header(b, 1.0).source == ("198.51.100.9", 1234)
        b.settimeout(1)
        assert b.recv(100) == b"SSH-2.0-x\r\n"  # nothing of the SSH stream was consumed


def test_read_header_times_out_and_refuses_plain_ssh() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"PROXY TCP4 1.2.3.4")  # and then nothing
        start = time.monotonic()
        with pytest.raises(ProxyHeaderError, match="in time"):
            read_header(b, 0.5)
        assert time.monotonic() - start < 1.5
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        with pytest.raises(ProxyHeaderError, match="no PROXY header"):
            read_header(b, 0.5)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(V2_SIGNATURE + b"\x21\x11\xff\xff")  # claims 65535 bytes: refused before reading them
        with pytest.raises(ProxyHeaderError, match="limit"):
            read_header(b, 0.5)


def test_trusted_proxies() -> None:
    t = TrustedProxies.parse("10.0.0.0/8, 2001:db8::/32")
    assert t.covers("10.1.2.3") and t.covers("2001:db8::5") and t.covers("::ffff:10.0.0.1")
    assert not t.covers("11.0.0.1") and not t.covers("not an address")
    for bad in ("", "10.0.0.0/33", "x"):
        with pytest.raises(ValueError):
            TrustedProxies.parse(bad)


def login(port: int, source: str = "127.0.0.1") -> paramiko.Transport:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    t = paramiko.Transport(sock)
    t.start_client(timeout=10)
    t.auth_publickey("ns/pod", KEY)
    return t


@pytest.mark.parametrize("version", [1, 2])
def test_gateway_takes_the_client_address_from_a_trusted_proxy(version: int) -> None:
    with running_gateway([grant_object("alice", [KEY])], proxy_protocol=("127.0.0.1/32",)) as gw:
        relay = ProxyProtocolRelay(("127.0.0.1", gw.port), version, claim=("203.0.113.7", 40000))
        try:
            t = login(relay.port)
            assert t.is_authenticated()
            t.close()
        finally:
            relay.close()
        opened = gw.audit.named("connection_open")[-1]
        assert opened["peer"] == "203.0.113.7:40000" and opened["proxy"].startswith("127.0.0.1:")
        deadline = time.monotonic() + 5
        while not gw.audit.named("auth_success") and time.monotonic() < deadline:
            time.sleep(0.02)  # written by the server just after it sent USERAUTH_SUCCESS
        assert gw.audit.named("auth_success")[-1]["peer"] == "203.0.113.7:40000"


def test_trusted_proxy_without_header_is_refused_and_others_cannot_send_one() -> None:
    with running_gateway([grant_object("alice", [KEY])], proxy_protocol=("127.0.0.1/32",),
                         proxy_timeout=1.0) as gw:
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            login(gw.port)  # from 127.0.0.1 (the proxy) but plain SSH: refused
        # From an address outside the list a PROXY line is never parsed: paramiko skips it as
        # text before the version line, and the connection keeps its real address.
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10, source_address=("127.0.0.2", 0))
        sock.sendall(proxy_header(1, ("203.0.113.9", 1), ("127.0.0.1", 22)))
        t = paramiko.Transport(sock)
        t.start_client(timeout=10)
        t.auth_publickey("ns/pod", KEY)
        assert t.is_authenticated()
        t.close()
        opened = gw.audit.named("connection_open")[-1]
        assert opened["peer"].startswith("127.0.0.2:") and "proxy" not in opened


def test_per_source_caps_count_the_address_from_the_header() -> None:
    with running_gateway([grant_object("alice", [KEY])], proxy_protocol=("127.0.0.1/32",),
                         max_unauthenticated_per_source=2) as gw:
        relays = [ProxyProtocolRelay(("127.0.0.1", gw.port), 2, claim=(f"198.51.100.{i}", 5000)) for i in (1, 2)]
        idle = []
        try:
            idle = [socket.create_connection(("127.0.0.1", relays[0].port), timeout=5) for _ in range(3)]
            assert idle[0].recv(64).startswith(b"SSH-") and idle[1].recv(64).startswith(b"SSH-")
            idle[2].settimeout(5)
            assert idle[2].recv(64) == b""  # a third from 198.51.100.1: refused
            t = login(relays[1].port)  # 198.51.100.2, through the same proxy: admitted
            assert t.is_authenticated()
            t.close()
        finally:
            for s in idle:
                s.close()
            for r in relays:
                r.close()
