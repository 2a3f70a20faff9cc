"""The enforcer: `judge` is pure (a verdict from a session, a snapshot and the time), and the
Enforcer acts only through the registry (rebinding, counted against maxSessions) and the
session's own terminate/notify."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sshserver.gateway.enforcer import MAX_SWEEP_INTERVAL, WARN_BEFORE_END, Enforcer, judge, recheck_at
from sshserver.gateway.registry import SessionRegistry
from sshserver.grants.access import AccessSnapshot, AccessStore, Grant, Identity, SessionKind, grant_from_object
from sshserver.kube.ephemeral import DebugContainer
from sshserver.kube.resolver import ResolvedTarget
from sshserver.observability.metrics import Metrics
from sshserver.observability.observer import EndReason


@pytest.fixture(scope="module")
def pubkey(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("k") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return Path(f"{path}.pub").read_text().strip()


def grant(pubkey: str, name: str, uid: str, **spec: Any) -> Grant:
    return grant_from_object({
        "metadata": {"namespace": "shop", "name": name, "uid": uid, "generation": 1},
        "spec": {"user": name, "publicKeys": [pubkey], "pods": {"selector": {"matchLabels": {"app": "web"}}},
                 **spec}})


class FakeSession:
    """A LiveSession as the enforcer sees one; records what was asked of it."""

    def __init__(self, g: Grant | None, identity: Identity, kind: SessionKind = SessionKind.EXEC) -> None:
        self.grant = g
        self.kind = kind
        self.conn = SimpleNamespace(identity=identity, id=1)
        self.resolved = ResolvedTarget("shop", "web-1", "main", {"app": "web"}, (g,) if g else ())
        self.started = self.last_activity = time.monotonic()
        self.opened = True
        self.warned = False
        self.debug: DebugContainer | None = None
        self.done = False
        self.ended: list[tuple[str, str | None]] = []
        self.notices: list[str] = []

    def allowed_by(self, g: Grant) -> bool:
        return g.allow.permits(self.kind)

    def record(self) -> None:
        return None

    def terminate(self, reason: str, message: str | None = None) -> None:
        self.ended.append((reason, message))

    def notify(self, line: str) -> None:
        self.notices.append(line)

    def join(self, timeout: float | None = None) -> None:
        pass


def identity_of(g: Grant) -> Identity:
    return Identity(g.keys[0].fingerprint)


def now() -> tuple[datetime, float]:
    return datetime.now(UTC), time.monotonic()


def test_judge_keeps_a_covered_session_and_never_writes_it(pubkey: str) -> None:
    g = grant(pubkey, "g", "u1")
    s = FakeSession(g, identity_of(g))
    verdict = judge(s, AccessSnapshot((g,)), *now())
    assert verdict.end is None and verdict.grant is g and verdict.warn is None
    assert s.grant is g and not s.warned and not s.ended and not s.notices


def test_judge_ends_revoked_expired_and_revoked_key_sessions(pubkey: str) -> None:
    g = grant(pubkey, "g", "u1")
    s = FakeSession(g, identity_of(g))
    assert judge(s, AccessSnapshot(()), *now()).end is EndReason.REVOKED
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expired = grant(pubkey, "g", "u1", expiresAt=past)
    v = judge(s, AccessSnapshot((expired,)), *now())
    assert v.end is EndReason.EXPIRED and "expired" in v.message
    v = judge(s, AccessSnapshot((g,)), *now(), revoked_key="in the KRL")
    assert v.end is EndReason.REVOKED and "in the KRL" in v.message


def test_judge_ends_a_debug_session_when_spec_debug_or_its_image_is_taken_away(pubkey: str) -> None:
    debug = {"images": ["busybox:1.36", "nicolaka/netshoot:v0.13"]}
    g = grant(pubkey, "g", "u1", debug=debug)
    s = FakeSession(g, identity_of(g), SessionKind.SHELL)
    s.debug = DebugContainer("podssh-debug-0123456789", "busybox:1.36", created=True)
    assert judge(s, AccessSnapshot((g,)), *now()).grant is g

    no_debug = grant(pubkey, "g", "u1")  # spec.debug removed
    v = judge(s, AccessSnapshot((no_debug,)), *now())
    assert v.end is EndReason.REVOKED and v.message == "access shop/g was revoked"
    other_image = grant(pubkey, "g", "u1", debug={"images": ["nicolaka/netshoot:v0.13"]})  # the image removed
    assert judge(s, AccessSnapshot((other_image,)), *now()).end is EndReason.REVOKED

    # another grant that still lists the image takes the session over; a session not in a debug
    # container is not concerned with spec.debug at all
    other = grant(pubkey, "other", "u2", debug={"images": ["busybox:1.36"]})
    assert judge(s, AccessSnapshot((no_debug, other)), *now()).grant is other
    s.debug = None
    assert judge(s, AccessSnapshot((no_debug,)), *now()).grant is no_debug


def test_judge_leaves_sessions_that_have_not_started(pubkey: str) -> None:
    g = grant(pubkey, "g", "u1")
    assert judge(FakeSession(None, identity_of(g)), AccessSnapshot(()), *now(), revoked_key="x").end is None


def test_judge_limits_duration_idle_and_warns_once(pubkey: str) -> None:
    g = grant(pubkey, "g", "u1", limits={"maxSessionDuration": "90s", "idleTimeout": "30s"})
    s = FakeSession(g, identity_of(g))
    wall, mono = now()
    v = judge(s, AccessSnapshot((g,)), wall, mono + 35)
    assert v.end is EndReason.IDLE
    s.last_activity = mono + 40
    v = judge(s, AccessSnapshot((g,)), wall, mono + 40)
    assert v.end is None and v.warn is not None and "ends in 49s" in v.warn  # started just before `mono`
    s.warned = True
    assert judge(s, AccessSnapshot((g,)), wall, mono + 41).warn is None
    s.last_activity = mono + 90
    assert judge(s, AccessSnapshot((g,)), wall, mono + 91).end is EndReason.LIMIT


def test_a_session_moved_onto_another_grant_counts_against_its_max_sessions(pubkey: str) -> None:
    first = grant(pubkey, "first", "u1")
    second = grant(pubkey, "second", "u2", limits={"maxSessions": 1})
    ident = identity_of(first)
    registry = SessionRegistry(Metrics())
    store = AccessStore(AccessSnapshot((first, second)))
    holder = FakeSession(second, ident)  # already uses second's one place
    moved = FakeSession(first, ident)
    registry.add(holder)
    registry.add(moved)
    enforcer = Enforcer(registry, store, revoked=lambda _: None)
    store.replace(AccessSnapshot((second,)))  # `first` deleted; `second` covers the pod too, but is full
    enforcer.check_all()
    assert moved.ended and moved.ended[0][0] == EndReason.LIMIT and "at most 1" in (moved.ended[0][1] or "")
    assert moved.grant is first and not holder.ended

    registry.discard(moved)  # it ended (a real session gives back its place itself)
    registry.discard(holder)  # the place is free now: the next sweep moves the session
    again = FakeSession(first, ident)
    registry.add(again)
    enforcer.check_all()
    assert again.grant is second and not again.ended


def test_the_warning_is_shown_once_through_the_session(pubkey: str) -> None:
    g = grant(pubkey, "g", "u1", limits={"maxSessionDuration": "30s"})
    registry = SessionRegistry(Metrics())
    s = FakeSession(g, identity_of(g))
    registry.add(s)
    enforcer = Enforcer(registry, AccessStore(AccessSnapshot((g,))), revoked=lambda _: None)
    enforcer.check_all()
    enforcer.check_all()
    assert len(s.notices) == 1 and "ends in" in s.notices[0] and s.warned and not s.ended


def test_an_edited_grant_is_rebound_with_its_new_limits(pubkey: str) -> None:
    g = grant(pubkey, "g", "u1")
    registry = SessionRegistry(Metrics())
    s = FakeSession(g, identity_of(g))
    registry.add(s)
    store = AccessStore(AccessSnapshot((g,)))
    enforcer = Enforcer(registry, store, revoked=lambda _: None)
    edited = grant(pubkey, "g", "u1", limits={"maxSessions": 1, "idleTimeout": "1h"})
    store.replace(AccessSnapshot((edited,)))
    enforcer.check_all()
    assert s.grant is edited and not s.ended


def test_a_key_in_the_revoked_keys_file_ends_its_sessions(pubkey: str) -> None:
    g = grant(pubkey, "g", "u1")
    registry = SessionRegistry(Metrics())
    s = FakeSession(g, identity_of(g))
    registry.add(s)
    Enforcer(registry, AccessStore(AccessSnapshot((g,))), revoked=lambda _: "listed").check_all()
    assert s.ended == [(EndReason.REVOKED, "this key was revoked (listed)")]


def test_recheck_at_is_the_first_moment_time_alone_can_change_the_verdict(pubkey: str) -> None:
    wall, mono = now()
    plain = grant(pubkey, "g", "u1")
    s = FakeSession(plain, identity_of(plain))
    assert recheck_at(s, plain, wall, mono) == mono + MAX_SWEEP_INTERVAL  # nothing is a matter of time
    soon = (wall + timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expiring = grant(pubkey, "g", "u1", expiresAt=soon)
    assert mono + 18 < recheck_at(s, expiring, wall, mono) <= mono + 20
    limited = grant(pubkey, "g", "u1", limits={"maxSessionDuration": "100s", "idleTimeout": "10m"})
    s.started = mono - 50
    assert recheck_at(s, limited, wall, mono) == s.started + 100 - WARN_BEFORE_END  # the warning first
    s.warned = True
    assert recheck_at(s, limited, wall, mono) == s.started + 100
    idle = grant(pubkey, "g", "u1", limits={"idleTimeout": "30s"})
    s.last_activity = mono + 7  # active since: the idle timeout counts from there
    assert recheck_at(s, idle, wall, mono) == mono + 37


def test_an_idle_gateway_sweeps_only_when_something_changed_or_fell_due(pubkey: str, tmp_path: Path) -> None:
    """A thousand idle sessions were judged every second (the largest part of an idle gateway's
    CPU): a sweep is due only on a swap, a new session, a new revoked-keys list, or the time."""
    g = grant(pubkey, "g", "u1", limits={"idleTimeout": "30s"})
    registry = SessionRegistry(Metrics())
    store = AccessStore(AccessSnapshot((g,)))
    revocations: list[object] = [object()]
    enforcer = Enforcer(registry, store, revoked=lambda _: None, revocations=lambda: revocations[0])
    s = FakeSession(g, identity_of(g))
    registry.add(s)
    assert enforcer.sweep_due()
    enforcer.check_all()
    assert not enforcer.sweep_due()  # nothing changed, nothing due
    assert enforcer.next_sweep == s.last_activity + 30
    assert enforcer.sweep_due(s.last_activity + 30)  # the idle timeout falls due
    registry.add(FakeSession(g, identity_of(g)))
    assert enforcer.sweep_due()
    enforcer.check_all()
    store.replace(AccessSnapshot((g,)))
    assert enforcer.sweep_due()
    enforcer.check_all()
    revocations[0] = object()  # the revoked keys file changed
    assert enforcer.sweep_due()
    enforcer.check_all()
    assert not enforcer.sweep_due()
    # a session's first binding (its claim) makes one due as well
    waiting = FakeSession(None, identity_of(g))
    registry.add(waiting)
    enforcer.check_all()
    assert enforcer.next_sweep <= time.monotonic() + 1.0  # an unbound session is looked at every tick
    registry.claim(waiting, [g])
    assert enforcer.sweep_due()


def test_the_enforcer_thread_ends_a_session_when_its_idle_timeout_falls_due(pubkey: str) -> None:
    g = grant(pubkey, "g", "u1", limits={"idleTimeout": "1s"})
    registry = SessionRegistry(Metrics())
    s = FakeSession(g, identity_of(g))
    registry.add(s)
    enforcer = Enforcer(registry, AccessStore(AccessSnapshot((g,))), revoked=lambda _: None, tick=0.05)
    enforcer.start()
    try:
        deadline = time.monotonic() + 5
        while not s.ended and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        enforcer.stop()
    assert s.ended and s.ended[0][0] == EndReason.IDLE
