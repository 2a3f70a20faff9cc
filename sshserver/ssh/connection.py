"""Per-connection state shared by the Transport thread (hooks) and the connection's supervisor."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sshserver.grants.access import Grant, Identity

if TYPE_CHECKING:
    import paramiko

    from sshserver.sessions.lifecycle import Bridge

_ids = itertools.count(1)


@dataclass
class PtyRequest:
    term: str
    cols: int
    rows: int


@dataclass
class ChannelRequests:
    """What a session channel asked for before its shell/exec request."""

    pty: PtyRequest | None = None
    forward: tuple[str, int] | None = None  # direct-tcpip: the destination asked for
    env: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    env_requests: int = 0  # counted, accepted or not (limits in server.py)
    env_bytes: int = 0

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
    requests: dict[int, ChannelRequests] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # connection-wide, shown in the next session
    # Strong references: paramiko holds channels weakly and closes collected ones.
    channels: set[paramiko.Channel] = field(default_factory=set)
    sessions: dict[int, Bridge] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def source(self) -> str:
        """The client's address without the port: what throttle and per-source caps count."""
        host = self.peer.rsplit(":", 1)[0]
        return host[1:-1] if host.startswith("[") else host

    def hang_up(self, reason: str) -> None:
        """Asks the supervisor to end this connection (any thread)."""
        self.hangup_reason = reason
        self.hangup.set()

    def channel_requests(self, chanid: int) -> ChannelRequests:
        with self.lock:
            return self.requests.setdefault(chanid, ChannelRequests())

    def take_notices(self) -> list[str]:
        with self.lock:
            taken, self.notices = self.notices, []
            return taken
