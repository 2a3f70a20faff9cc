"""How the data plane reports sessions to whoever listens (the operator writes Events and the
SSHSession objects from it).

Observers are called from session threads and must not block: queue the work. A record's
`counters` may be read later from any thread (the operator's writer samples it every few
seconds while the session lives): it reads plain attributes and never blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class EndReason(StrEnum):
    """Why a session ended: a label of `podssh_sessions_ended_total` and of the audit record."""

    EXIT = "exit"  # the command (or the port's connection) ended by itself
    CLIENT = "client"  # the client went away or closed the channel
    ERROR = "error"  # the pod, the node or the API server failed under it
    REFUSED = "refused"  # it never started: no such pod, not permitted, over a limit
    REVOKED = "revoked"  # its grant or its key was revoked
    EXPIRED = "expired"  # its grant or certificate expired
    IDLE = "idle"  # limits.idleTimeout
    LIMIT = "limit"  # limits.maxSessionDuration, or no place left under maxSessions
    SHUTDOWN = "shutdown"  # the gateway shut down
    DELETED = "deleted"  # its SSHSession object was deleted through the Kubernetes API


@dataclass(frozen=True)
class SessionCounters:
    """A live session's traffic so far, as sampled: bytes client → pod, pod → client, and the
    wall-clock time (epoch seconds) of the last byte either way."""

    bytes_in: int
    bytes_out: int
    last_activity: float


@dataclass(frozen=True)
class SessionRecord:
    grant_namespace: str
    grant_name: str
    grant_uid: str
    user: str
    kind: str
    namespace: str
    pod: str
    container: str | None
    peer: str
    session_id: str = ""  # stable for the session's life, unique across replicas (an SSHSession's label)
    command: str | None = None  # what an exec runs; "port N" for a forward; None for a shell
    started_at: float = 0.0  # wall clock, epoch seconds
    pod_uid: str = ""  # the target pod's uid ("" if unknown): Events about the pod name it
    counters: Callable[[], SessionCounters] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SessionOutcome:
    """How a session ended. A session returns it (duration 0); the registry adds the duration
    before observers see it."""

    reason: EndReason
    exit_status: int
    message: str | None = None  # the one line shown to the user, if any
    duration_s: float = 0.0


class SessionObserver(Protocol):
    def session_started(self, record: SessionRecord) -> None: ...

    def session_ended(self, record: SessionRecord, outcome: SessionOutcome) -> None: ...
