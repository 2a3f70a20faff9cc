"""`ssh -L`: one direct-tcpip channel bridged to one TCP connection to a pod port, through the
Kubernetes portforward API. Nothing is needed in the container image."""

from __future__ import annotations

import logging

import paramiko

from sshserver.grants.access import Grant, SessionKind
from sshserver.grants.target import TargetError, parse_target
from sshserver.kube.client import ApiError
from sshserver.kube.exitstatus import REFUSED, TRANSPORT_ERROR
from sshserver.kube.portforwardstream import DATA, ERROR, PortForwardStream
from sshserver.kube.resolver import vanished
from sshserver.kube.wsdial import whole_messages
from sshserver.observability.logevents import event
from sshserver.observability.observer import EndReason, SessionOutcome
from sshserver.sessions.lifecycle import Session, SessionRefused
from sshserver.sessions.services import SessionServices
from sshserver.ssh.connection import Connection

log = logging.getLogger("podssh.forward")


class ForwardSession(Session):
    """One direct-tcpip channel (ssh -L) bridged to one portforward stream to the pod's port."""

    def __init__(self, services: SessionServices, conn: Connection, channel: paramiko.Channel, port: int) -> None:
        super().__init__(services, conn, channel, SessionKind.FORWARD)
        self.port = port
        self.command = f"port {port}"

    def allowed_by(self, grant: Grant) -> bool:
        return grant.allow.permits(SessionKind.FORWARD, self.port)

    def _serve(self) -> SessionOutcome:
        try:
            stream = self._connect()
        except (TargetError, SessionRefused) as exc:
            event(log, "forward_refused", conn=self.conn.id, port=self.port, reason=str(exc))
            return SessionOutcome(EndReason.REFUSED, REFUSED, str(exc))
        except ApiError as exc:  # unreachable or failing API server, or the stream refused
            if self.resolved is not None and (gone := vanished(exc, self.resolved.namespace, self.resolved.pod)):
                return SessionOutcome(EndReason.REFUSED, REFUSED, str(gone))  # the pod went away since
            self._services.api_error(exc.reason)
            return SessionOutcome(EndReason.ERROR, TRANSPORT_ERROR, str(exc))
        self._attach(stream, watched=stream)
        r = self.resolved
        assert r is not None and self.grant is not None
        self._services.audit.record("forward_start", conn=self.conn.id, session=self.id, namespace=r.namespace,
                                    pod=r.pod, port=self.port, grant=self.grant.ref, user=self.grant.user)
        self._services.registry.started(self)
        error = self._copy_until_done(stream, self._pump, self._copy_from_pod, "forward-in")
        if error:
            event(log, "forward_error", conn=self.conn.id, port=self.port, error=error)
            return SessionOutcome(EndReason.ERROR, TRANSPORT_ERROR, error)
        return SessionOutcome(self._ended_by or EndReason.EXIT, 0, self._end_message)

    def _connect(self) -> PortForwardStream:
        target = parse_target(self.conn.username or "")
        if target.kind is None and target.container is not None:
            target = type(target)(target.namespace, target.name)  # a port belongs to the pod
        grants = self._services.current_grants(self.conn)
        if not grants:
            raise SessionRefused("this key's access has been revoked or has expired")
        self.resolved = self._services.resolver.resolve(target, grants, container_matters=False)
        allowed = [g for g in self.resolved.grants if self.allowed_by(g)]
        if not allowed or self._services.registry.claim(self, allowed) is None:
            raise SessionRefused(f"port {self.port} is not allowed by any grant for this pod")
        return PortForwardStream.open(self._services.kube, self.resolved.namespace, self.resolved.pod, self.port,
                                      self._impersonation(), self._services.settings.exec_timeout)

    def _copy_from_pod(self, stream: PortForwardStream) -> str | None:
        """Pod → client until the pod closes; the stream's own error, if it sent one."""
        error = None
        try:
            for channel, data in stream.frames():
                if channel == DATA:
                    self._to_client(data)
                elif channel == ERROR:
                    error = data.decode(errors="replace").strip()[:300]
        except OSError:
            self.terminate(EndReason.CLIENT)
        return error

    def _pump(self, stream: PortForwardStream) -> None:
        chan, size = self.channel, whole_messages(self._services.settings.read_size)
        try:
            while data := chan.recv(size):
                stream.send_data(data)
                self._sent_to_pod(len(data))
        except Exception:  # the stream died: the other side reports why
            return
        # The protocol has no half-close: after the client's EOF the pod may still answer, so
        # the connection lasts until the pod closes it or the client closes the channel.
        self._await_channel_close(stream.abort)

    def _end_record(self, outcome: SessionOutcome) -> tuple[str, dict[str, object]]:
        return "forward_end", {"port": self.port}
