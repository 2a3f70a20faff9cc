"""Session events become Kubernetes Events about the grant, and lastLoginTime at most every
LOGIN_TIME_EVERY seconds per grant; sessions the grant ended are Warnings."""

from __future__ import annotations

from collections.abc import Callable

from sshoperator.sessionevents import LOGIN_TIME_EVERY, SessionEvents
from sshoperator.writer import ClusterWriter

from sshserver.observability.observer import EndReason, SessionOutcome, SessionRecord
from tests.support.fakekube import FakeKube

from .conftest import sshaccess

RECORD = SessionRecord("shop", "alice", "u-alice", "alice", "shell", "shop", "web-1", "main", "10.0.0.9:5000")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_started_session_is_an_event_and_a_paced_last_login_time(
        kube: FakeKube, make_writer: Callable[..., ClusterWriter], pubkey: str) -> None:
    kube.add(sshaccess(pubkey, "alice"))
    writer, clock = make_writer(), Clock()
    events = SessionEvents(writer, monotonic=clock)
    events.session_started(RECORD)
    events.session_started(RECORD)  # within LOGIN_TIME_EVERY: an Event, no patch
    kube.wait_until(lambda: len(kube.events()) == 2 and writer.patches == 1)
    first = kube.status_of("shop", "alice")["lastLoginTime"]
    clock.now += LOGIN_TIME_EVERY
    events.session_started(RECORD)
    kube.wait_until(lambda: len(kube.events()) == 3 and writer.patches == 2)
    assert kube.status_of("shop", "alice")["lastLoginTime"] >= first
    event = kube.events()[0]
    assert (event["reason"], event["type"], event["involvedObject"]["uid"]) == ("SessionStarted", "Normal", "u-alice")
    assert event["message"] == "alice started a shell session in shop/web-1:main from 10.0.0.9:5000"


def test_an_ended_session_says_why_and_revocations_are_warnings(
        kube: FakeKube, make_writer: Callable[..., ClusterWriter]) -> None:
    events = SessionEvents(make_writer())
    events.session_ended(RECORD, SessionOutcome(EndReason.EXIT, 0, duration_s=12.4))
    events.session_ended(RECORD, SessionOutcome(EndReason.REVOKED, 255, "the grant was deleted", duration_s=3.0))
    kube.wait_until(lambda: len(kube.events()) == 2)
    got = sorted((e["reason"], e["type"], e["message"]) for e in kube.events())
    assert got == [
        ("SessionEnded", "Normal", "alice's shell session in shop/web-1 ended (exit, exit 0, 12s)"),
        ("SessionRevoked", "Warning",
         "alice's shell session in shop/web-1 ended (revoked, exit 255, 3s): the grant was deleted"),
    ]


def test_churn_is_paced_and_what_was_held_back_is_counted_in_one_event_per_grant_and_reason(
        kube: FakeKube, make_writer: Callable[..., ClusterWriter]) -> None:
    writer, clock = make_writer(), Clock()
    events = SessionEvents(writer, monotonic=clock, rate=5, burst=20, flush_after=3600)
    for _ in range(300):  # a thousand-session drop, in small: all in the same instant
        events.session_ended(RECORD, SessionOutcome(EndReason.CLIENT, 255, duration_s=1.0))
    for _ in range(2):
        events.session_ended(RECORD, SessionOutcome(EndReason.REVOKED, 255, "revoked", duration_s=1.0))
    kube.wait_until(lambda: len(kube.events()) == 20)
    clock.now += 1.0  # five more tokens
    for _ in range(10):
        events.session_started(RECORD)
    kube.wait_until(lambda: len(kube.events()) == 25)
    events.flush()
    kube.wait_until(lambda: len(kube.events()) == 28)
    summaries = sorted((e["reason"], e["type"], e["message"]) for e in kube.events() if "more session" in e["message"])
    assert summaries == [
        ("SessionEnded", "Normal", "280 more session(s) ended, not listed one by one (over 5 session Events a "
                                   "second): see the audit trail"),
        ("SessionRevoked", "Warning", "2 more session(s) ended, not listed one by one (over 5 session Events a "
                                      "second): see the audit trail"),
        ("SessionStarted", "Normal", "5 more session(s) started, not listed one by one (over 5 session Events a "
                                     "second): see the audit trail"),
    ]
    events.flush()  # nothing held: nothing more
    assert len(kube.events()) == 28


def test_what_was_held_back_is_said_by_the_timer(kube: FakeKube, make_writer: Callable[..., ClusterWriter]) -> None:
    events = SessionEvents(make_writer(), rate=1, burst=1, flush_after=0.05)
    events.session_started(RECORD)
    events.session_started(RECORD)
    kube.wait_until(lambda: any("1 more session(s) started" in e["message"] for e in kube.events()))
