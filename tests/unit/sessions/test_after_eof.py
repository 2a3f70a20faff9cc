"""After the client's EOF a session waits for the channel to close: woken by the close itself
(paramiko sets the channel's status_event then), not by polling, and never in a busy loop."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from sshserver.sessions.lifecycle import Session


class Channel:
    """The two things of a paramiko Channel the wait uses; counts how often `closed` is read."""

    def __init__(self) -> None:
        self.status_event = threading.Event()
        self._closed = False
        self.looks = 0

    @property
    def closed(self) -> bool:
        self.looks += 1
        return self._closed

    def close(self) -> None:  # as paramiko's _set_closed
        self._closed = True
        self.status_event.set()


def waiting(chan: Channel, done: threading.Event) -> tuple[threading.Thread, list[str]]:
    calls: list[str] = []
    session = SimpleNamespace(channel=chan, _done=done)
    thread = threading.Thread(target=Session._await_channel_close, args=(session, lambda: calls.append("closed")))
    thread.start()
    return thread, calls


def test_an_idle_session_after_eof_is_not_polled_and_the_close_wakes_it_at_once() -> None:
    chan, done = Channel(), threading.Event()
    thread, calls = waiting(chan, done)
    time.sleep(1.2)  # polling every 0.5 s would have looked at the channel 3 times by now
    assert chan.looks == 1
    began = time.monotonic()
    chan.close()
    thread.join(2)
    assert not thread.is_alive() and calls == ["closed"] and time.monotonic() - began < 0.5


def test_the_session_ending_ends_the_wait_without_calling_back() -> None:
    chan, done = Channel(), threading.Event()
    thread, calls = waiting(chan, done)
    time.sleep(0.1)
    done.set()  # the session ended: it closes its channel next, which wakes the wait
    chan.close()
    thread.join(2)
    assert not thread.is_alive() and calls == []


def test_a_client_setting_status_event_without_closing_gets_polling_not_a_busy_loop() -> None:
    """An "exit-status" request from the client sets status_event on paramiko's server channel."""
    chan, done = Channel(), threading.Event()
    chan.status_event.set()
    thread, calls = waiting(chan, done)
    time.sleep(1.2)
    assert 2 <= chan.looks <= 4, chan.looks  # about every CLOSE_POLL seconds
    chan._closed = True
    thread.join(2)
    assert not thread.is_alive() and calls == ["closed"]
