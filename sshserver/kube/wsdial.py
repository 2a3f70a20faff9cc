"""Dials one WebSocket to the API server (exec, portforward) with the client's credentials.

Each session gets its own socket: `kubernetes.stream.stream()` patches the shared ApiClient
and must not be used from many threads. Over https the TCP + TLS connection is made by the
client's TlsDialer (tlsdial.py: one SSLContext, TLS session resumption) and handed to
websocket-client, which then only speaks the HTTP upgrade.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import websocket
from aiohttp._websocket.helpers import websocket_mask

from sshserver.kube.client import ApiError, Impersonation, KubeClient, http_reason, unreachable


class StreamError(ApiError):
    """The stream could not be opened; the message is fit for the SSH user."""


def error_message(exc: websocket.WebSocketBadStatusException) -> str:
    """The API server explains refusals in a Status body; prefer its message."""
    body = getattr(exc, "resp_body", None) or b""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return message or f"the API server refused the request (HTTP {exc.status_code})"


def dial(kube: KubeClient, path: str, query: list[tuple[str, str]], subprotocols: list[str],
         impersonate: Impersonation | None, timeout: float) -> websocket.WebSocket:
    dialer = kube.tls_dialer()
    ws = websocket.WebSocket(sslopt=kube.ssl_options(), skip_utf8_validation=True,
                             sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))
    try:
        options: dict[str, object] = {"socket": dialer.connect(timeout)} if dialer is not None else {}
        ws.connect(kube.websocket_url(path, query), header=kube.websocket_headers(impersonate),
                   subprotocols=subprotocols, timeout=timeout, **kube.proxy_options(), **options)
    except websocket.WebSocketBadStatusException as exc:
        raise StreamError(error_message(exc), http_reason(exc.status_code)) from None
    except (OSError, websocket.WebSocketException) as exc:
        failed = unreachable(exc)
        raise StreamError(str(failed), failed.reason) from None
    if dialer is not None:
        dialer.remember(ws.sock)  # the upgrade answer has been read: a TLS 1.3 ticket is in by now
    ws.settimeout(None)
    return ws


# FIN + ping opcode, MASK bit + length 0; the four mask-key bytes follow.
PING_FRAME_HEADER = bytes((0x89, 0x80))

# The API server reads WebSocket messages into 32 KiB buffers; a longer message reaches it in
# pieces, and a piece is taken for a message of its own (its first byte for a channel number):
# a stdin stream then ends early. So no message is longer than 32 KiB, channel byte included.
MAX_MESSAGE = 32 * 1024
MAX_PAYLOAD = MAX_MESSAGE - 1  # after the channel byte


def whole_messages(size: int) -> int:
    """The largest read of at most `size` bytes that `ChannelStream.send` cuts into full
    messages only. A 256 KiB read went out as eight full messages and one of 8 bytes, and each
    message costs the API server, the kubelet and the runtime a round of their own. Measured
    here in turns (8 uploads of 512 MiB each): 81 MiB/s median without that ninth message, 77
    with it."""
    return max(MAX_PAYLOAD, size // MAX_PAYLOAD * MAX_PAYLOAD)


def masked_binary_frame(channel: int, payload: bytes) -> bytes:
    """One final binary WebSocket frame whose data is the channel byte and the payload, masked
    as RFC 6455 asks of a client: four fresh random key bytes per frame. The XOR is aiohttp's
    compiled masker (in place, on a bytearray): 2 µs per 32 KiB frame here, where a one-byte
    key and `bytes.translate` took 22 µs and a Python XOR far more (upload runs at the speed
    of this loop). aiohttp is installed anyway (kopf's HTTP client); pyproject pins its range."""
    key = os.urandom(4)
    length = len(payload) + 1
    if length < 126:
        header = bytes((0x82, 0x80 | length))
    elif length < 1 << 16:
        header = bytes((0x82, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x82, 0x80 | 127)) + length.to_bytes(8, "big")
    data = bytearray(length)
    data[0] = channel
    data[1:] = payload
    websocket_mask(key, data)
    return b"".join((header, key, data))


class ChannelStream:
    """A dialled WebSocket whose binary messages start with a channel number."""

    def send(self, channel: int, data: bytes) -> None:
        step = MAX_PAYLOAD
        ws = self._ws
        if not data:
            ws.send_bytes(bytes((channel,)))
            return
        frames = [masked_binary_frame(channel, data[i:i + step]) for i in range(0, len(data), step)]
        with ws.lock:  # the client's own send lock: resizes and pings go through it as well
            if not ws.sock:
                raise websocket.WebSocketConnectionClosedException("socket is already closed.")
            try:
                ws.sock.sendall(b"".join(frames))
            except ssl.SSLEOFError:
                raise websocket.WebSocketConnectionClosedException("socket is already closed.") from None

    def __init__(self, ws: websocket.WebSocket) -> None:
        self._ws = ws
        self._closed = threading.Event()
        self._peer_closed = False  # the server's close frame came (set by the reader)
        self.last_received = time.monotonic()  # written by the reader, read by the keepalive

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """Yields (channel, payload) until the stream ends; ends quietly on close or abort.
        Every frame received, pongs included, counts as a sign of life (keepalive.py)."""
        while not self._closed.is_set():
            try:
                opcode, data = self._ws.recv_data(control_frame=True)
            except (OSError, ValueError, websocket.WebSocketException):
                # ValueError: ssl's "Read on closed or unwrapped SSL socket", when abort() closed
                # the socket under this read (a client killed mid-stream, found by the soak).
                return
            self.last_received = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self._peer_closed = True
                return
            if opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
                continue
            if data:
                if isinstance(data, str):
                    data = data.encode()
                yield data[0], data[1:]

    def frames(self) -> Iterator[tuple[int, bytes]]:
        return self.messages()

    def ping(self) -> bool:
        """Sends a WebSocket ping if that cannot block: the send lock is free (no stdin write in
        progress) and the socket takes data at once. Called by the keepalive thread, which must
        never wait on one stream. Returns whether a ping went out."""
        ws = self._ws
        if not ws.lock.acquire(blocking=False):
            return False
        try:
            sock = ws.sock
            if sock is None or self._closed.is_set():
                return False
            poller = select.poll()  # not select(): session sockets may be numbered past 1024
            poller.register(sock.fileno(), select.POLLOUT)
            if not poller.poll(0):
                return False
            sock.sendall(PING_FRAME_HEADER + os.urandom(4))  # empty payload, masked as a client must
            return True
        except (OSError, ValueError):
            return False
        finally:
            ws.lock.release()

    def abort(self) -> None:
        """Unblocks a reader in another thread; safe to call more than once."""
        self._closed.set()
        self._ws.abort()

    def close(self) -> None:
        """Ends the stream. After the server's close frame (a command that exited), the answer
        goes out without waiting for anything (RFC 6455 5.5.1: the closing handshake is then
        complete); the session's exit status reaches the client that much sooner."""
        self._closed.set()
        with contextlib.suppress(OSError, websocket.WebSocketException):
            if self._peer_closed:
                self._ws.send_close()
            else:
                self._ws.close(timeout=1)
        self._ws.shutdown()
