"""The paramiko ServerInterface: every hook is a decision, taken without blocking on the network.

All hooks are called by paramiko on the connection's Transport thread, one at a time, in the
order the client's messages arrive. They record what the client asked for (connection.py) and
return at once: resolving pods and opening exec streams happens in the session's own thread,
started through `HookServices.start_session`. The only hook that sleeps is a failed login (the
throttle's delay), which slows that connection alone.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Protocol

import paramiko
from paramiko import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_FAILED_RESOURCE_SHORTAGE,
    OPEN_FAILED_UNKNOWN_CHANNEL_TYPE,
    OPEN_SUCCEEDED,
)

from sshserver.grants.access import DEBUG_IMAGE_ENV, AccessStore, Identity, SessionKind
from sshserver.grants.certificates import CertificateError, UserCertificate, is_certificate, parse_user_certificate
from sshserver.grants.envnames import valid_env_name
from sshserver.grants.keys import fingerprint
from sshserver.grants.target import LISTING_USER, is_listing
from sshserver.observability.logevents import event
from sshserver.ssh.connection import Connection, PtyRequest
from sshserver.ssh.internals import transport as internals

if TYPE_CHECKING:
    from sshserver.config.settings import GatewaySettings
    from sshserver.observability.audit import AuditTrail
    from sshserver.observability.metrics import Metrics
    from sshserver.ssh.throttle import FailureThrottle

log = logging.getLogger("podssh.auth")

MAX_ENV_VALUE = 4096
MAX_TERMINAL = 10000
MAX_NOTICES = 8  # connection-wide notices kept for the next session
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})  # ssh -L: the pod itself


class HookServices(Protocol):
    """What the hooks use of the gateway (the gateway core implements it)."""

    settings: GatewaySettings
    store: AccessStore
    throttle: FailureThrottle
    audit: AuditTrail
    metrics: Metrics

    def revoked(self, identity: Identity) -> str | None:
        """Why --revoked-keys refuses this key now, or None."""

    def note_authenticated(self, conn: Connection) -> bool:
        """Records the login once; False when the connection may do nothing (over its key's cap)."""

    def start_session(self, conn: Connection, channel: paramiko.Channel, kind: SessionKind,
                      command: str | None) -> bool:
        """Starts the session's thread; False refuses the request. Must not block."""

    def start_listing(self, conn: Connection, channel: paramiko.Channel, asked: SessionKind,
                      command: str | None) -> bool:
        """Starts the listing of the key's targets (user name `ls`) for a request of kind `asked`
        (shell, exec or sftp: the session refuses sftp); False refuses the request. Must not block."""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class GatewayServer(paramiko.ServerInterface):
    """The hooks of one connection. Unless a hook says otherwise: called on the connection's
    Transport thread, must not block, and the default (paramiko's) would refuse."""

    def __init__(self, services: HookServices, conn: Connection) -> None:
        self._gw = services
        self._conn = conn
        self._accepted: tuple[str, str] | None = None  # (method, fingerprint) the last key check accepted

    # --- authentication ---------------------------------------------------------------------

    def get_allowed_auths(self, username: str) -> str:
        """Listed in every USERAUTH_FAILURE: public keys (and certificates) only."""
        return "publickey"

    def get_banner(self) -> tuple[str | None, str | None]:
        """Sent before authentication when --banner is set (default: none)."""
        banner = self._gw.settings.banner
        return (banner if banner.endswith("\n") else banner + "\n", "en-US") if banner else (None, None)

    def check_auth_none(self, username: str) -> int:
        """The client's first probe: refused without counting it as an attempt."""
        return AUTH_FAILED  # answers with the allowed methods; not counted as an attempt

    def check_auth_password(self, username: str, password: str) -> int:
        """Never accepted; counted and throttled like any failed attempt (the password is not logged)."""
        return self._fail(username, "password", None)

    def check_auth_interactive(self, username: str, submethods: str) -> int:
        """Never accepted; counted and throttled."""
        return self._fail(username, "keyboard-interactive", None)

    def check_auth_interactive_response(self, responses: list[str]) -> int:
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        """A key or certificate offered (twice: as a query, then signed). Success needs a grant in
        the snapshot in force and no --revoked-keys entry; certificates are checked against the
        grants' CAs and their critical options. May sleep the throttle's delay on failure."""
        conn = self._conn
        self._accepted = None
        if conn.auth_failures >= self._gw.settings.max_auth_tries:
            conn.hang_up("too_many_auth_failures")
            return AUTH_FAILED
        public_blob = getattr(key, "public_blob", None)
        blob = public_blob.key_blob if public_blob is not None else key.asbytes()
        fp = fingerprint(blob)
        if is_certificate(blob):
            try:
                cert = parse_user_certificate(blob, self._gw.store.current.has_authority)
            except CertificateError as exc:
                return self._fail(username, "publickey-cert", fp, str(exc))
            if not cert.allows_source(conn.peer):  # sshd's source-address critical option
                return self._fail(username, "publickey-cert", fp, "certificate source-address excludes this address")
            identity, method = Identity(fp, cert, blob), "publickey-cert"
        else:
            identity, method = Identity(fp, blob=blob), "publickey"
        why = self._gw.revoked(identity)
        if why:
            return self._fail(username, method, fp, why)
        grants = self._gw.store.current.grants_for(identity)
        if not grants:
            return self._fail(username, method, fp)
        # paramiko asks twice: for the query, and for the signed request before it checks the
        # signature. Only a good signature completes authentication (the supervisor sees that on
        # the Transport); a bad one comes back through publickey_refused.
        conn.username, conn.identity, conn.grants = username, identity, grants
        self._accepted = (method, fp)
        return AUTH_SUCCESSFUL

    def publickey_refused(self, username: str) -> None:
        """paramiko refuses a publickey request (internals/patches.py; Transport thread, before the
        failure is sent). When check_auth_publickey had accepted its key, the signature was wrong:
        a failed attempt like any other, and the login it was about to make is forgotten. Any
        other refusal went through _fail already."""
        accepted, self._accepted = self._accepted, None
        if accepted is None:
            return
        conn = self._conn
        conn.username, conn.identity, conn.grants = None, None, ()
        method, fp = accepted
        self._fail(username, method, fp, "invalid signature")

    def malformed_key(self, username: str, why: str) -> None:
        """A publickey request whose key blob internals/patches.py refused before parsing it (Transport
        thread): an ordinary failed attempt, throttled and audited like the others."""
        self._fail(username, "publickey", None, f"malformed key: {why}"[:200])

    def _fail(self, username: str, method: str, fp: str | None, why: str | None = None) -> int:
        conn = self._conn
        self._accepted = None
        conn.auth_failures += 1
        self._gw.metrics.auth_attempts.labels(method, "failure").inc()
        source = conn.peer.rsplit(":", 1)[0]
        delay = self._gw.throttle.delay(source)
        self._gw.throttle.failed(source)
        self._gw.audit.record("auth_failure", conn=conn.id, peer=conn.peer, method=method, fingerprint=fp,
                              target=username[:256], attempt=conn.auth_failures, delay=round(delay, 2),
                              reason=why)
        if conn.auth_failures >= self._gw.settings.max_auth_tries:
            conn.hang_up("too_many_auth_failures")
        if delay:
            time.sleep(delay)  # slows only this connection's own Transport thread
        return AUTH_FAILED

    # --- channels ---------------------------------------------------------------------------

    def _logged_in(self) -> bool:
        transport = self._conn.transport
        if transport is None or not transport.is_authenticated():
            return False
        # Recorded before any request it permits; False: the connection is being hung up.
        return self._gw.note_authenticated(self._conn) is not False

    def check_channel_request(self, kind: str, chanid: int) -> int:
        """CHANNEL_OPEN of a `session` (other types but direct-tcpip are refused), up to
        max_sessions per connection like sshd's MaxSessions."""
        if not self._logged_in():
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        if kind == "session":
            if self._channels_full(session=True):
                return OPEN_FAILED_RESOURCE_SHORTAGE
            self._conn.channel_state(chanid)
            return OPEN_SUCCEEDED
        return OPEN_FAILED_UNKNOWN_CHANNEL_TYPE

    def _channels_full(self, session: bool) -> bool:
        """Whether a new channel would pass max_sessions (session channels) or max_channels (all,
        ssh -L included) on this connection, as sshd's MaxSessions. Counts the Transport's open
        channels: a closed one stops counting at once."""
        conn, s = self._conn, self._gw.settings
        if conn.transport is None:
            return False
        open_ids = internals.open_channel_ids(conn.transport)
        sessions = conn.open_sessions_among(open_ids)
        full = len(open_ids) >= s.max_channels or (session and sessions >= s.max_sessions)
        if full:
            event(log, "channel_refused", conn=conn.id, reason="too many channels", channels=len(open_ids),
                  sessions=sessions)
        return full

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple, destination: tuple) -> int:
        """`ssh -L`: only to a port of the target pod itself, and only a port some grant lists
        (never for `ls`, which names no pod). The supervisor starts the forward's session when it
        accepts the channel."""
        conn = self._conn
        if not self._logged_in():
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        if self._channels_full(session=False):
            return OPEN_FAILED_RESOURCE_SHORTAGE
        host, port = (destination[0], destination[1]) if destination else ("", 0)
        host = _text(host).lower()
        if is_listing(conn.username):  # `ls` names no pod: there is nothing to forward to
            event(log, "forward_refused", conn=conn.id, host=host[:64], port=port,
                  reason=f"{LISTING_USER} lists targets and forwards no port")
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        cert = self._certificate()
        if cert is not None and not cert.permit_port_forwarding:
            event(log, "forward_refused", conn=conn.id, host=host[:64], port=port,
                  reason="certificate without permit-port-forwarding")
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        allowed_ports = {p for g in conn.grants for p in g.allow.port_forward}
        if host not in LOCAL_NAMES or port not in allowed_ports:
            why = "not the pod itself (use localhost)" if host not in LOCAL_NAMES else "port not allowed"
            event(log, "forward_refused", conn=conn.id, host=host[:64], port=port, reason=why)
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        conn.channel_state(chanid).forward = (host, port)
        return OPEN_SUCCEEDED

    def _certificate(self) -> UserCertificate | None:
        identity = self._conn.identity
        return identity.certificate if identity is not None else None

    def check_channel_pty_request(self, channel: paramiko.Channel, term: bytes, width: int, height: int,
                                  pixelwidth: int, pixelheight: int, modes: bytes) -> bool:
        """pty-req: the terminal asked for, used when the shell/exec starts. A certificate without
        permit-pty gets none (the session goes on without, as under sshd)."""
        cert = self._certificate()
        if cert is not None and not cert.permit_pty:  # as sshd: no tty, the session goes on without
            event(log, "pty_refused", conn=self._conn.id, reason="certificate without permit-pty")
            return False
        reqs = self._conn.channel_state(channel.get_id())
        reqs.pty = PtyRequest(_text(term)[:64] or "xterm", _clamp(width, 80), _clamp(height, 24))
        return True

    def check_channel_window_change_request(self, channel: paramiko.Channel, width: int, height: int,
                                            pixelwidth: int, pixelheight: int) -> bool:
        """window-change: recorded, and handed to the running session, which sends it to the pod
        from its control pool (this thread never waits for the API server)."""
        cols, rows = _clamp(width, 80), _clamp(height, 24)
        reqs = self._conn.channel_state(channel.get_id())
        if reqs.pty:
            reqs.pty.cols, reqs.pty.rows = cols, rows
        session = self._conn.session_on(channel.get_id())
        if session is not None:
            session.request_resize(cols, rows)
        return True

    def check_channel_env_request(self, channel: paramiko.Channel, name: bytes, value: bytes) -> bool:
        """env (SetEnv/SendEnv): kept when the name is an identifier a grant allows, within the
        per-channel count and size caps; the value reaches the pod only as an argument."""
        if not self._count_env(channel.get_id(), len(name) + len(value)):
            return False
        key, val = _text(name), _text(value)
        if len(val) > MAX_ENV_VALUE or "\0" in val or not valid_env_name(key):
            # Not an identifier (`LC_X;id>P`): refused here, and build_command never pastes it.
            return False
        # PODSSH_DEBUG_IMAGE is the gateway's, never the pod's: kept for the session to check
        # against the grant's spec.debug (a clear refusal there, not a silently dropped request).
        if key != DEBUG_IMAGE_ENV and not any(g.env_allowed(key) for g in self._conn.grants):
            return False
        self._conn.channel_state(channel.get_id()).env[key] = val
        return True

    def _count_env(self, chanid: int, size: int) -> bool:
        """At most max_env_requests env requests and max_env_bytes of names and values per channel,
        refused ones included (each costs a reply and a hook call)."""
        s = self._gw.settings
        reqs = self._conn.channel_state(chanid)
        reqs.env_requests += 1
        if reqs.env_requests > s.max_env_requests or reqs.env_bytes + size > s.max_env_bytes:
            if reqs.env_requests == s.max_env_requests + 1 or reqs.env_bytes <= s.max_env_bytes:
                event(log, "env_refused", conn=self._conn.id, reason="too many env requests")
            return False
        reqs.env_bytes += size
        return True

    def _start(self, channel: paramiko.Channel, kind: SessionKind, command: str | None) -> bool:
        """Which session serves the request: the listing of targets for the reserved user name
        `ls` (whatever was asked: it refuses what it cannot do, with a message), else the
        session of the target the user name names."""
        if is_listing(self._conn.username):
            return self._gw.start_listing(self._conn, channel, kind, command)
        return self._gw.start_session(self._conn, channel, kind, command)

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        """shell: starts the session thread (which resolves the pod and may still refuse, with a
        message and exit status); True only means it started."""
        return self._start(channel, SessionKind.SHELL, None)

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        """exec: as shell, running the client's command (or a certificate's force-command); for
        `ls`, the command is the namespace to list."""
        return self._start(channel, SessionKind.EXEC, _text(command))

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        """subsystem: `sftp` only, served by the container's sftp-server or by the gateway."""
        if _text(name) == "sftp":
            return self._start(channel, SessionKind.SFTP, None)
        event(log, "subsystem_refused", conn=self._conn.id, subsystem=_text(name)[:64])
        return False

    def check_channel_x11_request(self, channel: paramiko.Channel, single_connection: bool,
                                  auth_protocol: str, auth_cookie: bytes, screen_number: int) -> bool:
        """Refused; the session that follows tells the user why."""
        self._conn.channel_state(channel.get_id()).notice("X11 forwarding is not supported")
        return False

    def check_channel_forward_agent_request(self, channel: paramiko.Channel) -> bool:
        """Refused; the session that follows tells the user why."""
        self._conn.channel_state(channel.get_id()).notice("agent forwarding is not supported")
        return False

    # --- global requests --------------------------------------------------------------------

    def check_port_forward_request(self, address: str, port: int) -> bool:
        """tcpip-forward (ssh -R): refused, counted; the next session tells the user why."""
        if self._logged_in() and self._count_global_request("tcpip-forward"):
            with self._conn.lock:
                if len(self._conn.notices) < MAX_NOTICES:
                    self._conn.notices.append(f"remote forwarding (-R {port}) is not supported")
        return False

    def cancel_port_forward_request(self, address: str, port: int) -> None:
        return None

    def check_global_request(self, kind: str, msg: paramiko.Message) -> bool:
        """Any other global request: keepalive@openssh.com is answered, the rest refused and
        counted (past max_global_requests the connection is hung up)."""
        if not self._logged_in():
            return False
        if kind == "keepalive@openssh.com":
            return True
        self._count_global_request(kind)
        return False

    def _count_global_request(self, kind: str) -> bool:
        """Counts a refused global request; past max_global_requests the connection is hung up
        (each one costs a reply, and -R a notice): False then."""
        conn = self._conn
        conn.global_requests += 1
        if conn.global_requests <= self._gw.settings.max_global_requests:
            return True
        if not conn.hangup.is_set():
            event(log, "global_requests_exceeded", conn=conn.id, kind=_text(kind)[:64])
            conn.hang_up("too_many_global_requests")
        return False


def _clamp(value: int, default: int) -> int:
    return value if 0 < value <= MAX_TERMINAL else default
