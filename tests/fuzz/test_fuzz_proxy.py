"""Fuzzing the PROXY protocol reader: whatever a peer sends, only ProxyHeaderError escapes, the
reader never consumes more than a header, and what it accepts names a valid address."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from sshserver.ssh.proxyprotocol import V1_MAX, V2_SIGNATURE, ProxyHeaderError, parse_v1, parse_v2, read_header
from tests.fuzz.settings import FUZZ

TAIL = b"SSH-2.0-after\r\n"

v1_lines = st.one_of(
    st.binary(max_size=130),
    st.builds(lambda body: b"PROXY " + body + b"\r\n", st.binary(max_size=110)),
    st.builds(lambda proto, a, b, p, q: f"PROXY {proto} {a} {b} {p} {q}\r\n".encode(),
              st.sampled_from(["TCP4", "TCP6", "UNKNOWN", "UDP4", ""]),
              st.one_of(st.ip_addresses().map(str), st.text(max_size=20)),
              st.one_of(st.ip_addresses().map(str), st.text(max_size=20)),
              st.one_of(st.integers(-5, 70000), st.text(max_size=6)),
              st.one_of(st.integers(-5, 70000), st.text(max_size=6))),
)
v2_headers = st.builds(
    lambda vc, fam, length, payload: V2_SIGNATURE + bytes([vc, fam]) + struct.pack(">H", length) + payload,
    st.integers(0, 255), st.sampled_from([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, 0xFF]),
    st.one_of(st.integers(0, 64), st.integers(0, 65535)), st.binary(max_size=300),
)


def _check(header) -> None:
    if header.source is not None:
        ipaddress.ip_address(header.source[0])
        assert 0 <= header.source[1] <= 65535


@FUZZ
@given(st.one_of(v1_lines, v2_headers, st.binary(max_size=400)))
def test_read_header_raises_only_its_own_error(data: bytes) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(data + TAIL)
        a.shutdown(socket.SHUT_WR)
        try:
            header = read_header(b, 0.2)
        except ProxyHeaderError:
            return
        _check(header)
        b.settimeout(1)
        rest = b""
        while chunk := b.recv(4096):
            rest += chunk
        # Only the header was read, whole: what follows is left as sent. (A v2 header whose declared
        # length runs past `data` rightly takes the first bytes of TAIL as its payload.)
        assert (data + TAIL).endswith(rest) and len(data) + len(TAIL) - len(rest) <= max(V1_MAX, 16 + 65535)


@FUZZ
@given(v1_lines)
def test_parse_v1_raises_only_its_own_error(line: bytes) -> None:
    with contextlib.suppress(ProxyHeaderError):
        _check(parse_v1(line))


@FUZZ
@given(st.binary(min_size=16, max_size=16), st.binary(max_size=300), st.booleans())
def test_parse_v2_raises_only_its_own_error(header: bytes, payload: bytes, signed: bool) -> None:
    if signed:
        header = V2_SIGNATURE + header[12:]
    with contextlib.suppress(ProxyHeaderError):
        _check(parse_v2(header, payload))
