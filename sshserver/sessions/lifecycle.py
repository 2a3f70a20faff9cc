"""What every bridged channel shares, whatever it carries (shell/exec/sftp or a forwarded port):
its thread, its grant, how it is ended from outside, and how it reports itself."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paramiko

from sshserver.grants.access import Grant
from sshserver.kube.client import Impersonation
from sshserver.kube.exitstatus import TRANSPORT_ERROR
from sshserver.kube.keepalive import Pingable
from sshserver.kube.resolver import ResolvedTarget
from sshserver.observability.observer import SessionRecord
from sshserver.ssh.connection import Connection

if TYPE_CHECKING:
    from sshserver.gateway.core import Gateway

log = logging.getLogger("podssh.session")


class SessionRefused(Exception):
    """The session cannot start; the message is shown to the user."""


@dataclass(frozen=True)
class SessionEnd:
    code: int
    reason: str  # exit, client, error, refused, revoked, expired, idle, limit, shutdown
    error: str | None = None


class Bridge:
    def __init__(self, gateway: Gateway, conn: Connection, channel: paramiko.Channel, kind: str) -> None:
        self._gw = gateway
        self.conn = conn
        self.channel = channel
        self.kind = kind
        self._stream: object | None = None  # anything with abort(): set once connected to the pod
        self._done = threading.Event()
        self._ended_by: str | None = None  # why someone else ended the session
        self._end_message: str | None = None
        self.resolved: ResolvedTarget | None = None
        self.grant: Grant | None = None
        self.started = time.monotonic()
        self.last_activity = self.started
        self.opened = False  # the stream to the pod was established
        self.warned = False  # the one-minute warning before maxSessionDuration was shown
        self.bytes_in = 0
        self.bytes_out = 0
        self._to_pod_bytes = gateway.metrics.bytes.labels("to_pod")
        self._from_pod_bytes = gateway.metrics.bytes.labels("from_pod")
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"{kind}-{conn.id}-{channel.get_id()}")

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def allowed_by(self, grant: Grant) -> bool:
        """Whether this grant permits what this session does (kind, port)."""
        raise NotImplementedError

    def _impersonation(self) -> Impersonation | None:
        """Who the pod streams act as: the grant's user in impersonation mode, else the gateway."""
        g = self.grant
        return Impersonation(g.user, g.groups) if g is not None and self._gw.settings.impersonate else None

    def _to_client(self, data: bytes, stderr: bool = False) -> None:
        """Pod output to the client, counted (bytes, metrics, activity)."""
        if stderr:
            self.channel.sendall_stderr(data)
        else:
            self.channel.sendall(data)
        self.bytes_out += len(data)
        self._from_pod_bytes.inc(len(data))
        self.last_activity = time.monotonic()

    def _sent_to_pod(self, size: int) -> None:
        """Client input that reached the pod, counted (bytes, metrics, activity)."""
        self.bytes_in += size
        self._to_pod_bytes.inc(size)
        self.last_activity = time.monotonic()

    def record(self) -> SessionRecord | None:
        g, r = self.grant, self.resolved
        if g is None or r is None:
            return None
        return SessionRecord(g.namespace, g.name, g.uid, g.user, self.kind, r.namespace, r.pod, r.container,
                             self.conn.peer)

    def notify(self, line: str) -> None:
        """One line to the user, without ending the session (where the channel can show one)."""

    def _watch_api(self, stream: Pingable) -> None:
        """A stream the API server stops answering ends the session (keepalive.py)."""
        def dead(silent: float) -> None:  # on the keepalive thread: abort only, never block
            self._gw.api_error("Unreachable")
            self.terminate("error", f"the Kubernetes API server stopped answering (nothing for {int(silent)}s)")

        self._gw.keepalive.watch(stream, dead)

    def terminate(self, reason: str, message: str | None = None) -> None:
        """Ends the session from outside (client gone, revocation, shutdown)."""
        if self._done.is_set() or self._ended_by:
            return
        self._ended_by, self._end_message = reason, message
        stream = self._stream
        if stream is not None:  # else the session thread checks _ended_by after connecting
            stream.abort()  # type: ignore[attr-defined]

    def _run(self) -> None:
        end = SessionEnd(TRANSPORT_ERROR, "error", "internal error")
        try:
            end = self._serve()
        except Exception:  # a bug must end one session, never the process
            log.exception("session_crashed", extra={"fields": {"conn": self.conn.id}})
        finally:
            self._finish(end)

    def _serve(self) -> SessionEnd:
        raise NotImplementedError

    def _finish(self, end: SessionEnd) -> None:
        raise NotImplementedError
