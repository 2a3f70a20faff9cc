"""The gateway's one queue of hangups: many dropped sessions, few execs.

Each session that ends other than by its command's exit needs its processes hung up
(hangup.py), and that costs an exec into the pod. One exec per session made a mass disconnect
(a network blip, a gateway restart: hundreds of sessions at once) into hundreds of execs that
competed with the users logging back in. So a session only enqueues its token and returns;
the **hangup** thread waits a short window for the rest of the wave, then runs ONE exec per
(namespace, pod, container, impersonation) for every token of the batch, at most
`concurrency` execs at a time gateway-wide, each on a short-lived `hangup-exec` thread.

The queue is bounded: when it is full a session's hangup is dropped (counted in
`podssh_hangups_dropped_total`, one log line per run of drops) rather than block the session
that ends. Every session is told how its hangup went exactly once (its `reported` callback: the
session's `session_hangup` audit record), on a hangup thread; a dropped one is told by
`enqueue` returning False.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sshserver.kube.client import Impersonation, KubeClient
from sshserver.kube.execstream import ExecRequest
from sshserver.kube.podrunner import PodRunner, Result
from sshserver.observability.logevents import event
from sshserver.sessions import hangup

log = logging.getLogger("podssh.hangup")

WINDOW = 0.2  # how long a batch collects the sessions that end together
CONCURRENCY = 2  # hangup execs in flight, gateway-wide
CAPACITY = 10_000  # sessions waiting for their hangup
MAX_TOKENS = 200  # per exec: the tokens travel in the exec URL's query (~25 bytes each)
EXEC_TIMEOUT = 5.0  # a hangup exec that takes longer is given up


class Runner(Protocol):
    """What a hangup needs of a PodRunner (kube/podrunner.py); tests give a fake."""

    def run(self, argv: Sequence[str], stdin: bytes | None = None, limit: int = ...) -> Result: ...


@dataclass(frozen=True)
class Target:
    """Where a batch's exec runs, and as whom: sessions that share it share an exec."""

    namespace: str
    pod: str
    container: str
    impersonate: Impersonation | None = None

    @classmethod
    def of(cls, req: ExecRequest) -> Target:
        return cls(req.namespace, req.pod, req.container, req.impersonate)

    def request(self) -> ExecRequest:
        return ExecRequest(self.namespace, self.pod, self.container, (), stdin=False, impersonate=self.impersonate)


@dataclass(frozen=True)
class Pending:
    target: Target
    token: str
    reported: Callable[[int | None], None]  # processes hung up, None if unknown; called once


class HangupQueue:
    """One per gateway. `enqueue` from any thread, never blocks; `start` once, `close` at the
    gateway's shutdown (after its sessions ended, so their hangups are in the queue)."""

    def __init__(self, runner_for: Callable[[Target], Runner], on_drop: Callable[[], None] = lambda: None, *,
                 window: float = WINDOW, concurrency: int = CONCURRENCY, capacity: int = CAPACITY,
                 max_tokens: int = MAX_TOKENS) -> None:
        self._runner_for = runner_for
        self._on_drop = on_drop
        self._window = window
        self._max_tokens = max_tokens
        self._queue: queue.Queue[Pending | None] = queue.Queue(maxsize=capacity)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._concurrency = concurrency
        self._closing = threading.Event()
        self._lock = threading.Lock()  # _dropping
        self._dropping = False  # in a run of drops: logged once at its start
        self._thread: threading.Thread | None = None

    @classmethod
    def for_pods(cls, kube: KubeClient, timeout: float, on_drop: Callable[[], None]) -> HangupQueue:
        """The gateway's: execs through its API client, each given up after timeout."""
        return cls(lambda target: PodRunner(kube, target.request(), timeout=timeout), on_drop)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hangup", daemon=True)
        self._thread.start()

    def enqueue(self, target: Target, token: str, reported: Callable[[int | None], None]) -> bool:
        """Queues one session's hangup; False when it was dropped (the queue is full, or the
        gateway is closing): then `reported` is never called."""
        if not self._closing.is_set():
            try:
                self._queue.put_nowait(Pending(target, token, reported))
            except queue.Full:
                pass
            else:
                with self._lock:
                    self._dropping = False
                return True
        self._on_drop()
        with self._lock:
            first, self._dropping = not self._dropping, True
        if first:
            event(log, "hangup_dropped", logging.WARNING, reason="closing" if self._closing.is_set() else "queue_full",
                  capacity=self._queue.maxsize)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Runs what is queued now without waiting for the window, then stops; returns once the
        last exec ended, or after timeout (a stuck exec is given up: the gateway is going)."""
        deadline = time.monotonic() + timeout
        self._closing.set()
        with contextlib.suppress(queue.Full):  # wakes the hangup thread if it waits for work
            self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                return
        while True:  # enqueued while the close began, behind the wake-up: told, not run
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                _report(item.reported, None)
        for _ in range(self._concurrency):  # every slot back: no exec in flight
            if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                break

    # --- the hangup thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            if not self._closing.is_set():
                self._closing.wait(self._window)  # the rest of the wave; a close cuts it short
            batch, stop = self._drain([first])
            for target, pending in group(batch, self._max_tokens):
                self._slots.acquire()  # waits while `concurrency` execs run; the queue fills meanwhile
                try:
                    threading.Thread(target=self._exec, args=(target, pending), name="hangup-exec",
                                     daemon=True).start()
                except RuntimeError:  # no thread to be had: run it here
                    self._exec(target, pending)
            if stop:
                break

    def _drain(self, batch: list[Pending]) -> tuple[list[Pending], bool]:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
            if item is None:
                return batch, True
            batch.append(item)

    def _exec(self, target: Target, pending: list[Pending]) -> None:
        """One exec for every token of one container (a hangup-exec thread; holds a slot)."""
        try:
            counts: Mapping[str, int | None] = {}
            try:
                counts = hangup.hang_up(self._runner_for(target), [p.token for p in pending])
            except Exception as exc:  # building the runner failed: nothing signalled, all told
                event(log, "hangup_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}"[:200])
            for p in pending:
                _report(p.reported, counts.get(p.token))
        finally:
            self._slots.release()


def group(batch: Sequence[Pending], max_tokens: int) -> list[tuple[Target, list[Pending]]]:
    """The batch by target, in the order each target first appeared, at most max_tokens each."""
    by_target: dict[Target, list[Pending]] = {}
    for p in batch:
        by_target.setdefault(p.target, []).append(p)
    return [(target, pending[i:i + max_tokens])
            for target, pending in by_target.items() for i in range(0, len(pending), max_tokens)]


def _report(reported: Callable[[int | None], None], processes: int | None) -> None:
    try:
        reported(processes)
    except Exception as exc:  # one session's record must not cost the others theirs
        event(log, "hangup_report_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}"[:200])
