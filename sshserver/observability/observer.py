"""How the data plane reports sessions to whoever listens (the operator writes Events from it).

Observers are called from session threads and must not block: queue the work.
"""

from __future__ import annotations

from dataclasses import dataclass
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
