"""Session events from the data plane, turned into Kubernetes Events and lastLoginTime (not to be
confused with sshserver.sessions, which runs the sessions themselves).

Called on session threads (through the observer); it only queues writes for the ClusterWriter."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from sshserver.observability.observer import SessionOutcome, SessionRecord

from .writer import ClusterWriter, ObjectEvent, StatusPatch

LOGIN_TIME_EVERY = 10.0  # seconds between lastLoginTime patches of one grant


class SessionEvents:
    def __init__(self, writer: ClusterWriter, monotonic: Callable[[], float] = time.monotonic) -> None:
        """`monotonic` paces the lastLoginTime patches (tests pass their own clock)."""
        self._writer = writer
        self._monotonic = monotonic
        self._last_patch: dict[str, float] = {}

    def session_started(self, r: SessionRecord) -> None:
        self._writer.emit(ObjectEvent(
            r.grant_namespace, r.grant_name, r.grant_uid, "SessionStarted",
            f"{r.user} started a {r.kind} session in {r.namespace}/{r.pod}:{r.container} from {r.peer}"))
        now = self._monotonic()
        if now - self._last_patch.get(r.grant_uid, -LOGIN_TIME_EVERY) >= LOGIN_TIME_EVERY:
            self._last_patch[r.grant_uid] = now
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._writer.patch_status(StatusPatch(r.grant_namespace, r.grant_name, r.grant_uid,
                                                  {"lastLoginTime": stamp}))

    def session_ended(self, r: SessionRecord, o: SessionOutcome) -> None:
        revoked = o.reason in ("revoked", "expired")
        reason = "SessionRevoked" if revoked else "SessionEnded"
        detail = f": {o.message}" if o.message else ""
        self._writer.emit(ObjectEvent(
            r.grant_namespace, r.grant_name, r.grant_uid, reason,
            f"{r.user}'s {r.kind} session in {r.namespace}/{r.pod} ended ({o.reason}, exit {o.exit_status},"
            f" {o.duration_s:.0f}s){detail}", warning=revoked))
