"""The gateway's Transport (ssh/internals/transport.py): ACKs the client's NEWKEYS at once,
so OpenSSH's SERVICE_REQUEST, held by Nagle until then, does not wait for the delayed-ACK timer."""

from __future__ import annotations

import socket
import threading
import time

import paramiko

from sshserver.config.settings import GatewaySettings
from sshserver.ssh.internals import transport as transports


class RecordingSocket(socket.socket):
    """The accepted socket, recording the options set on it."""

    calls: list[tuple[int, int, int]]

    def setsockopt(self, *args) -> None:  # type: ignore[override]
        self.calls.append(args)
        super().setsockopt(*args)


def tcp_pair() -> tuple[socket.socket, RecordingSocket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        near = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    far = RecordingSocket(fileno=accepted.detach())
    far.calls = []
    return near, far


def test_the_clients_newkeys_is_acked_at_once() -> None:
    host_key = paramiko.ECDSAKey.generate()
    near, far = tcp_pair()
    server = transports.build(far, GatewaySettings(), [host_key])
    client = paramiko.Transport(near)
    try:
        negotiated = threading.Event()
        server.start_server(event=negotiated, server=paramiko.ServerInterface())
        client.start_client(timeout=5)
        assert negotiated.wait(5)
        quickack = (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        deadline = time.monotonic() + 5
        while quickack not in far.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert quickack in far.calls
    finally:
        client.close()
        server.close()
        near.close()
        far.close()
