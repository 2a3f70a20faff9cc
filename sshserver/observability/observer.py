"""How the data plane reports sessions to whoever listens (the operator writes Events from it).

Observers are called from session threads and must not block: queue the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
    reason: str  # exit, client, error, revoked, expired, idle, limit, shutdown
    exit_status: int
    duration_s: float
    message: str | None = None


class SessionObserver(Protocol):
    def session_started(self, record: SessionRecord) -> None: ...

    def session_ended(self, record: SessionRecord, outcome: SessionOutcome) -> None: ...
