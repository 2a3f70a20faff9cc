"""Per-connection state: what the client asked for, channel by channel, and what runs there.

Owners: the connection's Transport thread (the hooks) writes requests; its supervisor thread adds
and forgets channels; a session thread forgets its own channel when it ends. Everything that
more than one of them touches is changed under `Connection.lock`, and only through the methods
here, so a channel's state is created and cleared in one place.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sshserver.grants.access import Grant, Identity
from sshserver.ssh.internals import transport as transports

if TYPE_CHECKING:
    import paramiko

_ids = itertools.count(1)


class ChannelSession(Protocol):
    """What the SSH layer asks of whatever runs on a channel (sessions implement it)."""

    def request_resize(self, cols: int, rows: int) -> None:
        """The client's terminal changed size. Transport thread: must not block."""

    def stop_output(self) -> None:
        """The client reads no more output (eow@openssh.com). Transport thread: must not block."""

    def terminate(self, reason: str, message: str | None = None) -> None:
        """End it from outside. Any thread: must not block."""

    def join(self, timeout: float | None = None) -> None:
        """Wait for its thread (the supervisor, at the end of the connection)."""


@dataclass
class PtyRequest:
    term: str
    cols: int
    rows: int


@dataclass
class ChannelState:
    """One channel: what it asked for before its shell/exec/subsystem request, and its session."""

    pty: PtyRequest | None = None
    forward: tuple[str, int] | None = None  # direct-tcpip: the destination asked for
    env: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    env_requests: int = 0  # counted, accepted or not (limits in hooks.py)
    env_bytes: int = 0
    # A strong reference: paramiko holds channels weakly and closes collected ones.
    channel: paramiko.Channel | None = None
    session: ChannelSession | None = None

    def notice(self, text: str) -> None:
        """Shown to the user once the session starts; each text once (a client repeating a
        refused request cannot grow the list)."""
        if text not in self.notices:
            self.notices.append(text)


@dataclass(eq=False)  # identity semantics: kept in sets
class Connection:
    peer: str  # the client's address:port (from the PROXY header when there is one)
    proxy: str | None = None  # the proxy's address:port that sent the PROXY header
    transport: paramiko.Transport | None = None
    id: int = field(default_factory=lambda: next(_ids))
    username: str | None = None
    identity: Identity | None = None
    grants: tuple[Grant, ...] = ()
    auth_failures: int = 0
    authenticated: threading.Event = field(default_factory=threading.Event)
    # Set by a hook that wants the supervisor to hang up (too many failures).
    hangup: threading.Event = field(default_factory=threading.Event)
    hangup_reason: str = "too_many_auth_failures"
    counted_identity: str | None = None  # the identity Admission counts this connection under
    global_requests: int = 0  # refused global requests (-R, unknown ones)
    notices: list[str] = field(default_factory=list)  # connection-wide, shown in the next session
    channels: dict[int, ChannelState] = field(default_factory=dict)  # by our channel id
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def source(self) -> str:
        """The client's address without the port: what throttle and per-source caps count."""
        host = self.peer.rsplit(":", 1)[0]
        return host[1:-1] if host.startswith("[") else host

    def hang_up(self, reason: str) -> None:
        """Asks the supervisor to end this connection, waking it (any thread)."""
        self.hangup_reason = reason
        self.hangup.set()
        if self.transport is not None:
            transports.wake_accept(self.transport)

    def channel_state(self, chanid: int) -> ChannelState:
        """The channel's state, created on its first request."""
        with self.lock:
            return self.channels.setdefault(chanid, ChannelState())

    def hold(self, channel: paramiko.Channel) -> ChannelState:
        """Keeps a strong reference to an open channel (supervisor, or a hook starting a session)."""
        with self.lock:
            state = self.channels.setdefault(channel.get_id(), ChannelState())
            state.channel = channel
            return state

    def attach(self, channel: paramiko.Channel, session: ChannelSession) -> bool:
        """Binds a session to its channel; False when one runs there already (one request per
        channel, as RFC 4254 says)."""
        with self.lock:
            state = self.channels.setdefault(channel.get_id(), ChannelState())
            if state.session is not None:
                return False
            state.channel, state.session = channel, session
            return True

    def session_on(self, chanid: int) -> ChannelSession | None:
        with self.lock:
            state = self.channels.get(chanid)
            return state.session if state is not None else None

    def sessions(self) -> list[ChannelSession]:
        with self.lock:
            return [s.session for s in self.channels.values() if s.session is not None]

    def forget(self, chanid: int) -> None:
        """The channel is done: its state goes (the session's end, or the supervisor)."""
        with self.lock:
            self.channels.pop(chanid, None)

    def forget_closed(self) -> None:
        """Drops closed channels that never ran a session (the supervisor, every wake-up)."""
        with self.lock:
            for chanid in [i for i, s in self.channels.items()
                           if s.session is None and s.channel is not None and s.channel.closed]:
                del self.channels[chanid]

    def forget_all(self) -> None:
        with self.lock:
            self.channels.clear()

    def open_sessions_among(self, open_ids: list[int]) -> int:
        """How many of these open channels are session channels (not direct-tcpip)."""
        with self.lock:
            return sum(1 for i in open_ids if (s := self.channels.get(i)) is None or s.forward is None)

    def take_notices(self) -> list[str]:
        with self.lock:
            taken, self.notices = self.notices, []
            return taken
