"""Exponential delay for repeated authentication failures from one source address."""

from __future__ import annotations

import threading
import time


class FailureThrottle:
    """The first `free` failures cost nothing; each later one doubles the delay up to `cap`.

    A source is forgotten after `forget_after` seconds without failure, and on success.
    """

    def __init__(self, base: float = 0.25, cap: float = 8.0, free: int = 3,
                 forget_after: float = 300.0, max_sources: int = 10000) -> None:
        self._base, self._cap, self._free = base, cap, free
        self._forget_after, self._max_sources = forget_after, max_sources
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def _count(self, source: str, now: float) -> int:
        count, last = self._failures.get(source, (0, 0.0))
        return count if now - last < self._forget_after else 0

    def delay(self, source: str) -> float:
        with self._lock:
            over = self._count(source, time.monotonic()) - self._free
        return 0.0 if over < 0 else min(self._cap, self._base * (2**over))

    def failed(self, source: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= self._max_sources:
                cutoff = now - self._forget_after
                self._failures = {k: v for k, v in self._failures.items() if v[1] >= cutoff}
            self._failures[source] = (self._count(source, now) + 1, now)

    def succeeded(self, source: str) -> None:
        with self._lock:
            self._failures.pop(source, None)
