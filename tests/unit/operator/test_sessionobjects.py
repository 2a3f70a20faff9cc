"""SSHSession objects against the fake API: created when a session starts, deleted when it ends,
counters patched at a bounded pace, a bounded write rate under churn, sessions untouched by an
API server that is down (the objects catch up), a deletion through the API ends the right
session, and a dead replica's objects are cleaned up by a living one."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from itertools import count
from typing import Any

import pytest
from sshoperator import cli
from sshoperator.sessionbodies import (
    LEASE_LABEL,
    LEASE_NAMESPACE_LABEL,
    REAPED_ANNOTATION,
    REPLICA_LABEL,
    SESSION_LABEL,
    lease_body,
)
from sshoperator.sessionobjects import SessionObjects

from sshserver.config.settings import GatewaySettings
from sshserver.gateway.core import Gateway
from sshserver.grants.access import AccessStore
from sshserver.observability.audit import AuditTrail
from sshserver.observability.observer import EndReason, SessionCounters, SessionOutcome, SessionRecord
from tests.support.fakekube import FakeKube, connection_refused

SESSIONS = "sshsessions"
LEASES = "leases"
LEASE_NS = "podssh-system"
_ids = count(1)


class Traffic:
    """A session's counters, as Session.counters() gives them; the test moves them."""

    def __init__(self) -> None:
        self.bytes_in = self.bytes_out = 0
        self.last = time.time()

    def __call__(self) -> SessionCounters:
        return SessionCounters(self.bytes_in, self.bytes_out, self.last)


def record(user: str = "alice", pod: str = "web-1", kind: str = "shell", command: str | None = None,
           traffic: Traffic | None = None) -> SessionRecord:
    return SessionRecord("shop", "alice-ssh", "uid-g", user, kind, "shop", pod, "main", "10.0.0.9:50000",
                         session_id=f"s{next(_ids):06d}", command=command, started_at=time.time(),
                         pod_uid="uid-pod", counters=traffic or Traffic())


def ended(reason: EndReason = EndReason.EXIT) -> SessionOutcome:
    return SessionOutcome(reason, 0, None, 1.0)


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    k = FakeKube()
    yield k
    k.heal()
    k.release()


@pytest.fixture
def make_objects(kube: FakeKube) -> Iterator:
    started: list[SessionObjects] = []

    def make(replica: str = "r1", **options: Any) -> SessionObjects:
        fast = dict(update_every=0.2, renew_every=0.2, lease_duration=1, lease_grace=0.0, cleanup_every=0.3,
                    retry_base=0.02, retry_cap=0.1, request_timeout=0.3)
        objects = SessionObjects(kube, replica, LEASE_NS, **{**fast, **options})  # type: ignore[arg-type]
        objects.start()
        started.append(objects)
        return objects

    yield make
    for objects in started:
        objects.stop(flush_timeout=1.0)


def the_object(kube: FakeKube, r: SessionRecord) -> dict[str, Any] | None:
    return next((o for o in kube.objects(SESSIONS) if o["metadata"]["labels"][SESSION_LABEL] == r.session_id), None)


def test_an_object_is_created_when_a_session_starts_and_deleted_when_it_ends(kube: FakeKube, make_objects) -> None:
    objects = make_objects()
    r = record(command="tail -f /var/log/app.log\n" + "x" * 200)
    objects.session_started(r)
    obj = kube.wait_until(lambda: the_object(kube, r))
    assert obj["metadata"]["namespace"] == "shop"
    assert obj["metadata"]["name"] == f"alice-{r.session_id}"
    assert obj["metadata"]["labels"] == {
        REPLICA_LABEL: "r1", SESSION_LABEL: r.session_id, LEASE_NAMESPACE_LABEL: LEASE_NS}
    spec = obj["spec"]
    assert {k: spec[k] for k in ("user", "grant", "pod", "container", "kind", "replica", "peer")} == {
        "user": "alice", "grant": "alice-ssh", "pod": "web-1", "container": "main", "kind": "shell",
        "replica": "r1", "peer": "10.0.0.9:50000"}
    assert spec["command"].startswith("tail -f /var/log/app.log x") and len(spec["command"]) == 60
    assert spec["startedAt"].endswith("Z")
    assert obj["status"]["bytesIn"] == 0 and obj["status"]["lastActivityTime"].endswith("Z")
    # Its replica held a Lease before it was written.
    lease_create = kube.actions_for("create", LEASES)[0]
    assert kube.actions.index(lease_create) < kube.actions.index(kube.actions_for("create", SESSIONS)[0])
    assert kube.get(LEASE_NS, "podssh-gateway-r1", LEASES)["metadata"]["labels"][LEASE_LABEL] == "true"

    objects.session_ended(r, ended())
    kube.wait_until(lambda: the_object(kube, r) is None)
    assert [a.name for a in kube.actions_for("delete", SESSIONS)] == [obj["metadata"]["name"]]


def test_byte_counts_and_activity_are_patched_at_most_every_update_interval(kube: FakeKube, make_objects) -> None:
    objects = make_objects(update_every=0.3)
    traffic = Traffic()
    r = record(traffic=traffic)
    objects.session_started(r)
    kube.wait_until(lambda: the_object(kube, r))
    began = time.monotonic()
    while time.monotonic() - began < 1.5:  # traffic all the time, status every 0.3 s at most
        traffic.bytes_in += 10
        traffic.bytes_out += 1000
        traffic.last = time.time()
        objects._wake.set()
        time.sleep(0.01)
    patches = [a for a in kube.actions_for("patch", SESSIONS) if "status" in a.body]
    assert 2 <= len(patches) <= 6, len(patches)
    kube.wait_until(lambda: the_object(kube, r)["status"]["bytesOut"] == traffic.bytes_out, timeout=1.0)
    # Nothing changes: nothing is written.
    quiet = len(kube.actions_for("patch", SESSIONS))
    time.sleep(0.8)
    assert len(kube.actions_for("patch", SESSIONS)) == quiet


def test_a_thousand_quick_sessions_cost_a_bounded_number_of_writes(kube: FakeKube, make_objects) -> None:
    objects = make_objects(rate=50.0, burst=10.0, cleanup_every=60.0)
    began = time.monotonic()
    live: list[SessionRecord] = []
    for i in range(1000):
        r = record(user=f"u{i % 7}", pod=f"web-{i % 3}", kind="exec")
        objects.session_started(r)
        live.append(r)
        if len(live) > 5:  # a few at a time, each lives a couple of milliseconds
            objects.session_ended(live.pop(0), ended())
        time.sleep(0.001)
    for r in live:
        objects.session_ended(r, ended())
    elapsed = time.monotonic() - began
    writes = [a for a in kube.actions if a.resource in (SESSIONS, "events")]
    assert len(writes) <= 10 + 50 * (elapsed + 0.2), (len(writes), elapsed)
    kube.wait_until(lambda: objects.pending == 0 and not kube.objects(SESSIONS), timeout=20)
    # Pod Events are counted up per user, kind and pod: a few Events for a thousand sessions.
    events = kube.events()
    assert len(events) <= 2 * 7 * 3
    assert sum(e.get("count", 1) for e in events if e["reason"] == "SSHSessionStarted") <= 1000


def test_sessions_are_not_held_up_by_an_api_server_that_is_down_and_objects_catch_up(
        kube: FakeKube, make_objects) -> None:
    kube.hang_next(1000)  # every call waits for its timeout, then fails
    objects = make_objects()
    records = [record() for _ in range(20)]
    began = time.monotonic()
    for r in records:
        objects.session_started(r)
    objects.session_ended(records[0], ended())
    assert time.monotonic() - began < 0.05  # the observer never waits on the API server
    time.sleep(0.5)
    assert not kube.objects(SESSIONS)
    kube.heal()
    kube.wait_until(lambda: len(kube.objects(SESSIONS)) == 19, timeout=5)
    assert the_object(kube, records[0]) is None  # ended while the API server was down: never written


def test_refused_connections_pause_the_writer_and_it_retries(kube: FakeKube, make_objects) -> None:
    kube.fail_next(5, connection_refused())
    objects = make_objects()
    r = record()
    objects.session_started(r)
    kube.wait_until(lambda: the_object(kube, r), timeout=5)


def test_deleting_an_object_ends_that_session_only(kube: FakeKube, make_objects) -> None:
    audit = io.StringIO()
    gateway = Gateway(GatewaySettings(), AccessStore(), kube, [], audit=AuditTrail(audit))  # type: ignore[arg-type]
    try:
        victim, bystander = FakeSession("s-victim"), FakeSession("s-bystander")
        for s in (victim, bystander):
            gateway.registry.add(s)  # type: ignore[arg-type]
        objects = make_objects()
        objects.on_deleted = lambda sid, ns, name: cli._end_deleted(gateway, sid, ns, name)
        records = {s.id: SessionRecord("shop", "g", "u", "alice", "shell", "shop", "web-1", "main", "p",
                                       session_id=s.id, started_at=time.time(), counters=Traffic())
                   for s in (victim, bystander)}
        for r in records.values():
            objects.session_started(r)
        kube.wait_until(lambda: len(kube.objects(SESSIONS)) == 2)
        body = the_object(kube, records["s-victim"])
        assert body is not None
        kube.remove("shop", body["metadata"]["name"], SESSIONS)  # kubectl delete sshsession
        objects.deleted(body)  # what kopf's handler passes on
        assert victim.ended == [(EndReason.DELETED, "this session was ended through the Kubernetes API "
                                 f"(sshsession shop/{body['metadata']['name']} deleted)")]
        assert bystander.ended == []
        entry = json.loads(audit.getvalue().splitlines()[-1])
        assert (entry["event"], entry["session"], entry["via"]) == (
            "session_end_requested", "s-victim", "kubernetes-api")
        # Never written again, though its session lives on until it has ended.
        time.sleep(0.5)
        assert the_object(kube, records["s-victim"]) is None
        # The deletion of a session that ended already (this writer's own) ends nothing.
        objects.session_ended(records["s-bystander"], ended())
        kube.wait_until(lambda: not kube.objects(SESSIONS))
        objects.deleted(body | {"metadata": {**body["metadata"], "labels": {
            REPLICA_LABEL: "r1", SESSION_LABEL: "s-bystander"}}})
        assert bystander.ended == []
    finally:
        gateway.enforcer.stop()
        gateway.keepalive.stop()


def test_objects_of_another_replica_or_reaped_ones_end_nothing(make_objects) -> None:
    objects = make_objects()
    asked: list[str] = []
    objects.on_deleted = lambda sid, ns, name: asked.append(sid)
    r = record()
    objects.session_started(r)
    meta = {"namespace": "shop", "name": "x"}
    objects.deleted({"metadata": {**meta, "labels": {REPLICA_LABEL: "r2", SESSION_LABEL: r.session_id}}})
    objects.deleted({"metadata": {**meta, "labels": {REPLICA_LABEL: "r1", SESSION_LABEL: r.session_id},
                                  "annotations": {REAPED_ANNOTATION: "r2"}}})
    assert asked == []


def test_a_dead_replicas_objects_and_lease_are_cleaned_up_by_a_living_one(kube: FakeKube, make_objects) -> None:
    now = time.time()
    kube.add(lease_body("dead", LEASE_NS, 1, now - 60), LEASES)
    kube.add(lease_body("alive", LEASE_NS, 3600, now), LEASES)

    def obj(name: str, replica: str, lease_namespace: str = LEASE_NS) -> dict[str, Any]:
        return {"apiVersion": "podssh.dev/v1alpha1", "kind": "SSHSession",
                "metadata": {"name": name, "namespace": "shop", "labels": {
                    REPLICA_LABEL: replica, SESSION_LABEL: name, LEASE_NAMESPACE_LABEL: lease_namespace}},
                "spec": {"user": "bob"}}

    for name, replica in (("of-dead", "dead"), ("of-alive", "alive"), ("of-leaseless", "gone")):
        kube.add(obj(name, replica), SESSIONS)
    # Another installation's object: its replica's Lease is in a namespace r1 does not look at.
    kube.add(obj("of-other-install", "elsewhere", "other-system"), SESSIONS)
    make_objects("r1")
    kube.wait_until(lambda: {o["metadata"]["name"] for o in kube.objects(SESSIONS)} ==
                    {"of-alive", "of-other-install"}, timeout=5)
    kube.wait_until(lambda: kube.get(LEASE_NS, "podssh-gateway-dead", LEASES) is None, timeout=5)
    assert kube.get(LEASE_NS, "podssh-gateway-alive", LEASES) is not None
    marked = [a for a in kube.actions_for("patch", SESSIONS) if a.name == "of-dead"]
    assert marked and marked[0].body["metadata"]["annotations"] == {REAPED_ANNOTATION: "r1"}


def test_a_replica_killed_without_warning_is_cleaned_up_by_another(kube: FakeKube, make_objects) -> None:
    doomed = make_objects("doomed")
    r = record()
    doomed.session_started(r)
    kube.wait_until(lambda: the_object(kube, r))
    doomed._stop.set()  # its thread ends as a SIGKILL would end it: no cleanup of its own
    doomed._wake.set()
    assert doomed._thread is not None
    doomed._thread.join(2)
    make_objects("survivor")
    # Lease of 1 s, cleanup every 0.3 s: gone within a few seconds (a minute with the defaults).
    kube.wait_until(lambda: the_object(kube, r) is None, timeout=5)
    kube.wait_until(lambda: kube.get(LEASE_NS, "podssh-gateway-doomed", LEASES) is None, timeout=5)


def test_a_graceful_stop_deletes_the_objects_of_sessions_ended_at_shutdown_and_the_lease(kube: FakeKube) -> None:
    objects = SessionObjects(kube, "r1", LEASE_NS, renew_every=0.2)  # type: ignore[arg-type]
    objects.start()
    r = record()
    objects.session_started(r)
    kube.wait_until(lambda: the_object(kube, r))
    objects.session_ended(r, ended(EndReason.SHUTDOWN))
    objects.stop()
    assert the_object(kube, r) is None
    assert kube.get(LEASE_NS, "podssh-gateway-r1", LEASES) is None


def test_pod_events_are_aggregated_per_user_kind_and_pod(kube: FakeKube, make_objects) -> None:
    objects = make_objects()
    for _ in range(5):
        r = record(user="carol")
        objects.session_started(r)
        time.sleep(0.05)
        objects.session_ended(r, ended())
    kube.wait_until(lambda: sum(e.get("count", 0) for e in kube.events() if e["reason"] == "SSHSessionStarted") == 5)
    started = [e for e in kube.events() if e["reason"] == "SSHSessionStarted"]
    assert len(started) == 1
    assert started[0]["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "shop",
                                            "uid": "uid-pod"}
    assert "carol started a shell session" in started[0]["message"]
    kube.wait_until(lambda: sum(e.get("count", 0) for e in kube.events() if e["reason"] == "SSHSessionEnded") == 5)


class FakeSession:
    """A LiveSession as the registry sees one; records how it was asked to end."""

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.conn = type("Conn", (), {"id": 7})()
        self.kind = "shell"
        self.grant = None
        self.done = False
        self.ended: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()

    def terminate(self, reason: str, message: str | None = None) -> None:
        self.ended.append((reason, message))


def test_the_writers_calls_and_backlog_are_metrics(kube: FakeKube, make_objects) -> None:
    from prometheus_client import CollectorRegistry

    from sshserver.observability.metrics import Metrics

    metrics = Metrics(CollectorRegistry())

    def sample(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    kube.fail_next(3, connection_refused())
    objects = make_objects(retry_cap=0.05)
    objects.on_call = metrics.track_session_objects(lambda: objects.pending)
    records = [record() for _ in range(4)]
    for r in records:
        objects.session_started(r)
    kube.wait_until(lambda: len(kube.objects(SESSIONS)) == 4, timeout=5)
    assert sample("podssh_session_object_calls_total", result="failed") >= 1
    assert sample("podssh_session_object_calls_total", result="ok") >= 4
    assert sample("podssh_session_objects_pending") == 0
    kube.hang_next(1000)
    objects.session_ended(records[0], ended())
    time.sleep(0.2)
    assert sample("podssh_session_objects_pending") == 1  # the deletion the API server did not take yet
    kube.heal()
    kube.wait_until(lambda: len(kube.objects(SESSIONS)) == 3, timeout=5)
    assert sample("podssh_session_objects_pending") == 0


def test_a_status_patch_that_failed_is_written_once_the_api_server_is_back(kube: FakeKube, make_objects) -> None:
    traffic = Traffic()
    objects = make_objects()
    r = record(traffic=traffic)
    objects.session_started(r)
    kube.wait_until(lambda: the_object(kube, r), timeout=5)
    kube.fail_next(3, connection_refused(), verb="patch", resource=SESSIONS)
    traffic.bytes_in = 4242  # then the session falls idle: the counters do not move again
    kube.wait_until(lambda: (the_object(kube, r) or {}).get("status", {}).get("bytesIn") == 4242, timeout=5)


def test_an_object_with_a_sessions_labels_elsewhere_ends_nothing(make_objects) -> None:
    """Only the object this replica wrote for the session ends it: another one carrying its labels
    (in another namespace, or another name) is not it."""
    from sshoperator.sessionbodies import object_name

    objects = make_objects()
    asked: list[str] = []
    objects.on_deleted = lambda sid, ns, name: asked.append(sid)
    r = record()
    objects.session_started(r)
    labels = {REPLICA_LABEL: "r1", SESSION_LABEL: r.session_id}
    objects.deleted({"metadata": {"namespace": "attacker", "name": object_name(r), "labels": labels}})
    objects.deleted({"metadata": {"namespace": r.namespace, "name": "spoof", "labels": labels}})
    assert asked == []
    objects.deleted({"metadata": {"namespace": r.namespace, "name": object_name(r), "labels": labels}})
    assert asked == [r.session_id]


def test_an_idle_replica_samples_each_session_once_an_interval_and_never_lists_its_own_objects(
        kube: FakeKube, make_objects) -> None:
    """Idle costs: a thousand idle sessions were sampled at every step of the writer (twice an
    interval), and each cleanup listed all of this replica's own objects, which it never reaps."""

    class Counted(Traffic):
        calls = 0

        def __call__(self) -> SessionCounters:
            Counted.calls += 1
            return super().__call__()

    objects = make_objects(update_every=0.4, cleanup_every=0.2)
    records = [record(traffic=Counted()) for _ in range(5)]
    for r in records:
        objects.session_started(r)
    kube.wait_until(lambda: all(the_object(kube, r) for r in records))
    kube.wait_until(lambda: len(kube.actions_for("list", SESSIONS)) >= 2)
    Counted.calls = 0
    time.sleep(2.0)  # 5 intervals of 0.4 s: each idle session sampled about 5 times, not 10
    assert Counted.calls <= 5 * 6, Counted.calls
    lists = kube.actions_for("list", SESSIONS)
    assert lists and all("podssh.dev/replica!=r1" in (a.options.get("label_selector") or "") for a in lists)
