"""The hangup queue (sessions/hangupqueue.py): a wave of dropped sessions costs one exec per pod,
never more than two at a time, and never blocks the sessions that enqueue."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import pytest

from sshserver.config.settings import GatewaySettings
from sshserver.kube.client import Impersonation
from sshserver.kube.execstream import ExecError, ExecRequest
from sshserver.kube.exitstatus import ExitStatus
from sshserver.kube.podrunner import Result
from sshserver.observability.audit import AuditTrail
from sshserver.observability.metrics import Metrics
from sshserver.sessions import hangup
from sshserver.sessions.execsession import ExecSession
from sshserver.sessions.hangupqueue import HangupQueue, Pending, Target, group
from sshserver.ssh.connection import Connection


class FakePods:
    """Stands in for PodRunner: records every exec (its target and argv), answers as the script
    would (`TOKEN COUNT` per token), and can hold each exec for a while to overlap them."""

    def __init__(self, hold: float = 0.0, processes: int = 2, fail: BaseException | None = None) -> None:
        self.hold = hold
        self.processes = processes
        self.fail = fail
        self.execs: list[tuple[Target, list[str]]] = []
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def runner_for(self, target: Target) -> FakePods.Runner:
        return FakePods.Runner(self, target)

    class Runner:
        def __init__(self, pods: FakePods, target: Target) -> None:
            self.pods, self.target = pods, target

        def run(self, argv: Sequence[str], stdin: bytes | None = None, limit: int = 0) -> Result:
            pods = self.pods
            with pods._lock:
                pods.execs.append((self.target, list(argv)))
                pods.active += 1
                pods.most_active = max(pods.most_active, pods.active)
            try:
                time.sleep(pods.hold)
                if pods.fail is not None:
                    raise pods.fail
                tokens = argv[4:]
                return Result(ExitStatus(0), "".join(f"{t} {pods.processes}\n" for t in tokens).encode(), b"")
            finally:
                with pods._lock:
                    pods.active -= 1


class Reports:
    """Collects the `reported` callbacks; wait() until n arrived."""

    def __init__(self) -> None:
        self.got: dict[str, list[int | None]] = {}
        self._cond = threading.Condition()

    def for_token(self, token: str) -> Callable[[int | None], None]:
        def reported(processes: int | None) -> None:
            with self._cond:
                self.got.setdefault(token, []).append(processes)
                self._cond.notify_all()
        return reported

    def wait(self, n: int, timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: sum(map(len, self.got.values())) >= n, timeout), self.got


def pod(i: int) -> Target:
    return Target("ns", f"web-{i}", "app", Impersonation("alice", ("devs",)))


def test_a_hundred_sessions_of_three_pods_dropped_at_once_cost_three_execs() -> None:
    pods, reports = FakePods(), Reports()
    q = HangupQueue(pods.runner_for, window=0.2)
    q.start()
    tokens = {i: [hangup.new_token() for _ in range(34 if i < 2 else 32)] for i in range(3)}
    start = threading.Barrier(100)
    returned: list[float] = []

    def drop(target: Target, token: str) -> None:
        start.wait()
        t0 = time.monotonic()
        assert q.enqueue(target, token, reports.for_token(token))
        returned.append(time.monotonic() - t0)

    threads = [threading.Thread(target=drop, args=(pod(i), t)) for i, ts in tokens.items() for t in ts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reports.wait(100)
    q.close()
    assert max(returned) < 0.1  # a session hands its hangup in and goes
    assert len(pods.execs) == 3
    by_pod = {target: argv for target, argv in pods.execs}
    assert set(by_pod) == {pod(0), pod(1), pod(2)}  # each with the sessions' impersonation
    for i, expected in tokens.items():
        argv = by_pod[pod(i)]
        assert argv[:4] == ["/bin/sh", "-c", hangup._SCRIPT, "sh"]  # tokens are arguments, not script text
        assert sorted(argv[4:]) == sorted(expected)
    assert all(got == [2] for got in reports.got.values()) and len(reports.got) == 100  # each told once


def test_at_most_two_hangup_execs_run_at_a_time() -> None:
    pods, reports = FakePods(hold=0.15), Reports()
    q = HangupQueue(pods.runner_for, window=0.05, concurrency=2)
    q.start()
    tokens = [hangup.new_token() for _ in range(8)]
    for i, token in enumerate(tokens):
        q.enqueue(pod(i), token, reports.for_token(token))
    reports.wait(8)
    q.close()
    assert len(pods.execs) == 8
    assert pods.most_active == 2  # overlapped, but never beyond the bound


def test_a_full_queue_drops_counts_and_logs_once_without_blocking(caplog: pytest.LogCaptureFixture) -> None:
    dropped: list[int] = []
    pods, reports = FakePods(), Reports()
    q = HangupQueue(pods.runner_for, on_drop=lambda: dropped.append(1), capacity=3, window=0.01)
    tokens = [hangup.new_token() for _ in range(6)]
    caplog.set_level(logging.INFO, logger="podssh.hangup")
    t0 = time.monotonic()
    accepted = [q.enqueue(pod(0), t, reports.for_token(t)) for t in tokens]  # nobody drains yet
    assert time.monotonic() - t0 < 0.1
    assert accepted == [True, True, True, False, False, False]
    assert len(dropped) == 3
    assert len([r for r in caplog.records if "hangup_dropped" in r.getMessage()]) == 1
    q.start()
    reports.wait(3)
    q.close()
    assert set(reports.got) == set(tokens[:3])  # the dropped ones are never reported (their session records it)
    assert [sorted(argv[4:]) for _, argv in pods.execs] == [sorted(tokens[:3])]


def test_close_runs_what_is_queued_at_once_and_refuses_more() -> None:
    pods, reports = FakePods(), Reports()
    q = HangupQueue(pods.runner_for, window=30.0)  # only the close can cut this window short
    q.start()
    token = hangup.new_token()
    q.enqueue(pod(0), token, reports.for_token(token))
    t0 = time.monotonic()
    q.close(timeout=5)
    assert time.monotonic() - t0 < 2
    assert reports.got == {token: [2]}
    assert not q.enqueue(pod(0), hangup.new_token(), reports.for_token("late"))


def test_a_failed_exec_reports_every_session_of_its_batch_as_unknown() -> None:
    pods, reports = FakePods(fail=ExecError("pod gone", "not_found")), Reports()
    q = HangupQueue(pods.runner_for, window=0.01)
    q.start()
    tokens = [hangup.new_token() for _ in range(3)]
    for t in tokens:
        q.enqueue(pod(0), t, reports.for_token(t))
    reports.wait(3)
    q.close()
    assert reports.got == {t: [None] for t in tokens}


def test_a_big_batch_is_split_so_the_exec_url_stays_short() -> None:
    batch = [Pending(pod(i % 2), f"{n:016x}", lambda _: None) for n, i in enumerate(range(5))]
    assert [(t.pod, [p.token for p in ps]) for t, ps in group(batch, max_tokens=2)] == [
        ("web-0", [f"{0:016x}", f"{2:016x}"]), ("web-0", [f"{4:016x}"]), ("web-1", [f"{1:016x}", f"{3:016x}"])]


def test_the_script_answer_is_read_per_token_and_only_for_tokens_asked() -> None:
    assert hangup.parse_counts(b"aa 3\nbb 0\ncc 9\nxx\n", ["aa", "bb", "dd"]) == {"aa": 3, "bb": 0}


# --- the session's side ------------------------------------------------------------------------


class RecordingQueue:
    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.queued: list[tuple[Target, str]] = []

    def enqueue(self, target: Target, token: str, reported: Callable[[int | None], None]) -> bool:
        self.queued.append((target, token))
        if self.accept:
            reported(1)
        return self.accept


def ended_session(queue: RecordingQueue, exited: bool) -> tuple[ExecSession, io.StringIO]:
    """An exec session as its end finds it: the stream was opened (`_request`), and the command
    either exited (its status came back) or the session was dropped."""
    sink = io.StringIO()
    services = SimpleNamespace(settings=GatewaySettings(), metrics=Metrics(), audit=AuditTrail(sink), hangups=queue)
    conn = Connection(peer="10.0.0.1:1")
    session = ExecSession(services, conn, SimpleNamespace(get_id=lambda: 0), "shell", None,  # type: ignore[arg-type]
                          conn.channel_state(0))
    session._request = ExecRequest("ns", "web-0", "app", ("sh",), impersonate=Impersonation("alice"))
    session._exited = exited
    session._after_end()
    return session, sink


def records(sink: io.StringIO) -> list[dict]:
    return [r for r in map(json.loads, sink.getvalue().splitlines()) if r["event"] == "session_hangup"]


def test_hangup_is_on_by_default() -> None:
    assert GatewaySettings().hang_up


def test_a_session_whose_command_exited_enqueues_nothing() -> None:
    queue = RecordingQueue()
    _, sink = ended_session(queue, exited=True)
    assert queue.queued == [] and records(sink) == []


def test_a_dropped_session_enqueues_its_token_and_records_its_hangup_once() -> None:
    queue = RecordingQueue()
    session, sink = ended_session(queue, exited=False)
    assert queue.queued == [(Target("ns", "web-0", "app", Impersonation("alice")), session._token)]
    [record] = records(sink)
    assert (record["session"], record["pod"], record["processes"]) == (session.id, "web-0", 1)


def test_a_dropped_hangup_is_recorded_as_dropped() -> None:
    _, sink = ended_session(RecordingQueue(accept=False), exited=False)
    [record] = records(sink)
    assert record["dropped"] is True and record["processes"] is None
