"""One TCP connection to a pod port over the portforward WebSocket (v4.channel.k8s.io).

With a single port, channel 0 carries data and channel 1 errors; the first frame on each
channel starts with the port number (uint16, little endian), which is not payload. There is
no half-close: either side closing ends the stream, so one WebSocket serves one connection.
"""

from __future__ import annotations

from collections.abc import Iterator

from sshserver.kube.client import Impersonation, KubeClient
from sshserver.kube.wsdial import ChannelStream, dial

PROTOCOL = "v4.channel.k8s.io"
DATA, ERROR = 0, 1


class PortForwardStream(ChannelStream):
    @classmethod
    def open(cls, kube: KubeClient, namespace: str, pod: str, port: int,
             impersonate: Impersonation | None = None, timeout: float = 30.0) -> PortForwardStream:
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/portforward"
        ws = dial(kube, path, [("ports", str(port))], [PROTOCOL], impersonate, timeout)
        return cls(ws)

    def send_data(self, data: bytes) -> None:
        self.send(DATA, data)

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Yields (DATA|ERROR, payload) without the leading port numbers, until the stream ends."""
        seen_port = {DATA: False, ERROR: False}
        for channel, payload in self.messages():
            if channel in seen_port and not seen_port[channel]:
                seen_port[channel] = True
                payload = payload[2:]
            if payload:
                yield channel, payload
