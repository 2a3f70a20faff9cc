"""One pod exec stream over WebSocket, speaking the channel protocol v5 (v4 as fallback).

Frames carry the channel number in their first byte: 0 stdin, 1 stdout, 2 stderr, 3 status,
4 resize, 255 close (v5 only: `ff 00` is stdin EOF).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import websocket

from .kube import Impersonation, KubeClient, http_reason
from .logevents import event

log = logging.getLogger("podssh.exec")

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class ExecError(Exception):
    """The exec stream could not be opened; the message is fit for the SSH user."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # bounded: an HTTP status name or "Unreachable"


@dataclass(frozen=True)
class ExecRequest:
    namespace: str
    pod: str
    container: str
    command: tuple[str, ...]
    tty: bool = False
    stdin: bool = True
    size: tuple[int, int] | None = None  # (cols, rows) applied before any output
    impersonate: Impersonation | None = None


def _error_message(exc: websocket.WebSocketBadStatusException) -> str:
    """The API server explains refusals in a Status body; prefer its message."""
    body = getattr(exc, "resp_body", None) or b""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return message or f"the API server refused the exec request (HTTP {exc.status_code})"


class ExecStream:
    def __init__(self, ws: websocket.WebSocket, protocol: str) -> None:
        self._ws = ws
        self.protocol = protocol
        self._closed = threading.Event()

    @property
    def can_close_stdin(self) -> bool:
        return self.protocol == V5

    @classmethod
    def open(cls, kube: KubeClient, req: ExecRequest, timeout: float = 30.0) -> ExecStream:
        query = [("container", req.container), ("stdout", "true")]
        query += [("command", arg) for arg in req.command]
        if req.stdin:
            query.append(("stdin", "true"))
        if req.tty:
            query.append(("tty", "true"))  # the kubelet merges stderr into the terminal
        else:
            query.append(("stderr", "true"))
        url = kube.websocket_url(f"/api/v1/namespaces/{req.namespace}/pods/{req.pod}/exec", query)
        ws = websocket.WebSocket(sslopt=kube.ssl_options(), skip_utf8_validation=True,
                                 sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))
        try:
            ws.connect(url, header=kube.websocket_headers(req.impersonate),
                       subprotocols=[V5, V4], timeout=timeout)
        except websocket.WebSocketBadStatusException as exc:
            raise ExecError(_error_message(exc), http_reason(exc.status_code)) from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ExecError(f"cannot reach the Kubernetes API server: {exc}", "Unreachable") from None
        ws.settimeout(None)
        protocol = ws.subprotocol or V4
        if protocol != V5:
            event(log, "exec_protocol_fallback", logging.WARNING, protocol=protocol, stdin_eof=False)
        stream = cls(ws, protocol)
        if req.tty and req.size:
            stream.resize(*req.size)
        return stream

    def send_stdin(self, data: bytes) -> None:
        self._ws.send_bytes(b"\x00" + data)

    def close_stdin(self) -> bool:
        """Signals EOF on stdin; returns False when the protocol cannot (v4)."""
        if self.protocol != V5:
            return False
        self._ws.send_bytes(b"\xff\x00")
        return True

    def resize(self, cols: int, rows: int) -> None:
        payload = json.dumps({"Width": int(cols), "Height": int(rows)}).encode()
        self._ws.send_bytes(b"\x04" + payload)

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Yields (channel, payload) until the stream ends; ends quietly on close or abort."""
        ws = self._ws
        while not self._closed.is_set():
            try:
                opcode, data = ws.recv_data()
            except (OSError, websocket.WebSocketException):
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            if not data:
                continue
            if isinstance(data, str):
                data = data.encode()
            yield data[0], data[1:]

    def abort(self) -> None:
        """Unblocks a reader in another thread; safe to call more than once."""
        self._closed.set()
        self._ws.abort()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self._ws.close(timeout=1)
        self._ws.shutdown()
