"""Dials one WebSocket to the API server (exec, portforward) with the client's credentials.

Each session gets its own socket: `kubernetes.stream.stream()` patches the shared ApiClient
and must not be used from many threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator

import websocket

from .kube import ApiError, Impersonation, KubeClient, http_reason, unreachable


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
    ws = websocket.WebSocket(sslopt=kube.ssl_options(), skip_utf8_validation=True,
                             sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))
    try:
        ws.connect(kube.websocket_url(path, query), header=kube.websocket_headers(impersonate),
                   subprotocols=subprotocols, timeout=timeout)
    except websocket.WebSocketBadStatusException as exc:
        raise StreamError(error_message(exc), http_reason(exc.status_code)) from None
    except (OSError, websocket.WebSocketException) as exc:
        failed = unreachable(exc)
        raise StreamError(str(failed), failed.reason) from None
    ws.settimeout(None)
    return ws


# The API server reads WebSocket messages into 32 KiB buffers; a longer message reaches it in
# pieces, and a piece is taken for a message of its own (its first byte for a channel number):
# a stdin stream then ends early. So no message is longer than 32 KiB, channel byte included.
MAX_MESSAGE = 32 * 1024


# Client frames must be masked. A key of four equal random bytes makes the mask a byte
# substitution, which bytes.translate does in C: the generic XOR in Python cost a fifth of the
# upload path. The key stays unpredictable per frame; the connection is TLS to the API server.
_XOR_TABLES = [bytes(i ^ k for i in range(256)) for k in range(256)]


def masked_binary_frame(channel: int, payload: bytes) -> bytes:
    """One final binary WebSocket frame whose data is the channel byte and the payload."""
    key = os.urandom(1)[0]
    length = len(payload) + 1
    if length < 126:
        header = bytes((0x82, 0x80 | length))
    elif length < 1 << 16:
        header = bytes((0x82, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x82, 0x80 | 127)) + length.to_bytes(8, "big")
    return b"".join((header, bytes((key, key, key, key, channel ^ key)), payload.translate(_XOR_TABLES[key])))


class ChannelStream:
    """A dialled WebSocket whose binary messages start with a channel number."""

    def send(self, channel: int, data: bytes) -> None:
        step = MAX_MESSAGE - 1
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

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """Yields (channel, payload) until the stream ends; ends quietly on close or abort."""
        while not self._closed.is_set():
            try:
                opcode, data = self._ws.recv_data()
            except (OSError, websocket.WebSocketException):
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            if data:
                if isinstance(data, str):
                    data = data.encode()
                yield data[0], data[1:]

    def frames(self) -> Iterator[tuple[int, bytes]]:
        return self.messages()

    def abort(self) -> None:
        """Unblocks a reader in another thread; safe to call more than once."""
        self._closed.set()
        self._ws.abort()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self._ws.close(timeout=1)
        self._ws.shutdown()
