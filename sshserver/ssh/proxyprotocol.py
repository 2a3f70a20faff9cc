"""The PROXY protocol (HAProxy's, versions 1 and 2): the client address a load balancer forwards.

Trust model (`podssh serve --proxy-protocol CIDR,...`): a connection whose TCP peer is in one of
the listed networks MUST start with a PROXY header (v1 or v2), else it is closed; its client
address then replaces the peer for the throttle, the per-source caps and the audit (which keeps
the proxy's address too). From any other peer a header is never parsed: its bytes are just the
start of the SSH stream, which paramiko skips as pre-version text, so nobody outside the listed
networks can claim another address. This is how nginx's `set_real_ip_from` and HAProxy's
`accept-proxy` behave; OpenSSH's sshd has no PROXY support.

The reader is strict and bounded: it never reads past the header (the SSH bytes after it stay in
the socket), a v1 line is at most 107 bytes, a v2 payload at most MAX_V2_PAYLOAD bytes, and the
whole header must arrive within the timeout. Every malformed input raises ProxyHeaderError.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107
MAX_V2_PAYLOAD = 2048  # addresses (36 bytes for TCP6) plus the TLVs load balancers add
_PREFIX = 12  # both versions are at least this long: read it before deciding which one


class ProxyHeaderError(ValueError):
    """A missing, malformed, oversized or too slow PROXY header."""


@dataclass(frozen=True)
class ProxyHeader:
    version: int
    # None for v1 UNKNOWN, v2 LOCAL and v2 UNSPEC: the TCP peer itself is the client.
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[:1] == b"0"):
        raise ProxyHeaderError("bad port in PROXY v1 header")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError("bad port in PROXY v1 header")
    return port


def _address(text: bytes, version: int) -> str:
    try:
        addr = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError("bad address in PROXY v1 header") from None
    if addr.version != version:
        raise ProxyHeaderError(f"not an IPv{version} address in PROXY v1 header")
    return str(addr)


def parse_v1(line: bytes) -> ProxyHeader:
    """One v1 line, CRLF included: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n` or `PROXY UNKNOWN…`."""
    if len(line) > V1_MAX:
        raise ProxyHeaderError("PROXY v1 header longer than 107 bytes")
    if not line.startswith(b"PROXY ") or not line.endswith(b"\r\n") or b"\r\n" in line[:-2] \
            or b"\n" in line[:-2] or b"\r" in line[:-2]:
        raise ProxyHeaderError("malformed PROXY v1 header")
    fields = line[6:-2].split(b" ")
    if fields[0] == b"UNKNOWN":
        return ProxyHeader(1, None, None)
    if fields[0] not in (b"TCP4", b"TCP6") or len(fields) != 5:
        raise ProxyHeaderError("malformed PROXY v1 header")
    version = 4 if fields[0] == b"TCP4" else 6
    src, dst = _address(fields[1], version), _address(fields[2], version)
    return ProxyHeader(1, (src, _port(fields[3])), (dst, _port(fields[4])))


def parse_v2(header: bytes, payload: bytes) -> ProxyHeader:
    """`header`: the 16 fixed bytes (signature, version/command, family, length); `payload`: the rest."""
    if len(header) != 16 or not header.startswith(V2_SIGNATURE):
        raise ProxyHeaderError("malformed PROXY v2 header")
    ver_cmd, family, length = header[12], header[13], struct.unpack(">H", header[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError("PROXY v2 header of an unknown version")
    if length != len(payload) or length > MAX_V2_PAYLOAD:
        raise ProxyHeaderError("PROXY v2 header length does not match")
    command = ver_cmd & 0x0F
    if command == 0x0:  # LOCAL: the proxy's own connection (health check); addresses ignored
        return ProxyHeader(2, None, None)
    if command != 0x1:
        raise ProxyHeaderError("PROXY v2 header with an unknown command")
    if family == 0x00:  # UNSPEC
        return ProxyHeader(2, None, None)
    if family == 0x11:  # TCP over IPv4
        if length < 12:
            raise ProxyHeaderError("PROXY v2 TCP4 header too short")
        src, dst = ipaddress.IPv4Address(payload[0:4]), ipaddress.IPv4Address(payload[4:8])
        sport, dport = struct.unpack(">HH", payload[8:12])
    elif family == 0x21:  # TCP over IPv6
        if length < 36:
            raise ProxyHeaderError("PROXY v2 TCP6 header too short")
        src, dst = ipaddress.IPv6Address(payload[0:16]), ipaddress.IPv6Address(payload[16:32])
        sport, dport = struct.unpack(">HH", payload[32:36])
    else:
        raise ProxyHeaderError(f"PROXY v2 address family 0x{family:02x} is not TCP")
    return ProxyHeader(2, (str(src), sport), (str(dst), dport))


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    out = b""
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProxyHeaderError("PROXY header not received in time")
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(out))
        except TimeoutError:
            raise ProxyHeaderError("PROXY header not received in time") from None
        if not chunk:
            raise ProxyHeaderError("connection closed before the PROXY header ended")
        out += chunk
    return out


def read_header(sock: socket.socket, timeout: float) -> ProxyHeader:
    """Reads exactly one PROXY header (v1 or v2) from `sock` within `timeout` seconds; the socket's
    own timeout is changed (the caller sets the one it wants afterwards). OSError passes through."""
    deadline = time.monotonic() + timeout
    start = _recv_exact(sock, _PREFIX, deadline)
    if start == V2_SIGNATURE:
        header = start + _recv_exact(sock, 4, deadline)
        length = struct.unpack(">H", header[14:16])[0]
        if header[12] >> 4 != 2:
            raise ProxyHeaderError("PROXY v2 header of an unknown version")
        if length > MAX_V2_PAYLOAD:
            raise ProxyHeaderError(f"PROXY v2 header of {length} bytes (limit {MAX_V2_PAYLOAD})")
        return parse_v2(header, _recv_exact(sock, length, deadline))
    if not start.startswith(b"PROXY "):
        raise ProxyHeaderError("no PROXY header from a proxy address")
    line = start
    while not line.endswith(b"\r\n"):
        if len(line) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 header longer than 107 bytes")
        line += _recv_exact(sock, 1, deadline)
    return parse_v1(line)


class TrustedProxies:
    """The networks whose connections must carry a PROXY header."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """`CIDR[,CIDR...]`; ValueError naming the bad entry."""
        cidrs = [c.strip() for c in text.split(",") if c.strip()]
        if not cidrs:
            raise ValueError("expected CIDR[,CIDR...]")
        for c in cidrs:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"not a network: {c!r} (expected e.g. 10.0.0.0/8)") from None
        return cls(cidrs)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def covers(self, address: str) -> bool:
        try:
            addr = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == n.version and addr in n for n in self.networks)


def format_peer(address: tuple[str, int]) -> str:
    """`host:port` as the gateway writes peers elsewhere (IPv6 unbracketed, split at the last colon)."""
    host, port = address
    return f"{host}:{port}"
