"""Keepalive of the API leg: a partitioned API server must end a session, not leave it hanging.

A WebSocket to the API server over a path that silently drops packets (a partition, a dead
node) never fails by itself: the reader blocks in recv() for ever and the user sees a frozen
session. One thread watches every open stream: a stream that received nothing (no data, no
pong) for `interval` seconds gets a WebSocket ping; one silent for `timeout` seconds is given
up, and its owner is told (the session then ends with 255 and a one-line reason).

One thread for all streams (not one per session): a thousand idle sessions cost one wake-up
per tick. The thread never blocks on a stream: a ping is sent only when the stream's send
lock is free and its socket writable at once (see ChannelStream.ping), so one dead stream
cannot delay the others' deadlines.

Threads: `watch`/`forget` are called by session threads; `_run` is the "api-keepalive" thread;
the `on_dead` callbacks run on it and must not block (Session.terminate only aborts a socket).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sshserver.observability.logevents import event

log = logging.getLogger("podssh.keepalive")


class Pingable(Protocol):
    last_received: float

    def ping(self) -> bool: ...


@dataclass(eq=False)
class _Watched:
    stream: Pingable
    on_dead: Callable[[float], None]
    last_ping: float  # no ping before the stream has been silent for an interval


class ApiKeepalive:
    def __init__(self, interval: float, timeout: float) -> None:
        self.interval, self.timeout = interval, timeout
        self._watched: dict[int, _Watched] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > 0 and self.timeout > 0

    def watch(self, stream: Pingable, on_dead: Callable[[float], None]) -> None:
        """From now on, `on_dead(silent_seconds)` is called once if the stream falls silent."""
        if not self.enabled:
            return
        with self._lock:
            self._watched[id(stream)] = _Watched(stream, on_dead, stream.last_received)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="api-keepalive", daemon=True)
                self._thread.start()

    def forget(self, stream: Pingable) -> None:
        with self._lock:
            self._watched.pop(id(stream), None)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        tick = max(0.05, min(1.0, self.interval / 2))
        while not self._stop.wait(tick):
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        with self._lock:
            watched = list(self._watched.values())
        for w in watched:
            silent = now - w.stream.last_received
            if silent >= self.timeout:
                self.forget(w.stream)
                event(log, "api_stream_silent", logging.WARNING, silent_s=round(silent, 1))
                try:
                    w.on_dead(silent)
                except Exception:  # one owner's bug must not stop the others' keepalive
                    log.exception("keepalive_callback_failed")
            elif silent >= self.interval and now - w.last_ping >= self.interval:
                w.last_ping = now
                w.stream.ping()
