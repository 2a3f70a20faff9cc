"""The gateway-wide budget of large receive windows (ssh/windowbudget.py, patches.grow_window):
never exceeded, given back when a channel closes however it closes, and a channel left with the
small window still carries every byte. paramiko client and server in-process over a socket pair."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import paramiko
import pytest

from sshserver.ssh.internals import patches
from sshserver.ssh.windowbudget import WindowBudget, WindowGrant
from tests.support.inproc import linked_transports

patches.install()

SMALL, LARGE = 64 * 1024, 1024 * 1024


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture(scope="module")
def host_key() -> paramiko.ECDSAKey:
    return paramiko.ECDSAKey.generate()


@dataclass
class Pair:
    client: paramiko.Transport
    server: paramiko.Transport

    def channels(self, n: int) -> list[tuple[paramiko.Channel, paramiko.Channel]]:
        """n channels as (client end, server end)."""
        out = []
        for _ in range(n):
            mine = self.client.open_session()
            theirs = self.server.accept(5)
            assert theirs is not None
            out.append((mine, theirs))
        return out


@pytest.fixture
def pair(host_key: paramiko.ECDSAKey) -> Iterator[Pair]:
    with linked_transports(host_key, default_window_size=SMALL, default_max_packet_size=32 * 1024) as (client, server):
        yield Pair(client, server)


def test_channels_get_large_windows_only_while_the_budget_lasts(pair: Pair) -> None:
    budget = WindowBudget(3 * LARGE)
    chans = pair.channels(8)
    grown = [patches.grow_window(theirs, LARGE, budget) for _, theirs in chans]
    assert grown == [True] * 3 + [False] * 5 and budget.used == 3 * LARGE
    assert wait_until(lambda: chans[0][0].out_window_size == LARGE)
    assert [theirs.in_window_size for _, theirs in chans] == [LARGE] * 3 + [SMALL] * 5
    assert all(mine.out_window_size == SMALL for mine, _ in chans[3:])  # the client was told nothing
    assert not patches.grow_window(chans[0][1], LARGE, budget)  # growing twice takes nothing more
    assert budget.used == 3 * LARGE


def test_a_channel_gives_its_share_back_however_it_closes(pair: Pair) -> None:
    budget = WindowBudget(2 * LARGE)
    chans = pair.channels(5)
    assert [patches.grow_window(t, LARGE, budget) for _, t in chans[:3]] == [True, True, False]
    chans[0][0].close()  # the client closes (the server gets CHANNEL_CLOSE)
    assert wait_until(lambda: budget.used == LARGE)
    assert patches.grow_window(chans[2][1], LARGE, budget)  # its share went to the next one
    chans[1][1].close()  # the server closes
    assert budget.used == LARGE
    chans[2][1].close()
    chans[2][1].close()  # twice: given back once
    assert budget.used == 0
    assert patches.grow_window(chans[3][1], LARGE, budget) and patches.grow_window(chans[4][1], LARGE, budget)
    pair.server.close()  # the connection ends: every channel's share comes back
    assert wait_until(lambda: budget.used == 0)


def test_a_closed_channel_takes_nothing(pair: Pair) -> None:
    budget = WindowBudget(LARGE)
    ((_, theirs),) = pair.channels(1)
    theirs.close()
    assert not patches.grow_window(theirs, LARGE, budget) and budget.used == 0


def test_a_channel_left_with_the_small_window_carries_every_byte(pair: Pair) -> None:
    budget = WindowBudget(LARGE)
    (big_mine, big), (small_mine, small) = pair.channels(2)
    assert patches.grow_window(big, LARGE, budget) and not patches.grow_window(small, LARGE, budget)
    payload = os.urandom(3 * 1024 * 1024 + 17)  # 48 small windows
    received: dict[str, bytes] = {}

    def drain(name: str, chan: paramiko.Channel) -> None:
        out = bytearray()
        while chunk := chan.recv(65536):
            out += chunk
        received[name] = bytes(out)

    readers = [threading.Thread(target=drain, args=(n, c)) for n, c in (("big", big), ("small", small))]
    for r in readers:
        r.start()
    for mine in (big_mine, small_mine):
        mine.sendall(payload)
        mine.shutdown_write()
    for r in readers:
        r.join(30)
    assert received == {"big": payload, "small": payload}
    assert small.in_window_size == SMALL and not getattr(small, "podssh_window_violations", 0)


def test_the_budget_is_never_exceeded_by_threads_taking_and_giving() -> None:
    # Smaller than what one thread may hold (3 grants of up to 3 * LARGE): refusals come whether
    # or not the threads happen to interleave (with 10 * LARGE they came only if they did).
    budget = WindowBudget(4 * LARGE)
    lock = threading.Lock()
    live = {"bytes": 0, "peak": 0, "granted": 0, "refused": 0}
    start = threading.Barrier(8)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        held: list[tuple[int, WindowGrant]] = []  # up to 3 grants each: 8 x 3 x 3 MiB would be 72 MiB
        start.wait()
        for _ in range(3000):
            if held and (len(held) == 3 or rng.random() < 0.4):
                size, grant = held.pop(rng.randrange(len(held)))
                with lock:
                    live["bytes"] -= size
                grant.release()
                grant.release()  # twice: given back once
                continue
            size = rng.choice([LARGE, 2 * LARGE, 3 * LARGE])
            taken = budget.take(size)
            with lock:
                if taken is None:
                    live["refused"] += 1
                    continue
                live["bytes"] += size
                live["peak"] = max(live["peak"], live["bytes"])
                live["granted"] += 1
            held.append((size, taken))
        for size, grant in held:
            with lock:
                live["bytes"] -= size
            grant.release()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert live["peak"] <= 4 * LARGE and live["granted"] and live["refused"] and budget.used == 0


def test_an_exhausted_budget_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    budget = WindowBudget(LARGE)
    grant = budget.take(LARGE)
    assert grant is not None
    with caplog.at_level("WARNING", logger="podssh.window"):
        assert all(budget.take(LARGE) is None for _ in range(100))
    assert [r.getMessage() for r in caplog.records] == ["window_budget_exhausted"]


def test_the_gateway_budget_is_its_setting_and_exported_as_a_metric() -> None:
    from tests.support.inproc import running_gateway

    with running_gateway([], window_budget=3 * 1024 * 1024) as gw:
        budget, metrics = gw.gateway.window_budget, gw.gateway.metrics
        share = budget.take(2 * 1024 * 1024)
        assert share is not None and budget.take(2 * 1024 * 1024) is None  # 3 MiB: one share of 2 fits
        assert metrics.registry.get_sample_value("podssh_window_budget_used_bytes") == 2 * 1024 * 1024
        share.release()
        assert metrics.registry.get_sample_value("podssh_window_budget_used_bytes") == 0
