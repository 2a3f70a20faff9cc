"""What every bridged channel shares, whatever it carries (shell/exec/sftp or a forwarded port):
its thread, its grant, how it is ended from outside, and the one skeleton of its life.

The skeleton (`_run`, the template):

    _serve()                      subclass: resolve the target, claim a grant, open the stream
      _attach(stream)             the stream is the session's; a terminate() that came first aborts it
      _copy_until_done(...)       a pump thread copies client → pod while this thread copies pod → client
    _finish(outcome)              subclass: tell the client; then: audit, forget the channel,
                                  give back the place (registry.ended), and `_after_end()`

Threads: `_run` and everything it calls runs on the session's own thread; `terminate`, `notify`,
`request_resize` and `stop_output` may be called by any other thread (Transport, enforcer,
supervisor, keepalive) and never block: they set a flag, abort a socket or queue work.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import paramiko

from sshserver.grants.access import Grant, SessionKind
from sshserver.grants.target import TargetError
from sshserver.kube.client import ApiError, Impersonation
from sshserver.kube.ephemeral import DebugContainer
from sshserver.kube.exitstatus import REFUSED, TRANSPORT_ERROR
from sshserver.kube.keepalive import Pingable
from sshserver.kube.resolver import ResolvedTarget
from sshserver.observability.observer import EndReason, SessionCounters, SessionOutcome, SessionRecord
from sshserver.sessions.services import SessionServices
from sshserver.ssh.connection import ChannelState, Connection

log = logging.getLogger("podssh.session")

ANSWER_TIMEOUT = 5.0  # paramiko answers right after the hook returns; this only bounds a surprise
# After the client's EOF, a pump waits for the channel to close: paramiko sets the channel's
# status_event when it closes, so the wait needs no timer; this is only a safety net.
CLOSE_WAIT_SAFETY = 30.0
# A client may also set status_event with an "exit-status" request of its own (meant for
# clients, sent to the server here): then the close can only be noticed by looking.
CLOSE_POLL = 0.5

T = TypeVar("T")


class SessionRefused(Exception):
    """The session cannot start; the message is shown to the user."""


class Stream(Protocol):
    """What the lifecycle needs of a pod stream (exec, portforward, or the SFTP channel itself)."""

    def abort(self) -> None: ...


class ChannelCloser:
    """What terminate() aborts when the session has no pod stream of its own (the gateway's SFTP
    server, the listing of targets): the channel."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel

    def abort(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._channel.close()


class Session:
    """One channel bridged to the pod. Subclasses: ExecSession (shell, exec, sftp),
    ForwardSession (ssh -L) and ListingSession (ssh ls@gateway, which reaches no pod)."""

    def __init__(self, services: SessionServices, conn: Connection, channel: paramiko.Channel,
                 kind: SessionKind) -> None:
        self._services = services
        self.conn = conn
        self.channel = channel
        self.kind = kind
        # Random rather than counted: replicas name their SSHSession objects after it, and two
        # replicas count alike.
        self.id = secrets.token_hex(6)
        self.command: str | None = None  # what the record calls the session's command (subclasses)
        self._stream: Stream | None = None  # set once connected to the pod
        self._done = threading.Event()
        self._ended_by: EndReason | None = None  # why someone else ended the session
        self._end_message: str | None = None
        self.resolved: ResolvedTarget | None = None
        self.grant: Grant | None = None  # written only by the registry (claim, rebind)
        self.started = time.monotonic()
        self.started_at = time.time()  # the same moment on the wall clock, for whoever shows it
        self.last_activity = self.started
        self.opened = False  # the stream to the pod was established
        self.warned = False  # written only by the enforcer: the one-minute warning was shown
        # Set (by ExecSession) once the session runs in a debug container; the enforcer keeps
        # such a session only on a grant whose spec.debug still lists its image.
        self.debug: DebugContainer | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        # Set by the gateway for a session started from a request hook: set once paramiko has
        # answered that request (ssh/internals/transport.expect_answer).
        self.answered: threading.Event | None = None
        self._to_pod_bytes = services.metrics.bytes.labels("to_pod")
        self._from_pod_bytes = services.metrics.bytes.labels("from_pod")
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"{kind}-{conn.id}-{channel.get_id()}")

    # --- seen by the gateway (registry, enforcer, supervisor) -------------------------------

    def start(self) -> None:
        """Starts the session's thread (raises RuntimeError when no thread can be started)."""
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def allowed_by(self, grant: Grant) -> bool:
        """Whether this grant permits what this session does (its kind, its port)."""
        return grant.allow.permits(self.kind)

    def record(self) -> SessionRecord | None:
        g, r = self.grant, self.resolved
        if g is None or r is None:
            return None
        return SessionRecord(g.namespace, g.name, g.uid, g.user, self.kind, r.namespace, r.pod, r.container,
                             self.conn.peer, session_id=self.id, command=self.command, started_at=self.started_at,
                             pod_uid=r.uid, counters=self.counters)

    def counters(self) -> SessionCounters:
        """The traffic so far (any thread: reads three attributes, never blocks)."""
        idle = time.monotonic() - self.last_activity
        return SessionCounters(self.bytes_in, self.bytes_out, time.time() - max(0.0, idle))

    def terminate(self, reason: EndReason | str, message: str | None = None) -> None:
        """Ends the session from outside (client gone, revocation, shutdown). Any thread; never
        blocks: it aborts the stream, and the session's thread reports the end."""
        if self._done.is_set() or self._ended_by:
            return
        self._ended_by, self._end_message = EndReason(reason), message
        stream = self._stream
        if stream is not None:  # else the session thread checks _ended_by after connecting
            stream.abort()

    def notify(self, line: str) -> None:
        """One line to the user, without ending the session (where the channel can show one).
        Any thread; never blocks (the write is queued)."""

    def request_resize(self, cols: int, rows: int) -> None:
        """The client's terminal changed size (Transport thread; must not block)."""

    def stop_output(self) -> None:
        """The client reads no more output (Transport thread; must not block)."""

    # --- the skeleton, on the session's thread ---------------------------------------------

    def _run(self) -> None:
        outcome = SessionOutcome(EndReason.ERROR, TRANSPORT_ERROR, "internal error")
        if self.answered is not None:  # nothing goes to the channel before its request's answer
            self.answered.wait(ANSWER_TIMEOUT)
        try:
            outcome = self._serve()
        except Exception:  # a bug must end one session, never the process
            log.exception("session_crashed", extra={"fields": {"conn": self.conn.id}})
        finally:
            self._finish(outcome)

    def _serve(self) -> SessionOutcome:
        """Resolve, claim a grant, open the stream, copy until the end (the subclass's work)."""
        raise NotImplementedError

    def _attach(self, stream: Stream, watched: Pingable | None = None) -> None:
        """The stream to the pod is open: it is the session's from now on. A stream of the API
        server is watched by the keepalive; a terminate() that came while it opened aborts it."""
        self._stream = stream
        if watched is not None:
            self._watch_api(watched)
        self.opened = True
        if self._ended_by:
            stream.abort()

    def _copy_until_done(self, stream: Any, pump: Callable[[Any], None], copy: Callable[[Any], T],
                         pump_name: str) -> T:
        """Runs `pump(stream)` (client → pod) on a second thread while `copy(stream)` (pod →
        client) runs here; then forgets and closes the stream."""
        thread = threading.Thread(target=pump, args=(stream,), daemon=True,
                                  name=f"{pump_name}-{self.conn.id}-{self.channel.get_id()}")
        thread.start()
        try:
            return copy(stream)
        finally:
            self._services.keepalive.forget(stream)
            stream.close()
            self._done.set()
            # The pump may sit in recv() on a silent client: it ends when the channel closes,
            # which _finish does next. Waiting for it here would delay every ending.
            thread.join(0.05)

    def _ended_from_outside(self) -> SessionOutcome | None:
        if self._ended_by:
            return SessionOutcome(self._ended_by, TRANSPORT_ERROR, self._end_message)
        return None

    def _finish(self, outcome: SessionOutcome) -> None:
        """Ends the channel (subclass), then records the end, exactly once."""
        self._done.set()
        self._close_channel(outcome)
        event, fields = self._end_record(outcome)
        r = self.resolved
        self._services.audit.record(
            event, conn=self.conn.id, session=self.id, reason=outcome.reason, error=outcome.message,
            namespace=r.namespace if r else None, pod=r.pod if r else None,
            duration_s=round(time.monotonic() - self.started, 3), bytes_in=self.bytes_in,
            bytes_out=self.bytes_out, **fields)
        self.conn.forget(self.channel.get_id())
        self._services.registry.ended(self, outcome)
        self._after_end()

    def _close_channel(self, outcome: SessionOutcome) -> None:
        """Tells the client how it ended and closes the channel (subclasses say more)."""
        with contextlib.suppress(OSError, EOFError):
            self.channel.close()

    def _end_record(self, outcome: SessionOutcome) -> tuple[str, dict[str, Any]]:
        """The audit event's name and the fields of its kind."""
        raise NotImplementedError

    def _after_end(self) -> None:
        """After the session gave back its place and metrics (the hangup runs here)."""

    # --- helpers for subclasses -------------------------------------------------------------

    def _impersonation(self) -> Impersonation | None:
        """Who the pod streams act as: the grant's user in impersonation mode, else the gateway."""
        g = self.grant
        return Impersonation(g.user, g.groups) if g is not None and self._services.settings.impersonate else None

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

    def _await_channel_close(self, closed: Callable[[], None]) -> None:
        """After the client's EOF (on the pump's thread): returns when the session has ended, or
        calls `closed` once the client closed the channel. An exec of `tail -f` with stdin at
        EOF polled the channel twice a second before, for as long as it ran."""
        chan = self.channel
        while not self._done.is_set():
            if chan.closed:
                closed()
                return
            if chan.status_event.is_set():  # not by a close: see CLOSE_POLL
                self._done.wait(CLOSE_POLL)
            else:
                chan.status_event.wait(CLOSE_WAIT_SAFETY)  # the session's own close wakes it too

    def _watch_api(self, stream: Pingable) -> None:
        """A stream the API server stops answering ends the session (keepalive.py)."""
        def dead(silent: float) -> None:  # on the keepalive thread: abort only, never block
            self._services.api_error("Unreachable")
            self.terminate(EndReason.ERROR,
                           f"the Kubernetes API server stopped answering (nothing for {int(silent)}s)")

        self._services.keepalive.watch(stream, dead)


class ReportingSession(Session):
    """A session on a session channel (shell, exec, sftp, or the `ls` listing): it ends with a
    `podssh:` line on stderr when there is something to say, and an exit status."""

    _requests: ChannelState  # the channel's pty and env, given by the subclass

    @property
    def tty(self) -> bool:
        return self._requests.pty is not None

    def _prepared(self, prepare: Callable[[], T]) -> T | SessionOutcome:
        """First on the session thread: the notices queued for the user go out, then `prepare`
        runs; a refusal (bad target, not permitted) or an API failure becomes the outcome."""
        for notice in self.conn.take_notices() + self._requests.notices:
            self._write_error(f"podssh: {notice}")
        try:
            return prepare()
        except (TargetError, SessionRefused) as exc:
            return SessionOutcome(EndReason.REFUSED, REFUSED, str(exc))
        except ApiError as exc:
            self._services.api_error(exc.reason)
            return SessionOutcome(EndReason.ERROR, TRANSPORT_ERROR, str(exc))

    def _write_error(self, line: str) -> None:
        """One line on the client's stderr (CR LF under a pty); nothing if the client is gone."""
        data = (line + ("\r\n" if self.tty else "\n")).encode()
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.channel.sendall_stderr(data)

    def _close_channel(self, outcome: SessionOutcome) -> None:
        chan = self.channel
        # Nothing more goes to a channel the client (or paramiko's SFTP server) closed already.
        if outcome.reason is not EndReason.CLIENT and not chan.closed:
            if outcome.message:
                self._write_error(f"podssh: {outcome.message}")
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                chan.send_exit_status(outcome.exit_status)
                chan.shutdown_write()
        with contextlib.suppress(OSError, EOFError):
            chan.close()
