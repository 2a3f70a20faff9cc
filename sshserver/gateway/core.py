"""Accepts TCP connections, runs one SSH transport per connection, tracks live sessions."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import paramiko

from sshserver.config.settings import GatewaySettings
from sshserver.gateway.enforcer import Enforcer
from sshserver.grants.access import AccessStore, Grant, Identity
from sshserver.kube.client import KubeClient
from sshserver.kube.keepalive import ApiKeepalive
from sshserver.kube.resolver import PodResolver
from sshserver.observability.audit import AuditTrail
from sshserver.observability.logevents import event
from sshserver.observability.metrics import Metrics
from sshserver.observability.observer import SessionObserver, SessionOutcome
from sshserver.sessions.execsession import Session
from sshserver.sessions.forward import ForwardSession
from sshserver.sessions.lifecycle import Bridge, SessionEnd
from sshserver.ssh.admission import Admission, Limits, Startups
from sshserver.ssh.connection import ChannelRequests, Connection
from sshserver.ssh.hooks import GatewayServer
from sshserver.ssh.internals import eow, fastpipe
from sshserver.ssh.internals import patches as paramiko_patches
from sshserver.ssh.proxyprotocol import ProxyHeaderError, TrustedProxies, format_peer, read_header
from sshserver.ssh.throttle import FailureThrottle

log = logging.getLogger("podssh.gateway")

paramiko_patches.install()  # before any Transport exists: see the module

SUPERVISE_INTERVAL = 0.25
IDLE_SUPERVISE_INTERVAL = 1.0


class Gateway:
    def __init__(self, settings: GatewaySettings, store: AccessStore, kube: KubeClient,
                 host_keys: Sequence[paramiko.PKey], metrics: Metrics | None = None,
                 audit: AuditTrail | None = None) -> None:
        self.settings = settings
        self.audit = audit or AuditTrail()
        self.store = store
        self.kube = kube
        self.metrics = metrics or Metrics()
        self.metrics.track_snapshot(lambda: self.store.current.built_at, lambda: len(self.store.current.grants))
        self.resolver = PodResolver(kube, on_api_error=self.api_error)
        self.throttle = FailureThrottle(settings.failure_delay_base, settings.failure_delay_cap)
        self._host_keys = list(host_keys)
        self._control = ThreadPoolExecutor(max_workers=4, thread_name_prefix="control")
        self._lock = threading.Lock()
        self._sessions: set[Bridge] = set()
        self._connections: set[Connection] = set()
        self.admission = Admission(Limits(
            startups=Startups(min(settings.startups_start, settings.max_unauthenticated), settings.startups_rate,
                              settings.max_unauthenticated),
            per_source_unauthenticated=settings.max_unauthenticated_per_source,
            per_source=settings.max_connections_per_source, per_identity=settings.max_connections_per_key))
        self.proxies = TrustedProxies(settings.proxy_protocol)
        self._refusals: dict[str, tuple[float, int]] = {}  # reason: (last logged, refused since)
        self._draining = threading.Event()  # shutting down: report not ready
        self._stopping = threading.Event()  # no new connections or sessions
        self._closing = threading.Event()  # drain is over: close what is left
        self._sock: socket.socket | None = None
        self.address: tuple[str, int] | None = None
        self.observers: list[SessionObserver] = []
        self.keepalive = ApiKeepalive(settings.api_keepalive, settings.api_keepalive_timeout)
        self.enforcer = Enforcer(self)
        store.subscribe(self.enforcer.snapshot_changed)
        self.enforcer.start()

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
            why = self.admission.hold() if proxied else self.admission.admit(addr[0])
            if why is not None:
                self._refuse(client, peer, why)
                continue
            self.metrics.connections_total.labels("accepted").inc()
            try:
                threading.Thread(target=self._handle, args=(client, peer, proxied), daemon=True,
                                 name=f"conn-{peer}").start()
            except RuntimeError as exc:  # "can't start new thread": this one is refused, not the loop
                if proxied:
                    self.admission.unhold()
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

    def _transport(self, client: socket.socket) -> paramiko.Transport:
        s = self.settings
        t = paramiko.Transport(client, default_window_size=s.initial_window_size,
                               default_max_packet_size=s.max_packet_size)
        t.local_version = s.version
        opts = t.get_security_options()
        opts.ciphers = tuple(c for c in s.ciphers if c in paramiko.Transport._preferred_ciphers)
        for key in self._host_keys:
            t.add_server_key(key)
        certs = tuple(k.get_name() for k in self._host_keys if k.get_name().endswith("-cert-v01@openssh.com"))
        if certs:  # host certificates (hostcerts.py): paramiko offers only the types listed here
            opts.key_types = certs + tuple(paramiko.Transport._preferred_keys)
        t.banner_timeout = min(s.version_timeout, s.login_grace_time)
        t.handshake_timeout = s.login_grace_time
        t.auth_timeout = s.login_grace_time
        return t

    def _proxied_peer(self, client: socket.socket, proxy: str) -> str | None:
        """The client address from the PROXY header of a trusted proxy's connection; None (logged)
        when the header is missing, malformed or late. Runs in the connection's thread."""
        try:
            header = read_header(client, self.settings.proxy_timeout)
        except (ProxyHeaderError, OSError) as exc:
            event(log, "proxy_header_invalid", logging.WARNING, proxy=proxy, error=str(exc)[:200])
            return None
        return proxy if header.source is None else format_peer(header.source)

    def _handle(self, client: socket.socket, peer: str, proxied: bool = False) -> None:
        accepted = time.monotonic()
        proxy = None
        if proxied:
            proxy, real = peer, self._proxied_peer(client, peer)
            self.admission.unhold()
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
            transport = self._transport(client)
            conn.transport = transport
            eow.install(transport, lambda channel: self._client_stopped_reading(conn, channel))
            self._note_login_at_once(transport, conn)
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
                # Before login this loop enforces the grace time; after it, a dead client is noticed
                # by the sessions themselves (their channel closes), so it can idle longer.
                wait = SUPERVISE_INTERVAL if not conn.authenticated.is_set() else IDLE_SUPERVISE_INTERVAL
                chan = transport.accept(timeout=wait)
                if chan is not None:
                    with conn.lock:
                        conn.channels.add(chan)
                        forward = conn.requests.get(chan.get_id(), ChannelRequests()).forward
                    if forward is not None and not self._start_bridge(
                            conn, ForwardSession(self, conn, chan, forward[1])):
                        chan.close()
                self._forget_closed(conn)
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

    def _note_login_at_once(self, transport: paramiko.Transport, conn: Connection) -> None:
        """Counts the login (per-key cap, audit) in the Transport thread right after paramiko sent
        USERAUTH_SUCCESS, before it reads anything the client sends under it."""
        trigger = transport._auth_trigger

        def authenticated() -> None:
            self.note_authenticated(conn)
            trigger()

        transport._auth_trigger = authenticated  # type: ignore[method-assign]

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
        with conn.lock:
            bridge = conn.sessions.get(channel.get_id())
        if isinstance(bridge, Session):
            bridge.stop_output()

    @staticmethod
    def _forget_closed(conn: Connection) -> None:
        with conn.lock:
            closed = {c for c in conn.channels if c.closed and c.get_id() not in conn.sessions}
            conn.channels -= closed
            for c in closed:
                conn.requests.pop(c.get_id(), None)

    def _close_connection(self, conn: Connection, transport: paramiko.Transport | None,
                          client: socket.socket, reason: str) -> None:
        with conn.lock:
            sessions = list(conn.sessions.values())
        for s in sessions:
            s.terminate("client" if reason == "client" else reason)
        for s in sessions:
            s.join(2)
        if transport is not None:
            transport.close()
        client.close()
        with conn.lock:
            conn.channels.clear()
            conn.requests.clear()
        with self._lock:
            self._connections.discard(conn)
        self.metrics.connections.dec()
        self.audit.record("connection_close", conn=conn.id, peer=conn.peer, reason=reason)

    # --- sessions ---------------------------------------------------------------------------

    def start_session(self, conn: Connection, channel: paramiko.Channel, kind: str,
                      command: str | None) -> bool:
        chanid = channel.get_id()
        fastpipe.install(channel)  # in the Transport thread: before any stdin reaches the channel
        with conn.lock:
            if chanid in conn.sessions or self._stopping.is_set():
                return False
            requests = conn.requests.setdefault(chanid, ChannelRequests())
            session = Session(self, conn, channel, kind, command, requests)
        return self._start_bridge(conn, session)

    def _start_bridge(self, conn: Connection, bridge: Bridge) -> bool:
        chanid = bridge.channel.get_id()
        with conn.lock:
            conn.sessions[chanid] = bridge
            conn.channels.add(bridge.channel)
        with self._lock:
            self._sessions.add(bridge)
        try:
            bridge.start()
        except RuntimeError as exc:  # "can't start new thread": refuse this channel, keep the rest
            with conn.lock:
                conn.sessions.pop(chanid, None)
            with self._lock:
                self._sessions.discard(bridge)
            event(log, "session_refused", logging.WARNING, conn=conn.id, reason=f"no thread: {exc}"[:200])
            return False
        # Only a channel that runs something gets the full window (see paramiko_patches.grow_window).
        paramiko_patches.grow_window(bridge.channel, self.settings.window_size)
        return True

    def claim_grant(self, session: Bridge, candidates: Sequence[Grant]) -> Grant | None:
        """Binds the session to the first grant under its maxSessions; atomic across sessions."""
        with self._lock:
            for grant in candidates:
                limit = grant.limits.max_sessions
                used = sum(1 for s in self._sessions if s.grant is not None and s.grant.uid == grant.uid)
                if limit is None or used < limit:
                    session.grant = grant
                    return grant
        return None

    def api_error(self, reason: str) -> None:
        self.metrics.api_errors.labels(reason).inc()

    def observe_start(self, session: Bridge) -> None:
        self.metrics.sessions_active.labels(session.kind).inc()
        record = session.record()
        if record is None:
            return
        for observer in self.observers:
            try:
                observer.session_started(record)
            except Exception:
                log.exception("observer_failed")

    def session_ended(self, session: Bridge, end: SessionEnd) -> None:
        conn = session.conn
        with conn.lock:
            conn.sessions.pop(session.channel.get_id(), None)
            conn.channels.discard(session.channel)
            conn.requests.pop(session.channel.get_id(), None)
        with self._lock:
            self._sessions.discard(session)
        m = self.metrics
        m.sessions_ended.labels(end.reason).inc()
        if session.opened:
            m.sessions_active.labels(session.kind).dec()
            m.session_duration.labels(session.kind).observe(time.monotonic() - session.started)
        record = session.record()
        if record is None:
            return
        outcome = SessionOutcome(end.reason, end.code, round(time.monotonic() - session.started, 3), end.error)
        for observer in self.observers:
            try:
                observer.session_ended(record, outcome)
            except Exception:
                log.exception("observer_failed")

    def current_grants(self, conn: Connection) -> tuple[Grant, ...]:
        """The key's grants in the snapshot in force now (not the one at login), none once the
        key is in --revoked-keys (a multiplexed connection outlives the login it was made by)."""
        if conn.identity is None or self.revoked(conn.identity):
            return ()
        return self.store.current.grants_for(conn.identity, datetime.now(UTC))

    def revoked(self, identity: Identity) -> str | None:
        """Why --revoked-keys refuses this key or certificate now, or None (re-read on change)."""
        revoked = self.settings.revoked_keys
        return revoked.why_revoked(identity.blob, identity.certificate) if revoked is not None else None

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def sessions(self) -> list[Bridge]:
        with self._lock:
            return list(self._sessions)

    def submit_control(self, fn: Callable[..., Any], *args: Any) -> None:
        """Small writes (resize) that a Transport thread must not block on."""
        with contextlib.suppress(RuntimeError):  # raised once shut down
            self._control.submit(fn, *args)

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
            s.terminate("shutdown", "the gateway shut down")
        for s in self.sessions():
            s.join(2)
        self._closing.set()
        self.enforcer.stop()
        self.keepalive.stop()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            if conn.transport is not None:
                conn.transport.close()
        self._control.shutdown(wait=False)
