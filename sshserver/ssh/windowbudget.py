"""A gateway-wide budget for the large receive windows of SSH channels.

A channel that runs a session gets a large receive window (settings.window_size, 8 MiB) so that
uploads are fast (patches.grow_window). What a client sent and the session has not read yet
stays in memory, up to that window: 64 connections per key x 10 sessions x 8 MiB is 5 GiB for
one key, and any number of keys share one process. The budget bounds the sum of the large
windows granted at once (settings.window_budget): a channel that cannot get one keeps its small
window (it works, at a lower rate), and a channel gives its share back when it closes
(patches: paramiko's Channel._set_closed, on whichever thread closes it).

One object per gateway, shared by the threads that start sessions (Transport threads) and
those that close channels (Transport, session and supervisor threads): every call is
thread-safe and none blocks on anything but the budget's own lock.
"""

from __future__ import annotations

import logging
import threading
import time

from sshserver.observability.logevents import event

log = logging.getLogger("podssh.window")

LOG_INTERVAL = 60.0  # seconds between two `window_budget_exhausted` lines


class WindowGrant:
    """One channel's share of the budget; release() gives it back, once, from any thread."""

    def __init__(self, budget: WindowBudget, size: int) -> None:
        self._budget, self.size = budget, size
        self._released = False

    def release(self) -> None:
        with self._budget._lock:
            if self._released:
                return
            self._released = True
            self._budget._used -= self.size


class WindowBudget:
    """The bytes of large windows that may be granted at once (`limit`)."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"a window budget cannot be negative, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._used = 0
        self._refused = 0  # since the last log line
        self._logged_at: float | None = None

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    def take(self, size: int) -> WindowGrant | None:
        """A grant of `size` bytes, or None when it would exceed the limit (logged at most once
        per LOG_INTERVAL, with how many were refused since)."""
        with self._lock:
            if self._used + size <= self.limit:
                self._used += size
                return WindowGrant(self, size)
            self._refused += 1
            now = time.monotonic()
            if self._logged_at is not None and now - self._logged_at < LOG_INTERVAL:
                return None
            self._logged_at, refused, self._refused = now, self._refused, 0
            used = self._used
        event(log, "window_budget_exhausted", logging.WARNING, used=used, limit=self.limit, asked=size,
              refused=refused)
        return None
