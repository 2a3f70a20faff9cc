"""TLS connections to the API server for the WebSocket upgrades, with one SSLContext and TLS
session resumption.

Left to itself, websocket-client builds a new SSLContext for every connection (reading the CA
and the client certificate from their files again) and makes a full handshake: the server's
certificate chain is sent and verified every time. A session setup (`ssh pod true`) pays that
once, and the hangup and sftp probe execs pay it again. Here a KubeClient keeps one context
(rebuilt only when one of its files changes) and offers the session of its last handshake to
the next one: a resumed TLS 1.3 handshake skips the certificate exchange and its verification,
and the client certificate is not sent again either.

Thread-safe: any session thread dials. The context is built under a lock; the remembered session
is one reference, replaced after each handshake (TLS 1.3 tickets arrive after the handshake, so
the session is taken again once the HTTP upgrade answer has been read: see `remember`).
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class TlsSettings:
    """What the handshake needs of a kubeconfig (KubeClient.tls_settings builds it)."""

    host: str
    port: int
    verify: bool = True
    check_hostname: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_hostname: str | None = None  # SNI and the name verified; the URL's host when None

    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.ca_file, self.cert_file, self.key_file) if f)


def _stamp(paths: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
    """What tells that a file changed (a rotated CA or client certificate): size and mtime."""
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)
            stamps.append((path, st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append((path, 0, -1))
    return tuple(stamps)


class TlsDialer:
    """Opens TCP + TLS connections to one API server, resuming the last TLS session."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._stamp: tuple[tuple[str, int, int], ...] = ()
        self._session: ssl.SSLSession | None = None

    def context(self) -> ssl.SSLContext:
        """The client context, built once and again when a file it was built from changes."""
        stamp = _stamp(self.settings.files())
        with self._lock:
            if self._context is None or stamp != self._stamp:
                self._context, self._stamp = self._build(), stamp
                self._session = None  # a session of the old context cannot be offered by the new one
            return self._context

    def _build(self) -> ssl.SSLContext:
        s = self.settings
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if not s.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.check_hostname = s.check_hostname
            if s.ca_file:
                ctx.load_verify_locations(cafile=s.ca_file)
            else:
                ctx.load_default_certs()
        if s.cert_file:
            ctx.load_cert_chain(s.cert_file, s.key_file)
        return ctx

    def connect(self, timeout: float) -> ssl.SSLSocket:
        """A connected, handshaken TLS socket (TCP_NODELAY, `timeout` on every operation).
        Raises OSError (ssl.SSLError included) as socket.create_connection and wrap_socket do."""
        ctx = self.context()
        s = self.settings
        raw = socket.create_connection((s.host, s.port), timeout=timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = self._session
            tls = ctx.wrap_socket(raw, server_hostname=s.server_hostname or s.host, session=session)
        except BaseException:
            raw.close()
            raise
        self.remember(tls)
        return tls

    def remember(self, sock: object) -> None:
        """Keeps the socket's session for the next handshake, if it can resume one: TLS 1.2
        sessions at once, TLS 1.3 ones once their ticket has come (after the first read)."""
        session = getattr(sock, "session", None)
        if session is None or getattr(sock, "context", None) is not self._context:
            return  # a session is offered only by the context that made it
        if sock.version() == "TLSv1.3" and not session.has_ticket:  # type: ignore[attr-defined]
            return
        self._session = session
