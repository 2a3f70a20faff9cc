"""The gateway core: accepts TCP connections, supervises each one, and owns shutdown.

Thread map (every thread of a gateway process, what it owns, how work is handed over):

- **accept** (`serve_forever`): the listening socket. Admits or refuses each connection
  (ssh/admission.py) and starts its supervisor thread; never blocks on a client.
- **conn-ADDR**, one per connection (`_handle`, the supervisor): the socket and the Connection's
  channel table (ssh/connection.py). Reads a PROXY header, waits for the key exchange, enforces
  the login grace time, accepts channels (starting ForwardSessions for `ssh -L`), forgets closed
  channels, and at the end terminates the connection's sessions and closes the Transport.
- **paramiko Transport**, one per connection: the SSH protocol. Calls the ServerInterface hooks
  (ssh/hooks.py), which record requests in the Connection and start ExecSessions through
  `start_session`; they never wait on the network.
- **session** threads (`shell-C-N`, `exec-C-N`, `sftp-C-N`, `forward-C-N`): each owns its session
  (sessions/lifecycle.py): resolves the pod, claims a grant from the registry, opens the
  stream, copies pod → client, and ends itself. A second thread per session (`stdin-…`,
  `forward-in-…`) copies client → pod. A `list-C-N` thread (`ssh ls@gateway`, the only one
  without a second) reads the grants and the pods they select, writes the table and ends.
- **control-N** (a pool of 4): small writes other threads must not block on: terminal resizes
  (asked by the Transport thread) and notices (asked by the enforcer).
- **enforcer** (gateway/enforcer.py): reads the snapshot and the registry, and sweeps all
  sessions only when something changed or a time limit fell due (idle sessions cost no
  sweeps); never writes a session: it asks the registry to rebind a session to another grant
  (counted against its maxSessions) and asks a session to end (`terminate` aborts its stream)
  or to warn (`notify`).
- **hangup** (sessions/hangupqueue.py, when settings.hang_up): the queue of hangups of
  sessions that ended other than by their command's exit. Session threads only enqueue (never
  wait; a full queue drops and counts); it collects a wave for 200 ms, then runs one exec per
  pod and container for all of its tokens on short-lived **hangup-exec** threads, at most 2
  at a time, which write each session's `session_hangup` record. Closed at shutdown, after the
  sessions ended.
- **api-keepalive** (kube/keepalive.py): pings the open API streams; tells a session whose
  stream went silent to end.
- **pod-cache-NAMESPACE**, one per namespace some grant names (kube/podcache.py, when the
  composition root gives the gateway a PodCache): lists and watches that namespace's pods into
  the cache the resolver reads first. The AccessStore's swap listener starts and stops them
  (never waits on the network); session threads only read the cache (one lock per namespace).
- **kopf** (its own event loop), **resync** and **status-writer** (operator/): build new
  AccessSnapshots and swap them into the AccessStore (one assignment), write status and Events.
  The gateway only reads `store.current`; a swap wakes the enforcer.
- **session-objects** (operator/sessionobjects.py): the SSHSession objects of this replica, its
  Lease, the cleanup of dead replicas' objects and the Events on target pods. Fed by the
  registry's observers (a dict update, never a wait); samples `SessionRecord.counters`. When an
  object is deleted through the API, kopf's thread calls `end_session`, which only asks the
  session to end (`terminate`, as the enforcer does).
- **monitoring** (observability/monitoring.py): /metrics, /healthz, /readyz.

Shared state has one owner each: the registry owns the set of live sessions and their grant
bindings (one lock); a Connection owns its channel table (its lock); the AccessStore owns the
snapshot (replaced whole, read without a lock).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import paramiko

from sshserver.config.settings import GatewaySettings
from sshserver.gateway.enforcer import Enforcer
from sshserver.gateway.registry import SessionRegistry
from sshserver.grants.access import AccessStore, Identity, SessionKind
from sshserver.kube.client import KubeClient
from sshserver.kube.keepalive import ApiKeepalive
from sshserver.kube.podcache import PodCache
from sshserver.kube.resolver import PodResolver
from sshserver.observability.audit import AuditTrail
from sshserver.observability.logevents import event
from sshserver.observability.metrics import Metrics
from sshserver.observability.observer import EndReason, SessionObserver
from sshserver.sessions.execsession import ExecSession
from sshserver.sessions.forward import ForwardSession
from sshserver.sessions.hangupqueue import EXEC_TIMEOUT as HANGUP_EXEC_TIMEOUT
from sshserver.sessions.hangupqueue import HangupQueue
from sshserver.sessions.lifecycle import Session
from sshserver.sessions.listing import ListingSession
from sshserver.sessions.services import SessionServices
from sshserver.ssh.admission import Admission, Limits, Startups
from sshserver.ssh.connection import ChannelState, Connection
from sshserver.ssh.hooks import GatewayServer
from sshserver.ssh.internals import eow, fastpipe, patches
from sshserver.ssh.internals import transport as transports
from sshserver.ssh.proxyprotocol import ProxyHeaderError, TrustedProxies, format_peer, read_header
from sshserver.ssh.throttle import FailureThrottle
from sshserver.ssh.windowbudget import WindowBudget

log = logging.getLogger("podssh.gateway")

patches.install()  # before any Transport exists: see the module

SUPERVISE_INTERVAL = 0.25
IDLE_SUPERVISE_INTERVAL = 300.0


class Gateway:
    """One gateway: the SSH listener, its connections, sessions and enforcement. Implements the
    hooks' HookServices; sessions see only the SessionServices it builds."""

    def __init__(self, settings: GatewaySettings, store: AccessStore, kube: KubeClient,
                 host_keys: Sequence[paramiko.PKey], metrics: Metrics | None = None,
                 audit: AuditTrail | None = None, pod_cache: PodCache | None = None) -> None:
        self.settings = settings
        self.audit = audit or AuditTrail()
        self.store = store
        self.kube = kube
        self.metrics = metrics or Metrics()
        self.metrics.track_snapshot(lambda: self.store.current.built_at, lambda: len(self.store.current.grants))
        self.throttle = FailureThrottle(settings.failure_delay_base, settings.failure_delay_cap)
        self._host_keys = list(host_keys)
        self._control = ThreadPoolExecutor(max_workers=4, thread_name_prefix="control")
        self._lock = threading.Lock()  # _connections and _refusals
        self._connections: set[Connection] = set()
        self.admission = Admission(Limits(
            startups=Startups(min(settings.startups_start, settings.max_unauthenticated), settings.startups_rate,
                              settings.max_unauthenticated),
            per_source_unauthenticated=settings.max_unauthenticated_per_source,
            per_source=settings.max_connections_per_source, per_identity=settings.max_connections_per_key,
            proxy_pending=settings.max_proxy_pending,
            proxy_pending_per_source=settings.max_proxy_pending_per_source))
        self.window_budget = WindowBudget(settings.window_budget)
        self.metrics.window_budget_used.set_function(lambda: float(self.window_budget.used))
        self.proxies = TrustedProxies(settings.proxy_protocol)
        self._refusals: dict[str, tuple[float, int]] = {}  # reason: (last logged, refused since)
        self._draining = threading.Event()  # shutting down: report not ready
        self._stopping = threading.Event()  # no new connections or sessions
        self._closing = threading.Event()  # drain is over: close what is left
        self._sock: socket.socket | None = None
        self.address: tuple[str, int] | None = None
        self.keepalive = ApiKeepalive(settings.api_keepalive, settings.api_keepalive_timeout)
        self.registry = SessionRegistry(self.metrics)
        self.hangups = HangupQueue.for_pods(kube, min(HANGUP_EXEC_TIMEOUT, settings.exec_timeout),
                                            on_drop=self.metrics.hangups_dropped.inc)
        if settings.hang_up:
            self.hangups.start()
        self.services = SessionServices(
            settings=settings, store=store, kube=kube,
            resolver=PodResolver(kube, on_api_error=self._api_error, cache=pod_cache), keepalive=self.keepalive,
            audit=self.audit, metrics=self.metrics, registry=self.registry, control=self._control.submit,
            hangups=self.hangups if settings.hang_up else None)
        self.enforcer = Enforcer(self.registry, store, self.services.revoked,
                                 revocations=self.services.revocations)
        store.subscribe(self.enforcer.snapshot_changed)
        self.enforcer.start()
        self.pod_cache = pod_cache
        if pod_cache is not None:
            pod_cache.follow(store)  # the namespaces of the grants, now and after every swap

    @property
    def observers(self) -> list[SessionObserver]:
        """Told of every session's start and end (the operator's Events); add before serving."""
        return self.registry.observers

    def end_session(self, session_id: str, reason: EndReason, message: str, **audit: object) -> bool:
        """Ends one live session from outside (the control plane, on an SSHSession deleted through
        the API). Any thread; never blocks: `terminate` aborts the stream and the session's own
        thread tells the user, records the end and reports it. False: no such live session here."""
        session = self.registry.find(session_id)
        if session is None or session.done:
            return False
        self.audit.record("session_end_requested", conn=session.conn.id, session=session_id, reason=reason,
                          message=message, **audit)
        session.terminate(reason, message)
        return True

    def _api_error(self, reason: str) -> None:
        self.metrics.api_errors.labels(reason).inc()

    def revoked(self, identity: Identity) -> str | None:
        """Why --revoked-keys refuses this key or certificate now, or None (HookServices)."""
        return self.services.revoked(identity)

    # --- listening --------------------------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        family = socket.AF_INET6 if ":" in self.settings.listen_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.listen_host, self.settings.listen_port))
        sock.listen(256)
        sock.settimeout(0.5)
        self._sock = sock
        self.address = sock.getsockname()[:2]
        event(log, "listening", address=f"{self.address[0]}:{self.address[1]}")
        return self.address

    def serve_forever(self) -> None:
        """The accept loop (its own thread). Nothing here blocks on a client: a connection from a
        trusted proxy gets its thread first and is admitted once its PROXY header is read."""
        assert self._sock is not None, "bind() first"
        while not self._stopping.is_set():
            try:
                client, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    break
                # EMFILE/ENFILE/ENOBUFS and the like: refuse this one, keep serving.
                event(log, "accept_failed", logging.WARNING, error=str(exc)[:200])
                time.sleep(0.05)
                continue
            peer = format_peer((addr[0], addr[1]))
            proxied = bool(self.proxies) and self.proxies.covers(addr[0])
            why = self.admission.hold(addr[0]) if proxied else self.admission.admit(addr[0])
            if why is not None:
                self._refuse(client, peer, why)
                continue
            self.metrics.connections_total.labels("accepted").inc()
            try:
                threading.Thread(target=self._handle, args=(client, peer, addr[0] if proxied else None), daemon=True,
                                 name=f"conn-{peer}").start()
            except RuntimeError as exc:  # "can't start new thread": this one is refused, not the loop
                if proxied:
                    self.admission.unhold(addr[0])
                else:
                    self.admission.released(addr[0], None, authenticated=False)
                event(log, "connection_refused", logging.WARNING, peer=peer, reason=f"no thread: {exc}"[:200])
                with contextlib.suppress(OSError):
                    client.close()
        self._sock.close()

    def _refuse(self, client: socket.socket, peer: str, why: str) -> None:
        """Closes a connection refused by admission. Under a flood the log gets at most one line
        per reason and second (with how many were not logged); the metric counts every one."""
        self.metrics.connections_total.labels("refused").inc()
        now = time.monotonic()
        with self._lock:
            logged_at, unlogged = self._refusals.get(why, (0.0, 0))
            quiet = now - logged_at < 1.0
            self._refusals[why] = (logged_at, unlogged + 1) if quiet else (now, 0)
        if not quiet:  # logged before the close: whoever sees the close finds the line
            event(log, "connection_refused", logging.WARNING, peer=peer, reason=why,
                  **({"not_logged": unlogged} if unlogged else {}))
        with contextlib.suppress(OSError):
            client.close()

    # --- one connection ---------------------------------------------------------------------

    def _proxied_peer(self, client: socket.socket, proxy: str) -> str | None:
        """The client address from the PROXY header of a trusted proxy's connection; None (logged)
        when the header is missing, malformed or late. Runs in the connection's thread."""
        try:
            header = read_header(client, self.settings.proxy_timeout)
        except (ProxyHeaderError, OSError) as exc:
            event(log, "proxy_header_invalid", logging.WARNING, proxy=proxy, error=str(exc)[:200])
            return None
        return proxy if header.source is None else format_peer(header.source)

    def _handle(self, client: socket.socket, peer: str, held_for: str | None = None) -> None:
        """The supervisor of one connection (its own thread, "conn-ADDR"): see the thread map.
        `held_for` is the trusted proxy's address when its PROXY header is still to be read."""
        accepted = time.monotonic()
        proxy = None
        if held_for is not None:
            proxy, real = peer, self._proxied_peer(client, peer)
            self.admission.unhold(held_for)
            why = "invalid PROXY header" if real is None else self.admission.admit(real.rsplit(":", 1)[0])
            if why is not None:
                self._refuse(client, real or peer, why)
                return
            peer = real
        conn = Connection(peer=peer, proxy=proxy)
        with self._lock:
            self._connections.add(conn)
        self.metrics.connections.inc()
        self.audit.record("connection_open", conn=conn.id, peer=peer, **({"proxy": proxy} if proxy else {}))
        transport = None
        reason = "client"
        try:
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = transports.build(client, self.settings, self._host_keys)
            conn.transport = transport
            eow.install(transport, lambda channel: self._client_stopped_reading(conn, channel))
            # Counted (per-key cap, audit) before anything the client sends under the login.
            transports.on_login(transport, lambda: self._logged_in(conn, transport))
            handshake = threading.Event()
            try:
                transport.start_server(event=handshake, server=GatewayServer(self, conn))
            except RuntimeError as exc:  # the Transport's thread did not start
                reason = "no_thread"
                event(log, "connection_refused", logging.WARNING, conn=conn.id, peer=peer,
                      reason=f"no thread: {exc}"[:200])
                return
            failed = self._await_handshake(conn, transport, handshake, accepted)
            if failed is not None:
                reason = failed
                return
            deadline = accepted + self.settings.login_grace_time
            while transport.is_active() and not self._closing.is_set():
                if conn.hangup.is_set():
                    reason = conn.hangup_reason
                    break
                if not conn.authenticated.is_set():
                    if transport.is_authenticated():
                        self.note_authenticated(conn)
                    elif time.monotonic() > deadline:
                        reason = "login_grace_exceeded"
                        break
                # Before login this loop enforces the grace time. After it, it waits for the next
                # channel: the Transport's end, a hangup (Connection.hang_up) and the shutdown
                # (which closes the Transport) wake it; the long timeout is only a safety net, so
                # an idle connection costs no CPU here.
                wait = SUPERVISE_INTERVAL if not conn.authenticated.is_set() else IDLE_SUPERVISE_INTERVAL
                chan = transport.accept(timeout=wait)
                if chan is not None:
                    forward = conn.hold(chan).forward
                    if forward is not None and not self._start(
                            conn, ForwardSession(self.services, conn, chan, forward[1])):
                        chan.close()
                conn.forget_closed()
            if self._closing.is_set():
                reason = "shutdown"
        except Exception:
            reason = "error"
            log.exception("connection_crashed", extra={"fields": {"conn": conn.id}})
        finally:
            handler = transport.auth_handler if transport is not None else None
            if handler is not None and handler.is_authenticated():
                self.note_authenticated(conn)  # a client that logged in and left at once
            # Its places are given back before the close is recorded: whoever sees the record may
            # connect again at once.
            self.admission.released(conn.source, conn.counted_identity, conn.authenticated.is_set())
            self._close_connection(conn, transport, client, reason)

    def _await_handshake(self, conn: Connection, transport: paramiko.Transport, done: threading.Event,
                         accepted: float) -> str | None:
        """Until key exchange is over: None, or why the connection ends. The client's version
        line must come within version_timeout of the accept (a slowloris sending a byte every
        few seconds resets paramiko's own per-read timeout), the key exchange within the grace."""
        s = self.settings
        while not done.wait(SUPERVISE_INTERVAL):
            if self._closing.is_set():
                return "shutdown"
            if not transport.is_active():
                break
            elapsed = time.monotonic() - accepted
            if not transport.remote_version and elapsed > s.version_timeout:
                event(log, "handshake_failed", conn=conn.id, peer=conn.peer, error="no version line in time")
                return "version_timeout"
            if elapsed > s.login_grace_time:
                return "login_grace_exceeded"
        if transport.is_active():
            return None
        exc = transport.get_exception()
        self.metrics.handshake_failures.inc()
        event(log, "handshake_failed", conn=conn.id, peer=conn.peer,
              error=(str(exc)[:200] or type(exc).__name__) if exc else "negotiation failed")
        return "handshake_failed"

    def _logged_in(self, conn: Connection, transport: paramiko.Transport) -> None:
        """Right after USERAUTH_SUCCESS, on the Transport thread (see transports.on_login)."""
        transports.read_quietly(transport)
        self.note_authenticated(conn)

    def note_authenticated(self, conn: Connection) -> bool:
        """Records a login exactly once, before anything done under it: called by the supervisor,
        by the first channel or global request (paramiko takes those only after authentication)
        and at the end of a connection too short for either. False when the connection may do
        nothing: its identity already holds max_connections_per_key connections (it is hung up)."""
        with conn.lock:
            if conn.authenticated.is_set():
                return not conn.hangup.is_set()
            conn.authenticated.set()
        ident = conn.identity
        key = ident.fingerprint if ident else f"conn-{conn.id}"
        if not self.admission.authenticated(conn.source, key):
            conn.hang_up("too_many_connections_for_key")
            event(log, "connection_refused", logging.WARNING, conn=conn.id, peer=conn.peer,
                  reason="too many connections for this key", fingerprint=key)
            return False
        conn.counted_identity = key
        self.throttle.succeeded(conn.source)
        grants = conn.grants
        cert = ident.certificate if ident else None
        self.metrics.auth_attempts.labels("publickey-cert" if cert else "publickey", "success").inc()
        self.audit.record("auth_success", conn=conn.id, peer=conn.peer,
              method="publickey-cert" if cert else "publickey",
              fingerprint=ident.fingerprint if ident else None, target=(conn.username or "")[:256],
              grants=[g.ref for g in grants], users=sorted({g.user for g in grants}),
              cert_key_id=cert.key_id if cert else None, cert_serial=cert.serial if cert else None,
              ca=cert.ca_fingerprint if cert else None)
        return True

    @staticmethod
    def _client_stopped_reading(conn: Connection, channel: paramiko.Channel) -> None:
        """eow@openssh.com (Transport thread): the session stops its output."""
        session = conn.session_on(channel.get_id())
        if session is not None:
            session.stop_output()

    def _close_connection(self, conn: Connection, transport: paramiko.Transport | None,
                          client: socket.socket, reason: str) -> None:
        sessions = conn.sessions()
        why = (EndReason.CLIENT if reason == "client" else EndReason.SHUTDOWN if reason == "shutdown" else
               EndReason.LIMIT if reason.startswith("too_many") else EndReason.ERROR)
        for s in sessions:
            s.terminate(why)
        for s in sessions:
            s.join(2)
        conn.forget_all()
        with self._lock:
            self._connections.discard(conn)
        self.metrics.connections.dec()
        # Recorded before the client can see the close: whoever sees it finds the record.
        self.audit.record("connection_close", conn=conn.id, peer=conn.peer, reason=reason)
        transports.hang_up_socket(client)  # the Transport thread's read ends now, not at its timeout
        if transport is not None:
            transport.close()
        client.close()

    # --- sessions ---------------------------------------------------------------------------

    def start_session(self, conn: Connection, channel: paramiko.Channel, kind: SessionKind,
                      command: str | None) -> bool:
        """Starts a shell/exec/sftp session (HookServices; Transport thread, never blocks)."""
        fastpipe.install(channel)  # in the Transport thread: before any stdin reaches the channel
        return self._start_on_request(conn, channel, lambda state: ExecSession(
            self.services, conn, channel, kind, command, state))

    def start_listing(self, conn: Connection, channel: paramiko.Channel, asked: SessionKind,
                      command: str | None) -> bool:
        """Starts the listing of the key's targets, for a shell/exec/sftp request of the reserved
        user name `ls` (HookServices; Transport thread, never blocks)."""
        return self._start_on_request(conn, channel, lambda state: ListingSession(
            self.services, conn, channel, asked, command, state))

    def _start_on_request(self, conn: Connection, channel: paramiko.Channel,
                          make: Callable[[ChannelState], Session]) -> bool:
        """A session started from a channel request hook (Transport thread): made with the
        channel's pty and env, and told when paramiko has answered the request."""
        if self._stopping.is_set():
            return False
        session = make(conn.channel_state(channel.get_id()))
        session.answered = transports.expect_answer(channel)
        return self._start(conn, session)

    def _start(self, conn: Connection, session: Session) -> bool:
        """Binds the session to its channel and starts its thread; False refuses the channel
        request (one session per channel, or no thread to be had)."""
        if not conn.attach(session.channel, session):
            return False
        self.registry.add(session)
        try:
            session.start()
        except RuntimeError as exc:  # "can't start new thread": refuse this channel, keep the rest
            conn.forget(session.channel.get_id())
            self.registry.discard(session)
            event(log, "session_refused", logging.WARNING, conn=conn.id, reason=f"no thread: {exc}"[:200])
            return False
        # Only a channel that runs something gets the full window (see patches.grow_window).
        patches.grow_window(session.channel, self.settings.window_size, self.window_budget)
        return True

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def sessions(self) -> list[Session]:
        return self.registry.live()  # type: ignore[return-value]

    # --- stopping ---------------------------------------------------------------------------

    def shutdown(self, drain_timeout: float | None = None) -> None:
        """Reports not ready, keeps accepting while load balancers catch up (shutdown_delay), then
        stops accepting, tells live sessions, waits for them, and ends what is left."""
        drain = self.settings.drain_timeout if drain_timeout is None else drain_timeout
        self._draining.set()
        if self.settings.shutdown_delay > 0:
            event(log, "shutdown_pending", delay_s=self.settings.shutdown_delay)
            time.sleep(self.settings.shutdown_delay)
        self._stopping.set()
        live = self.sessions()
        event(log, "shutdown", sessions=len(live), drain_s=drain)
        for s in live:
            s.notify(f"podssh: the gateway is shutting down; this session ends in {int(drain)}s")
        deadline = time.monotonic() + drain
        while self.sessions() and time.monotonic() < deadline:
            time.sleep(0.1)
        for s in self.sessions():
            s.terminate(EndReason.SHUTDOWN, "the gateway shut down")
        for s in live:  # all of them, not only those still registered: a session hands in its hangup
            s.join(2)   # after it gave back its place
        self._closing.set()
        if self.settings.hang_up:
            self.hangups.close()  # the sessions just ended are hung up before the process goes
        self.enforcer.stop()
        self.keepalive.stop()
        if self.pod_cache is not None:
            self.pod_cache.stop()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.hang_up("shutdown")  # wakes its supervisor, which waits on no timer after login
            if conn.transport is not None:
                conn.transport.close()
        self._control.shutdown(wait=False)
