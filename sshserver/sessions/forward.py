"""`ssh -L`: one direct-tcpip channel bridged to one TCP connection to a pod port, through the
Kubernetes portforward API. Nothing is needed in the container image."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING

import paramiko

from sshserver.grants.access import Grant
from sshserver.grants.target import TargetError, parse_target
from sshserver.kube.client import ApiError
from sshserver.kube.exitstatus import TRANSPORT_ERROR
from sshserver.kube.portforwardstream import DATA, ERROR, PortForwardStream
from sshserver.observability.logevents import event
from sshserver.sessions.lifecycle import Bridge, SessionEnd, SessionRefused
from sshserver.ssh.connection import Connection

if TYPE_CHECKING:
    from sshserver.gateway.core import Gateway

log = logging.getLogger("podssh.forward")

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


class ForwardSession(Bridge):
    def __init__(self, gateway: Gateway, conn: Connection, channel: paramiko.Channel, port: int) -> None:
        super().__init__(gateway, conn, channel, "forward")
        self.port = port

    def allowed_by(self, grant: Grant) -> bool:
        return self.port in grant.allow.port_forward

    def _serve(self) -> SessionEnd:
        try:
            stream = self._connect()
        except (TargetError, SessionRefused) as exc:
            event(log, "forward_refused", conn=self.conn.id, port=self.port, reason=str(exc))
            return SessionEnd(1, "refused", str(exc))
        except ApiError as exc:  # unreachable or failing API server, or the stream refused
            self._gw.api_error(exc.reason)
            return SessionEnd(TRANSPORT_ERROR, "error", str(exc))
        self._stream = stream
        self._watch_api(stream)
        self.opened = True
        if self._ended_by:
            stream.abort()
        r = self.resolved
        assert r is not None and self.grant is not None
        self._gw.audit.record("forward_start", conn=self.conn.id, namespace=r.namespace, pod=r.pod, port=self.port,
                              grant=self.grant.ref, user=self.grant.user)
        self._gw.observe_start(self)
        pump = threading.Thread(target=self._pump, args=(stream,), daemon=True,
                                name=f"forward-in-{self.conn.id}-{self.channel.get_id()}")
        pump.start()
        error = None
        try:
            for channel, data in stream.frames():
                if channel == DATA:
                    self._to_client(data)
                elif channel == ERROR:
                    error = data.decode(errors="replace").strip()[:300]
        except OSError:
            self.terminate("client")
        finally:
            self._gw.keepalive.forget(stream)
            stream.close()
            self._done.set()
            # The pump may sit in recv() on a silent client: it ends when the channel closes,
            # which _finish does next. Waiting for it here would delay every ending.
            pump.join(0.05)
        if error:
            event(log, "forward_error", conn=self.conn.id, port=self.port, error=error)
            return SessionEnd(TRANSPORT_ERROR, "error", error)
        return SessionEnd(0, self._ended_by or "exit", self._end_message)

    def _connect(self) -> PortForwardStream:
        target = parse_target(self.conn.username or "")
        if target.kind is None and target.container is not None:
            target = type(target)(target.namespace, target.name)  # a port belongs to the pod
        grants = self._gw.current_grants(self.conn)
        if not grants:
            raise SessionRefused("this key's access has been revoked or has expired")
        self.resolved = self._gw.resolver.resolve(target, grants, container_matters=False)
        allowed = [g for g in self.resolved.grants if self.allowed_by(g)]
        if not allowed or self._gw.claim_grant(self, allowed) is None:
            raise SessionRefused(f"port {self.port} is not allowed by any grant for this pod")
        return PortForwardStream.open(self._gw.kube, self.resolved.namespace, self.resolved.pod, self.port,
                                      self._impersonation(), self._gw.settings.exec_timeout)

    def _pump(self, stream: PortForwardStream) -> None:
        chan, size = self.channel, self._gw.settings.read_size
        try:
            while data := chan.recv(size):
                stream.send_data(data)
                self._sent_to_pod(len(data))
        except Exception:  # the stream died: the other side reports why
            return
        # The protocol has no half-close: after the client's EOF the pod may still answer, so
        # the connection lasts until the pod closes it or the client closes the channel.
        while not self._done.wait(0.25):
            if chan.closed:
                stream.abort()
                return

    def _finish(self, end: SessionEnd) -> None:
        self._done.set()
        with contextlib.suppress(OSError, EOFError):
            self.channel.close()
        r = self.resolved
        self._gw.audit.record("forward_end", conn=self.conn.id, reason=end.reason, error=end.error,
                              namespace=r.namespace if r else None, pod=r.pod if r else None, port=self.port,
                              duration_s=round(time.monotonic() - self.started, 3),
                              bytes_in=self.bytes_in, bytes_out=self.bytes_out)
        self._gw.session_ended(self, end)
