"""The API leg's keepalive: pings a silent stream, gives up on one silent past the timeout,
and never blocks on a stream whose send lock is taken."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sshserver.kube.keepalive import ApiKeepalive


@dataclass
class FakeStream:
    last_received: float = 0.0
    pings: int = 0

    def ping(self) -> bool:
        self.pings += 1
        return True


@dataclass
class Deaths:
    seen: list[float] = field(default_factory=list)

    def __call__(self, silent: float) -> None:
        self.seen.append(silent)


def test_a_silent_stream_is_pinged_then_given_up_once() -> None:
    ka = ApiKeepalive(interval=10, timeout=30)
    ka.stop()  # drive check() by hand
    stream, dead = FakeStream(last_received=100.0), Deaths()
    ka.watch(stream, dead)
    ka.check(105.0)
    assert stream.pings == 0 and not dead.seen  # not silent long enough
    ka.check(111.0)
    ka.check(112.0)
    assert stream.pings == 1  # one ping per interval, not per tick
    stream.last_received = 115.0  # the pong came back
    ka.check(140.0)
    assert not dead.seen
    ka.check(146.0)
    assert dead.seen == [31.0]
    ka.check(200.0)
    assert dead.seen == [31.0], "told once, then forgotten"


def test_a_forgotten_stream_is_left_alone() -> None:
    ka = ApiKeepalive(interval=1, timeout=2)
    ka.stop()
    stream, dead = FakeStream(), Deaths()
    ka.watch(stream, dead)
    ka.forget(stream)
    ka.check(1000.0)
    assert not dead.seen and stream.pings == 0


def test_off_when_either_bound_is_zero() -> None:
    ka = ApiKeepalive(interval=0, timeout=30)
    stream, dead = FakeStream(), Deaths()
    ka.watch(stream, dead)
    ka.check(1000.0)
    assert not ka.enabled and not dead.seen


def test_a_ping_never_waits_for_a_busy_stream() -> None:
    """ChannelStream.ping gives up at once when a stdin write holds the send lock."""
    from sshserver.kube.wsdial import ChannelStream

    class Ws:
        lock = threading.Lock()
        sock = None

    ws = Ws()
    stream = ChannelStream(ws)  # type: ignore[arg-type]
    with ws.lock:
        assert stream.ping() is False
