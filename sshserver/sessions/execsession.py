"""One SSH session channel bridged to one pod exec stream.

Two threads per session: this one resolves the target, opens the stream and copies
stdout/stderr to the channel; a second copies the channel to stdin. Both block on the
other side's flow control (SSH window, TCP), so nothing buffers without bound.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import replace

import paramiko

from sshserver.grants.access import DEBUG_IMAGE_ENV, Grant, SessionKind
from sshserver.grants.target import parse_target
from sshserver.kube.ephemeral import ROOT, DebugContainers, DebugError
from sshserver.kube.execstream import STATUS, STDERR, STDOUT, ExecError, ExecRequest, ExecStream
from sshserver.kube.exitstatus import NOT_FOUND, REFUSED, TRANSPORT_ERROR, ExitStatus, parse_status
from sshserver.kube.podrunner import PodRunner
from sshserver.kube.resolver import vanished
from sshserver.kube.wsdial import whole_messages
from sshserver.observability.logevents import event
from sshserver.observability.observer import EndReason, SessionOutcome
from sshserver.observability.recording import Recording
from sshserver.sessions import hangup
from sshserver.sessions.command import build_command, missing_tool_hint
from sshserver.sessions.exittrailer import TrailerFilter
from sshserver.sessions.exittrailer import new_token as new_trailer_token
from sshserver.sessions.hangupqueue import Target as HangupTarget
from sshserver.sessions.lifecycle import ChannelCloser, ReportingSession, SessionRefused
from sshserver.sessions.services import SessionServices
from sshserver.sessions.sftpgateway import SHELL, GatewaySFTPServer, PodFileSystem, Tools
from sshserver.sessions.sftpgateway import probe as sftp_probe
from sshserver.ssh.connection import ChannelState, Connection

log = logging.getLogger("podssh.session")

DEBUG_HINT = "a grant with spec.debug would let podssh add a debug container to this pod"


def no_shell(status: ExitStatus) -> bool:
    """The runtime's answer to an exec of a program the container does not have (not a shell's
    own 127, which comes without an error)."""
    return status.code == NOT_FOUND and status.error is not None


def no_shell_message(container: str, status: ExitStatus, grant: Grant | None) -> str:
    """The "no shell" refusal, with the hint when the grant has no spec.debug."""
    text = f"no shell in this container ({container}: {status.error})"
    return text if grant is not None and grant.debug is not None else f"{text}; {DEBUG_HINT}"


class ExecSession(ReportingSession):
    """A session channel (shell, exec, sftp) bridged to a pod exec stream."""

    def __init__(self, services: SessionServices, conn: Connection, channel: paramiko.Channel, kind: SessionKind,
                 command: str | None, requests: ChannelState) -> None:
        # A certificate's force-command runs instead of what the client asked, as under sshd; it
        # is a command, so the grant must allow exec. sftp is refused then (see _prepare).
        cert = conn.identity.certificate if conn.identity is not None else None
        kind = SessionKind(kind)
        self.forced = cert.force_command if cert is not None and kind is not SessionKind.SFTP else None
        self.requested_command = command
        if self.forced is not None:
            kind, command = SessionKind.EXEC, self.forced
        self.sftp_forbidden = cert is not None and cert.force_command is not None and kind is SessionKind.SFTP
        super().__init__(services, conn, channel, kind)
        self.command = command
        self._requests = requests
        self._stream: ExecStream | None = None
        # Resizes: `_size_lock` guards the pending size and is never held during I/O (the
        # Transport thread takes it); `_send_lock` keeps resizes in order with each other and,
        # taken by the stdin pump, ahead of the stdin that followed them. At most one flush per
        # session waits in the gateway's small control pool, so a stuck stream holds one worker
        # (until the API keepalive aborts it), never all of them.
        self._size_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending_size: tuple[int, int] | None = None
        self._flush_scheduled = False
        self._recording: Recording | None = None
        self._recorded_size: tuple[int, int] | None = None
        self._output_stopped = threading.Event()
        # Marks the exec's processes, for the hangup after a session that did not end by its
        # command's exit (hangup.py).
        self._token = hangup.new_token() if kind in (SessionKind.SHELL, SessionKind.EXEC) and \
            services.settings.hang_up else None
        self._trailer: TrailerFilter | None = None  # set for a command without a terminal
        self._request: ExecRequest | None = None
        self._exited = False
        self._debug_image: str | None = None  # asked for by PODSSH_DEBUG_IMAGE (checked in _prepare)
        self.target_container: str | None = None  # the container the user named, when it does

    # --- called from other threads ----------------------------------------------------------

    def request_resize(self, cols: int, rows: int) -> None:
        """Called by the Transport thread: records the size and returns at once; the write
        happens in the control pool, in order with stdin."""
        self._schedule_resize((cols, rows), replace_pending=True)

    def _schedule_resize(self, size: tuple[int, int], replace_pending: bool) -> None:
        with self._size_lock:
            if replace_pending or self._pending_size is None:
                self._pending_size = size
            if self._flush_scheduled:
                return  # the flush already queued or running sends the latest size
            self._flush_scheduled = True
        self._services.run_in_control(self._flush_resize)

    def _flush_resize(self) -> None:
        """Sends pending sizes until none is left (control pool, stdin pump or session thread)."""
        with self._send_lock:
            while True:
                with self._size_lock:
                    stream, size = self._stream, self._pending_size
                    if stream is None or size is None:
                        # Before the stream opens, the session thread flushes once it is there.
                        self._flush_scheduled = False
                        return
                    self._pending_size = None
                with contextlib.suppress(Exception):  # a dead stream is reported by the output side
                    stream.resize(*size)
                if self._recording is not None and size != self._recorded_size:
                    self._recording.resize(*size)
                    self._recorded_size = size

    def _resend_size(self) -> None:
        """Sends the terminal size again once the process surely runs (it has written): a resize
        that reached the runtime before the process started was dropped."""
        pty = self._requests.pty
        if pty is not None:
            self._schedule_resize((pty.cols, pty.rows), replace_pending=False)

    def stop_output(self) -> None:
        """The client can write no more of the output (eow@openssh.com). As under sshd, the
        command dies at its next write to stdout; what it had written before is dropped."""
        self._output_stopped.set()

    def notify(self, line: str) -> None:
        """One line on the user's stderr, without ending the session. Queued in the control pool:
        the caller (the enforcer) never waits for a client that does not read."""
        self._services.run_in_control(self._write_error, line)

    # --- the session thread -----------------------------------------------------------------

    def _serve(self) -> SessionOutcome:
        req = self._prepared(self._prepare)
        if isinstance(req, SessionOutcome):
            return req
        if (ended := self._ended_from_outside()) is not None:
            return ended
        try:
            req = self._into_debug_container(req)
        except ExecError as exc:
            return self._stream_failed(exc, req)
        except DebugError as exc:
            self._services.api_error(exc.reason)
            return SessionOutcome(EndReason.ERROR, TRANSPORT_ERROR, str(exc))
        if (ended := self._ended_from_outside()) is not None:
            return ended
        if self.kind is SessionKind.SFTP:
            # The container's sftp-server is a program the user could have uploaded: only a
            # grant that may run commands anyway gets it (fast path). Any other is served by the
            # gateway, with tools by absolute path (see sftpgateway.py). In a debug container,
            # always the gateway: its paths are the target's, under ROOT.
            may_exec = self.grant is not None and self.grant.allow.exec
            try:
                tools = sftp_probe(self._runner(req), want_server=may_exec and self.debug is None)
            except ExecError as exc:
                return self._stream_failed(exc, req)
            if tools.shell_missing:
                return SessionOutcome(EndReason.REFUSED, REFUSED, no_shell_message(req.container, tools.shell_missing,
                                                                                   self.grant))
            if tools.sftp_server is None:  # nothing to exec: the gateway speaks SFTP itself
                return self._serve_sftp_here(req, tools, may_exec)
            req = replace(req, command=(tools.sftp_server,))  # it ends at stdin's EOF: no hangup
        setup = time.monotonic()
        try:
            stream = ExecStream.open(self._services.kube, req, timeout=self._services.settings.exec_timeout)
        except ExecError as exc:
            return self._stream_failed(exc, req)
        self._services.metrics.exec_setup.observe(time.monotonic() - setup)
        self._request = req
        with self._size_lock:
            self._attach(stream, watched=stream)
        self._flush_resize()
        self._start_recording(req)
        self._started(req, protocol=stream.protocol, setup_ms=round((time.monotonic() - setup) * 1000, 1),
                      recording=str(self._recording.path) if self._recording else None)
        status = self._copy_until_done(stream, self._pump_stdin, self._copy_output, "stdin")
        self._exited = status is not None
        return self._outcome(status)

    def _stream_failed(self, exc: ExecError, req: ExecRequest) -> SessionOutcome:
        """The exec could not be opened: the pod is gone (404: the user's to hear, like any unknown
        pod), or the API server failed (255)."""
        if (gone := vanished(exc, req.namespace, req.pod)) is not None:
            return SessionOutcome(EndReason.REFUSED, REFUSED, str(gone))
        self._services.api_error(exc.reason)
        return SessionOutcome(EndReason.ERROR, TRANSPORT_ERROR, str(exc))

    def _outcome(self, status: ExitStatus | None) -> SessionOutcome:
        """What the end of the exec stream means for the user: never a 0 that was not the command's."""
        if (ended := self._ended_from_outside()) is not None:
            return ended
        if status is None:
            return SessionOutcome(EndReason.ERROR, TRANSPORT_ERROR, "the exec stream ended without an exit status")
        if status.code == 0 and self._trailer is not None and self._trailer.code is None:
            # `Success` without the command's own word: the API server lost the node under the
            # command (exittrailer.py); whatever it did, it did not report having finished.
            return SessionOutcome(EndReason.ERROR, TRANSPORT_ERROR, "the exec stream ended without the command's "
                                  "exit status (the connection to the node was lost)")
        req = self._request
        if no_shell(status) and req is not None and req.command[:1] == ("/bin/sh",):
            return SessionOutcome(EndReason.REFUSED, REFUSED, no_shell_message(req.container, status, self.grant))
        if status.code == NOT_FOUND and status.error is None:
            hint = missing_tool_hint(self.command)
            if hint:
                return SessionOutcome(EndReason.EXIT, status.code, hint)
        return SessionOutcome(EndReason.EXIT if status.error is None else EndReason.ERROR, status.code, status.error)

    def _prepare(self) -> ExecRequest:
        if self.sftp_forbidden:
            raise SessionRefused("not permitted: this certificate has a force-command, which sftp cannot run")
        target = parse_target(self.conn.username or "")
        snapshot_grants = self._services.current_grants(self.conn)
        if not snapshot_grants:
            raise SessionRefused("not permitted: this key's access has been revoked or has expired")
        resolved = self._services.resolver.resolve(target, snapshot_grants)
        allowed = [g for g in resolved.grants if self.allowed_by(g)]
        if not allowed:
            what = {SessionKind.SHELL: "an interactive shell", SessionKind.EXEC: "running commands",
                    SessionKind.SFTP: "file transfer (sftp)"}[self.kind]
            refs = ", ".join(g.ref for g in resolved.grants)
            raise SessionRefused(f"not permitted: grant {refs} does not allow {what}")
        self.resolved = resolved
        grant = self._services.registry.claim(self, allowed)
        if grant is None:
            limit = allowed[0].limits.max_sessions
            raise SessionRefused(f"grant {allowed[0].ref} allows at most {limit} concurrent sessions")
        self._debug_image = self._requested_debug_image(grant)
        env = {k: v for k, v in self._requests.env.items() if grant.env_allowed(k) and k != DEBUG_IMAGE_ENV}
        if self.forced is not None and self.requested_command is not None:
            env["SSH_ORIGINAL_COMMAND"] = self.requested_command  # as sshd, for the forced command
        pty = self._requests.pty
        if pty:
            env["TERM"] = pty.term
        size = (pty.cols, pty.rows) if pty else None
        return ExecRequest(
            namespace=resolved.namespace, pod=resolved.pod, container=resolved.container,
            command=build_command(self.kind, self.command, grant, env, size, self._token, self._trailer_token(pty)),
            tty=pty is not None,
            size=size, impersonate=self._impersonation(),
        )

    def _requested_debug_image(self, grant: Grant) -> str | None:
        """PODSSH_DEBUG_IMAGE: a debug container even where there is a shell, of this image (or,
        when empty, the grant's default); refused when the grant has no spec.debug or does not
        list the image."""
        asked = self._requests.env.get(DEBUG_IMAGE_ENV)
        if asked is None:
            return None
        if grant.debug is None:
            raise SessionRefused(f"not permitted: grant {grant.ref} does not allow debug containers (spec.debug)")
        if not asked:
            return grant.debug.default_image
        if asked not in grant.debug.images:
            raise SessionRefused(f"not permitted: debug image {asked[:200]!r} is not in spec.debug.images of grant "
                                 f"{grant.ref} ({', '.join(grant.debug.images)})")
        return asked

    def _into_debug_container(self, req: ExecRequest) -> ExecRequest:
        """The request, moved into a debug container when the user asked for one or the target
        has no shell and the grant has spec.debug (one exec of `/bin/sh -c :` finds out: only
        for such grants). Unchanged otherwise. Raises DebugError or ExecError."""
        grant = self.grant
        if grant is None or grant.debug is None or self.kind is SessionKind.FORWARD:
            return req
        image = self._debug_image
        if image is None:
            if grant.shell_command is not None and self.kind is SessionKind.SHELL:
                return req  # a shellCommand needs no shell of the container's
            probe = self._runner(req).run(["/bin/sh", "-c", ":"])
            if not no_shell(probe.status):
                return req
            image = grant.debug.default_image
        containers = DebugContainers(self._services.kube, timeout=self._services.settings.debug_start_timeout,
                                     request_timeout=self._services.settings.exec_timeout,
                                     impersonate=self._impersonation())
        self.debug = containers.ensure(req.namespace, req.pod, req.container, image,
                                       progress=lambda line: self._write_error(f"podssh: {line}"))
        self.target_container = req.container
        event(log, "debug_container", conn=self.conn.id, session=self.id, namespace=req.namespace, pod=req.pod,
              target=req.container, container=self.debug.name, image=image, created=self.debug.created)
        return replace(req, container=self.debug.name)

    def _trailer_token(self, pty: object | None) -> str | None:
        """A command without a terminal reports its exit status on stderr too (exittrailer.py)."""
        if self.kind is not SessionKind.EXEC or pty is not None:
            return None
        token = new_trailer_token()
        self._trailer = TrailerFilter(token)
        return token

    def _started(self, req: ExecRequest, **fields: object) -> None:
        """The session runs: audit it and tell the registry (metrics, observers)."""
        self._services.audit.record(
            "session_start", conn=self.conn.id, session=self.id, kind=self.kind, namespace=req.namespace, pod=req.pod,
            container=req.container, grant=self.grant.ref if self.grant else None,
            user=self.grant.user if self.grant else None, pty=self.tty,
            command=self.command[:1024] if self.command else None,
            **({"forced": True, "requested_command": (self.requested_command or "")[:1024]} if self.forced else {}),
            **({"debug_container": self.debug.name, "debug_image": self.debug.image,
                "target_container": self.target_container} if self.debug is not None else {}),
            **fields)
        self._services.registry.started(self)

    def _runner(self, req: ExecRequest) -> PodRunner:
        return PodRunner(self._services.kube, req, self._services.settings.exec_timeout, activity=self._touch)

    def _touch(self) -> None:
        self.last_activity = time.monotonic()

    def _serve_sftp_here(self, req: ExecRequest, tools: Tools, may_exec: bool) -> SessionOutcome:
        """SFTP served by the gateway: paramiko's server over execs of the probed tools."""
        if not tools.shell_trusted and not may_exec:
            return SessionOutcome(EndReason.REFUSED, REFUSED, f"sftp: the container's {SHELL} could have been written "
                                  "by its user; the gateway runs nothing there for an sftp-only grant")
        server = GatewaySFTPServer(self.channel, "sftp", None, sftp_si=PodFileSystem, runner=self._runner(req),
                                   tools=tools, root=ROOT if self.debug is not None else "")
        self._attach(ChannelCloser(self.channel))
        self._started(req, sftp="gateway")
        server.run()  # the SFTP request loop, here in the session's thread, until the client ends
        self._done.set()
        return self._ended_from_outside() or SessionOutcome(EndReason.EXIT, 0)

    def _start_recording(self, req: ExecRequest) -> None:
        directory, pty = self._services.settings.record_dir, self._requests.pty
        if directory is None or pty is None or self.grant is None:
            return
        try:
            self._recording = Recording.create(
                directory, grant=self.grant.ref, user=self.grant.user, target=f"{req.namespace}/{req.pod}",
                conn=self.conn.id, channel=self.channel.get_id(), cols=pty.cols, rows=pty.rows, term=pty.term)
            self._recorded_size = (pty.cols, pty.rows)
        except OSError as exc:  # a full disk must not cost the user the session; the log says so
            event(log, "recording_failed", logging.WARNING, conn=self.conn.id, error=str(exc))

    def _copy_output(self, stream: ExecStream) -> ExitStatus | None:
        status = None
        written = False
        try:
            for channel, data in stream.frames():
                if channel == STDOUT:
                    if self._output_stopped.is_set():
                        # sshd would close the command's stdout, and its next write would end it
                        # (SIGPIPE). Here the session ends and its processes are hung up.
                        self.terminate(EndReason.CLIENT)
                        break
                    if not written:
                        written = True
                        self._resend_size()
                    self._to_client(data)
                    if self._recording is not None:
                        self._recording.output(data)
                elif channel == STDERR:
                    if self._trailer is not None:
                        data = self._trailer.feed(data)
                    if data:
                        self._to_client(data, stderr=True)
                elif channel == STATUS:
                    status = parse_status(data)
            if self._trailer is not None and (held := self._trailer.flush()):
                self._to_client(held, stderr=True)
        except (OSError, EOFError):  # the channel closed under us: the client is gone
            self.terminate(EndReason.CLIENT)
        return status

    def _pump_stdin(self, stream: ExecStream) -> None:
        chan, size = self.channel, whole_messages(self._services.settings.read_size)
        try:
            while data := chan.recv(size):
                if self._pending_size:
                    self._flush_resize()
                stream.send_stdin(data)
                self._sent_to_pod(len(data))
        except Exception:  # the stream died; the output side reports why
            return
        if chan.closed:
            self.terminate(EndReason.CLIENT)
            return
        # A terminal has no half-close: like sshd, keep the pty open after the client's EOF.
        if not self.tty:
            try:
                stream.close_stdin()
            except Exception:
                return
        # After EOF the client may still close the channel (not the connection): notice it.
        self._await_channel_close(lambda: self.terminate(EndReason.CLIENT))

    def _write_error(self, line: str) -> None:
        if self._recording is not None:  # the recording shows why a session ended, too
            self._recording.output((line + ("\r\n" if self.tty else "\n")).encode())
        super()._write_error(line)

    def _close_channel(self, outcome: SessionOutcome) -> None:
        super()._close_channel(outcome)
        if self._recording is not None:
            self._recording.close()

    def _end_record(self, outcome: SessionOutcome) -> tuple[str, dict[str, object]]:
        return "session_end", {
            "kind": self.kind, "exit_status": outcome.exit_status,
            "container": self.resolved.container if self.resolved else None,
            "grant": self.grant.ref if self.grant else None,
            **({"debug_container": self.debug.name, "debug_image": self.debug.image} if self.debug else {}),
            "recording": str(self._recording.path) if self._recording else None}

    def _after_end(self) -> None:
        self._hang_up()  # after the session has given back its place (maxSessions) and metrics

    def _hang_up(self) -> None:
        """Processes the session started outlive its stream unless told: see hangup.py. Queued
        for the gateway's hangup thread (hangupqueue.py), which batches the sessions of a pod;
        this thread never waits for it."""
        req, hangups = self._request, self._services.hangups
        if self._exited or req is None or self._token is None or hangups is None:
            return
        record = {"conn": self.conn.id, "session": self.id, "namespace": req.namespace, "pod": req.pod,
                  "container": req.container}
        audit = self._services.audit

        def reported(processes: int | None) -> None:  # on a hangup thread, once
            audit.record("session_hangup", **record, processes=processes)

        if not hangups.enqueue(HangupTarget.of(req), self._token, reported):
            audit.record("session_hangup", **record, processes=None, dropped=True)
