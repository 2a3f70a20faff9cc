"""Exponential delay for repeated authentication failures from one source address."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class FailureThrottle:
    """The first `free` failures cost nothing; each later one doubles the delay up to `cap`.

    A source is forgotten after `forget_after` seconds without failure, and on success. The table
    holds at most `max_sources` entries in least-recently-failed order: every update is O(1)
    (move to the end), and past the cap the entry that failed longest ago is evicted, so a flood
    of spoofed or rotating sources costs bounded memory and never a rebuild of the table.
    """

    def __init__(self, base: float = 0.25, cap: float = 8.0, free: int = 3,
                 forget_after: float = 300.0, max_sources: int = 10000) -> None:
        self._base, self._cap, self._free = base, cap, free
        self._forget_after, self._max_sources = forget_after, max(1, max_sources)
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
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
            count = self._count(source, now) + 1
            self._failures[source] = (count, now)
            self._failures.move_to_end(source)
            while len(self._failures) > self._max_sources:
                self._failures.popitem(last=False)

    def succeeded(self, source: str) -> None:
        with self._lock:
            self._failures.pop(source, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._failures)
