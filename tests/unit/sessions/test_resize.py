"""Window changes never block the connection's Transport thread, and a stuck stream holds one
worker of the gateway's small control pool at most (review finding: it held the resize lock
while sending, and every window-change queued another blocked flush)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from sshserver.sessions.execsession import ExecSession


class StuckStream:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.sizes: list[tuple[int, int]] = []

    def resize(self, cols: int, rows: int) -> None:
        self.release.wait(10)
        self.sizes.append((cols, rows))


def test_window_changes_return_at_once_while_a_resize_is_stuck() -> None:
    pool = ThreadPoolExecutor(max_workers=4)
    submitted: list[object] = []

    def submit(fn: object, *args: object) -> None:
        submitted.append(fn)
        pool.submit(fn, *args)  # type: ignore[arg-type]

    session = ExecSession.__new__(ExecSession)
    session._services = SimpleNamespace(run_in_control=submit)  # type: ignore[assignment]
    session._size_lock, session._send_lock = threading.Lock(), threading.Lock()
    session._pending_size, session._flush_scheduled = None, False
    session._recording = None
    stream = StuckStream()
    session._stream = stream  # type: ignore[assignment]

    session.request_resize(100, 30)
    time.sleep(0.1)  # the flush is now stuck in resize()
    started = time.monotonic()
    for cols in range(101, 151):
        session.request_resize(cols, 30)
    assert time.monotonic() - started < 0.5, "the Transport thread waited for a stuck stream"
    assert len(submitted) == 1, "one flush per session in the control pool, not one per change"
    stream.release.set()
    deadline = time.monotonic() + 5
    while stream.sizes[-1:] != [(150, 30)] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.sizes == [(100, 30), (150, 30)]  # the latest size wins, in order
    pool.shutdown()
