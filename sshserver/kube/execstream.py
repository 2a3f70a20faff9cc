"""One pod exec stream over WebSocket, speaking the channel protocol v5 (v4 as fallback).

Frames carry the channel number in their first byte: 0 stdin, 1 stdout, 2 stderr, 3 status,
4 resize, 255 close (v5 only: `ff 00` is stdin EOF).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import websocket

from sshserver.kube.client import Impersonation, KubeClient
from sshserver.kube.wsdial import ChannelStream, StreamError, dial
from sshserver.observability.logevents import event

ExecError = StreamError  # the name the session code uses

log = logging.getLogger("podssh.exec")

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


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


class ExecStream(ChannelStream):
    def __init__(self, ws: websocket.WebSocket, protocol: str) -> None:
        super().__init__(ws)
        self.protocol = protocol

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
        path = f"/api/v1/namespaces/{req.namespace}/pods/{req.pod}/exec"
        ws = dial(kube, path, query, [V5, V4], req.impersonate, timeout)
        protocol = ws.subprotocol or V4
        if protocol != V5:
            event(log, "exec_protocol_fallback", logging.WARNING, protocol=protocol, stdin_eof=False)
        stream = cls(ws, protocol)
        if req.tty and req.size:
            stream.resize(*req.size)
        return stream

    def send_stdin(self, data: bytes) -> None:
        self.send(STDIN, data)

    def close_stdin(self) -> bool:
        """Signals EOF on stdin; returns False when the protocol cannot (v4)."""
        if self.protocol != V5:
            return False
        self._ws.send_bytes(b"\xff\x00")
        return True

    def resize(self, cols: int, rows: int) -> None:
        payload = json.dumps({"Width": int(cols), "Height": int(rows)}).encode()
        self._ws.send_bytes(b"\x04" + payload)
