"""Every limit against floods, hit: before authentication (MaxStartups-like early drop, per-source
caps, the version-line timeout, the throttle table) and after it (channels, global requests,
connections per key, the small window before a request, thread-start failures). The caps kept by
the hooks alone (env requests per channel, channels by kind) are in tests/unit/ssh/test_hooks.py."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable

import paramiko
import pytest

from sshserver.sessions.lifecycle import Session
from sshserver.ssh.admission import Admission, Limits, Startups
from sshserver.ssh.throttle import FailureThrottle
from tests.support.inproc import client, grant_object, running_gateway

KEY = paramiko.ECDSAKey.generate()
OTHER = paramiko.ECDSAKey.generate()
GRANTS = [grant_object("alice", [KEY]), grant_object("bob", [OTHER])]


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def raw(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def closed_by_server(s: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server closes `s` (after its version line, if it sent one) within `timeout`."""
    s.settimeout(timeout)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


# --- pure logic ------------------------------------------------------------------------------


def test_failure_throttle_table_holds_its_cap_with_o1_updates() -> None:
    t = FailureThrottle(base=1.0, cap=8.0, free=1, max_sources=100)
    for i in range(5000):
        t.failed(f"10.0.{i // 256}.{i % 256}")
        assert len(t) <= 100
    assert len(t) == 100
    assert t.delay("10.0.0.0") == 0.0  # the oldest were evicted
    assert t.delay("10.0.19.135") == 1.0  # the newest (i = 4999) are kept
    t.failed("10.0.19.135")
    assert t.delay("10.0.19.135") == 2.0


def test_startups_parse_and_drop_probability() -> None:
    s = Startups.parse("10:30:100")
    assert (s.start, s.rate, s.full) == (10, 30, 100)
    assert s.drop_probability(9) == 0.0
    assert s.drop_probability(10) == pytest.approx(0.3)
    assert s.drop_probability(55) == pytest.approx(0.65)
    assert s.drop_probability(100) == 1.0
    assert Startups.parse("5") == Startups(5, 100, 5)
    for bad in ("", "a:b:c", "10:30", "0:30:10", "20:30:10", "1:101:5"):
        with pytest.raises(ValueError):
            Startups.parse(bad)


def test_random_early_drop_between_start_and_full() -> None:
    adm = Admission(Limits(startups=Startups(10, 30, 100), per_source_unauthenticated=1000, per_source=1000),
                    rng=random.Random(1))
    for i in range(10):
        assert adm.admit(f"10.0.0.{i}") is None  # below START: never dropped
    outcomes = [adm.admit(f"10.1.0.{i % 250}") for i in range(200)]
    drops = [o for o in outcomes if o is not None]
    assert drops and all("random early drop" in d or "too many" in d for d in drops)
    assert adm.counts()["unauthenticated"] <= 100
    assert sum(1 for o in outcomes if o is None) < 90  # a third and more of them dropped


def test_admission_per_source_and_per_identity() -> None:
    adm = Admission(Limits(startups=Startups(100, 30, 100), per_source_unauthenticated=2, per_source=3,
                           per_identity=1))
    assert adm.admit("a") is None and adm.admit("a") is None
    assert "from this address" in (adm.admit("a") or "")
    assert adm.admit("b") is None  # another address is not affected
    assert adm.authenticated("a", "key1")
    assert adm.admit("a") is None  # one of a's left the unauthenticated state
    assert adm.authenticated("a", "key2")
    assert "too many connections from this address" in (adm.admit("a") or "")  # 3 in all
    assert not adm.authenticated("a", "key1")  # key1 already holds its one connection
    adm.released("a", None, authenticated=True)
    adm.released("a", "key1", authenticated=True)
    assert adm.admit("a") is None
    assert adm.authenticated("a", "key1")


def test_connections_waiting_for_a_proxy_header_are_capped_in_all_and_per_proxy() -> None:
    adm = Admission(Limits(proxy_pending=5, proxy_pending_per_source=3))
    assert all(adm.hold("10.0.0.1") is None for _ in range(3))
    assert "from this proxy" in (adm.hold("10.0.0.1") or "")  # its own cap: 3
    assert adm.hold("10.0.0.2") is None and adm.hold("10.0.0.2") is None  # another proxy still gets in
    assert adm.counts()["held"] == 5
    why = adm.hold("10.0.0.3")  # a third proxy, under its own cap, but all places are taken
    assert why is not None and "PROXY header" in why and "from this proxy" not in why
    adm.unhold("10.0.0.1")  # a header came: its place goes back to that proxy and to the total
    assert adm.hold("10.0.0.1") is None
    assert adm.hold("10.0.0.3") is not None
    adm.unhold("10.0.0.2")
    assert adm.hold("10.0.0.3") is None
    for proxy in ["10.0.0.1"] * 3 + ["10.0.0.2", "10.0.0.3"]:
        adm.unhold(proxy)
    assert adm.counts()["held"] == 0 and adm.counts()["held_proxies"] == 0  # nothing kept per proxy


def test_holding_from_many_threads_never_passes_the_caps() -> None:
    adm = Admission(Limits(proxy_pending=40, proxy_pending_per_source=15))
    held: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        proxy = f"10.0.0.{i % 4}"
        start.wait()
        for _ in range(50):
            if adm.hold(proxy) is None:
                with lock:
                    held.append(proxy)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == adm.counts()["held"] == 40
    assert all(held.count(f"10.0.0.{i}") <= 15 for i in range(4))


def test_a_hold_without_a_proxy_address_counts_only_in_all() -> None:
    adm = Admission(Limits(proxy_pending=4, proxy_pending_per_source=1))
    assert all(adm.hold() is None for _ in range(3))
    assert adm.hold("10.0.0.1") is None and adm.hold("10.0.0.2") is not None  # the total is reached
    adm.unhold()
    assert adm.hold("10.0.0.2") is None


# --- the running gateway ------------------------------------------------------------------------


def test_per_source_cap_of_unauthenticated_connections() -> None:
    with running_gateway(GRANTS, max_unauthenticated_per_source=3) as gw:
        idle = [raw(gw.port) for _ in range(3)]
        try:
            for s in idle:
                assert s.recv(256).startswith(b"SSH-2.0-")
            fourth = raw(gw.port)
            assert closed_by_server(fourth)
            # Another address still gets in, and logs in.
            other = raw(gw.port, "127.0.0.2")
            assert other.recv(256).startswith(b"SSH-2.0-")
            other.close()
            t = client(gw.port, KEY, source="127.0.0.4")
            assert t.is_authenticated()
            t.close()
        finally:
            for s in idle:
                s.close()
        refused = [r for r in gw.audit.records if r["event"] == "connection_open"]
        assert len(refused) >= 4


def test_version_line_must_come_before_the_version_timeout() -> None:
    with running_gateway(GRANTS, version_timeout=1.0, login_grace_time=30.0) as gw:
        s = raw(gw.port)
        assert s.recv(256).startswith(b"SSH-2.0-")
        start = time.monotonic()
        s.settimeout(0.3)
        closed = False
        while time.monotonic() - start < 6:  # slowloris: one byte every 0.3 s, never a line
            try:
                s.send(b"S")
                if s.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed and time.monotonic() - start < 3
        closes = gw.audit.named("connection_close")
        assert closes and closes[-1]["reason"] == "version_timeout"


def test_channels_per_connection() -> None:
    with running_gateway(GRANTS, max_sessions=3, max_channels=4) as gw:
        t = client(gw.port, KEY)
        try:
            chans = [t.open_session() for _ in range(3)]
            with pytest.raises(paramiko.ChannelException):
                t.open_session()
            chans[0].close()
            assert chans[0].closed
            time.sleep(0.3)
            chans.append(t.open_session())  # a closed channel gives its place back at once
            assert t.is_active()
        finally:
            t.close()


def test_refused_global_requests_end_the_connection_past_the_cap() -> None:
    with running_gateway(GRANTS, max_global_requests=5) as gw:
        t = client(gw.port, KEY)
        try:
            for port in range(5):
                with pytest.raises(paramiko.SSHException):
                    t.request_port_forward("127.0.0.1", 10000 + port)
            for _ in range(20):  # keepalives are not counted
                assert t.global_request("keepalive@openssh.com", wait=True) is not None
            with pytest.raises(paramiko.SSHException):
                t.request_port_forward("127.0.0.1", 20000)
            assert wait_until(lambda: not t.is_active())
        finally:
            t.close()
        assert gw.audit.named("connection_close")[-1]["reason"] == "too_many_global_requests"


def test_connections_per_key() -> None:
    with running_gateway(GRANTS, max_connections_per_key=2) as gw:
        first, second = client(gw.port, KEY), client(gw.port, KEY)
        # The third authenticates and is hung up at once, before it may do anything: the client
        # sees either its login fail (the close came first) or its first channel refused.
        third: paramiko.Transport | None = None
        with contextlib.suppress(paramiko.SSHException):
            third = client(gw.port, KEY)
        try:
            if third is not None:
                with pytest.raises((paramiko.SSHException, EOFError)):
                    third.open_session(timeout=5)
                assert wait_until(lambda: not third.is_active())
            assert first.open_session() and second.open_session()
            other = client(gw.port, OTHER)  # another key is not affected
            assert other.open_session()
            other.close()
            first.close()
            # third (hung up), other and first closed: their places are given back
            assert wait_until(lambda: len(gw.audit.named("connection_close")) >= 3)
            fourth = client(gw.port, KEY)
            assert fourth.open_session()
            fourth.close()
        finally:
            for t in (first, second, third):
                if t is not None:
                    t.close()
        reasons = [r["reason"] for r in gw.audit.named("connection_close")]
        assert "too_many_connections_for_key" in reasons


def test_connections_per_source() -> None:
    with running_gateway(GRANTS, max_connections_per_source=3) as gw:
        ts = [client(gw.port, KEY) for _ in range(3)]
        try:
            s = raw(gw.port)
            assert closed_by_server(s)
            other = raw(gw.port, "127.0.0.3")
            assert other.recv(256).startswith(b"SSH-2.0-")
            other.close()
        finally:
            for t in ts:
                t.close()


def test_a_channel_has_a_small_window_until_it_runs_a_session() -> None:
    with running_gateway(GRANTS, initial_window_size=64 * 1024, window_size=4 * 1024 * 1024) as gw:
        t = client(gw.port, KEY)
        try:
            chan = t.open_session()
            assert chan.out_window_size == 64 * 1024
            chan.exec_command("true")  # the session fails later (no cluster); its window is grown first
            assert wait_until(lambda: chan.out_window_size >= 4 * 1024 * 1024 - 64 * 1024 or chan.closed)
            assert chan.out_window_size == 4 * 1024 * 1024
        finally:
            t.close()


def test_a_thread_that_cannot_start_refuses_one_connection_not_the_gateway(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_start = threading.Thread.start
    failures = {"conn": 1, "session": 1}

    def start(self: threading.Thread) -> None:
        kind = "conn" if self.name.startswith("conn-") else "session" if self.name.startswith("exec-") else None
        if kind and failures[kind] > 0:
            failures[kind] -= 1
            raise RuntimeError("can't start new thread")
        real_start(self)

    with running_gateway(GRANTS) as gw:
        monkeypatch.setattr(threading.Thread, "start", start)
        s = raw(gw.port)
        assert closed_by_server(s)
        assert failures["conn"] == 0
        t = client(gw.port, KEY)
        try:
            chan = t.open_session()
            with pytest.raises(paramiko.SSHException):
                chan.exec_command("true")  # its session thread could not start: refused
            assert failures["session"] == 0
            again = t.open_session()
            again.exec_command("true")  # the next one runs (and fails on the missing cluster)
            assert gw.thread.is_alive() and t.is_active()
        finally:
            t.close()
    assert isinstance(Session, type)


def test_refusals_under_a_flood_are_logged_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    with running_gateway(GRANTS, max_unauthenticated_per_source=1) as gw:
        idle = raw(gw.port)
        try:
            assert idle.recv(256).startswith(b"SSH-2.0-")
            with caplog.at_level("WARNING", logger="podssh.gateway"):
                for _ in range(30):
                    assert closed_by_server(raw(gw.port))
            refusals = [r for r in caplog.records if r.getMessage() == "connection_refused"]
            assert 1 <= len(refusals) <= 3  # 30 refused within a second or two
            assert gw.gateway.metrics.connections_total.labels("refused")._value.get() >= 30
        finally:
            idle.close()


def test_default_limits_let_twenty_parallel_logins_from_one_address_through() -> None:
    """The per-address caps must not refuse ordinary parallelism (ansible forks, CI jobs, the
    e2e suite's twenty parallel sessions): the defaults sit well above it."""
    from concurrent.futures import ThreadPoolExecutor

    with running_gateway(GRANTS) as gw:
        barrier = threading.Barrier(20)

        def one(_: int) -> bool:
            barrier.wait()
            t = client(gw.port, KEY)
            try:
                return t.is_authenticated() and t.open_session(timeout=10) is not None
            finally:
                t.close()

        with ThreadPoolExecutor(20) as pool:
            assert all(pool.map(one, range(20)))


def test_repeated_refused_requests_keep_one_notice() -> None:
    """200,000 x11-req on one channel once kept 200,000 notices (review finding)."""
    from sshserver.ssh.connection import ChannelState

    reqs = ChannelState()
    for _ in range(10_000):
        reqs.notice("X11 forwarding is not supported")
        reqs.notice("agent forwarding is not supported")
    assert reqs.notices == ["X11 forwarding is not supported", "agent forwarding is not supported"]
