"""Inventory with a real ClusterWriter on the fake API: what reaches the AccessStore and what is
written back. A bad object invalidates only itself (revocation keeps working), a deletion takes
its grants out of the snapshot, Expired is written when the grant expires (the expiry timer, not
the next resync), and a resync reconciles what the watch missed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sshoperator import GROUP, PLURAL, VERSION
from sshoperator.inventory import Inventory
from sshoperator.writer import ClusterWriter

from sshserver.grants.access import AccessSnapshot, AccessStore
from sshserver.grants.keys import parse_public_key
from tests.support.fakekube import FakeKube, api_error
from tests.unit.grants.test_access import compressed_ecdsa_line

from .conftest import sshaccess, stamp

MakeWriter = Callable[..., ClusterWriter]


class Clock:
    """A wall clock that moves only when told."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store() -> AccessStore:
    return AccessStore()


@pytest.fixture
def inventories() -> Iterator[list[Inventory]]:
    made: list[Inventory] = []
    yield made
    for inventory in made:
        inventory.close()


@pytest.fixture
def inventory(store: AccessStore, make_writer: MakeWriter, inventories: list[Inventory]) -> Inventory:
    made = Inventory(store, make_writer())
    inventories.append(made)
    return made


def ready(kube: FakeKube, name: str) -> dict[str, Any]:
    conditions = kube.status_of("shop", name).get("conditions") or [{}]
    return conditions[0]


def reason_is(kube: FakeKube, name: str, reason: str) -> Callable[[], bool]:
    return lambda: ready(kube, name).get("reason") == reason


def names(snapshot: AccessSnapshot, pubkey: str) -> list[str]:
    return sorted(g.name for g in snapshot.grants_for_fingerprint(parse_public_key(pubkey).fingerprint))


def test_a_new_object_gets_its_status_written_once(kube: FakeKube, inventory: Inventory, pubkey: str) -> None:
    body = sshaccess(pubkey, "alice")
    kube.add(body)
    inventory.upsert(body)
    kube.wait_until(reason_is(kube, "alice", "Valid"))
    status = kube.status_of("shop", "alice")
    assert status["keyCount"] == 1 and status["fingerprints"] == [parse_public_key(pubkey).fingerprint]
    # Another object's change rebuilds everything before the watch echoes alice's write: alice
    # is not patched again, and neither when the echo (the body with its status) arrives.
    kube.add(sshaccess(pubkey, "bob"))
    inventory.upsert(sshaccess(pubkey, "bob"))
    inventory.upsert(kube.get("shop", "alice") or {})
    kube.wait_until(reason_is(kube, "bob", "Valid"))
    time.sleep(0.05)
    assert [a.name for a in kube.actions_for("patch")] == ["alice", "bob"]


def test_deletion_takes_the_grants_out_of_the_snapshot(store: AccessStore, inventory: Inventory, pubkey: str) -> None:
    seen: list[AccessSnapshot] = []
    store.subscribe(seen.append)
    inventory.upsert(sshaccess(pubkey, "alice"))
    inventory.upsert(sshaccess(pubkey, "bob"))
    assert names(store.current, pubkey) == ["alice", "bob"]
    inventory.delete(sshaccess(pubkey, "alice"))
    assert names(store.current, pubkey) == ["bob"] and seen[-1] is store.current
    inventory.delete(sshaccess(pubkey, "bob"))
    assert store.current.grants == () and names(seen[-1], pubkey) == []


BAD_SPECS = [
    {"limits": {"idleTimeout": "9" * 400 + "s"}},
    {"publicKeys": ["__compressed__"]},
    {"pods": "x"},
    {"limits": [1]},
    {"allow": {"shell": "false"}},
    {"limits": {"maxSessions": 10**400}},
    {"user": "eve\r\nImpersonate-Group: system:masters"},
]


@pytest.mark.parametrize("bad_spec", BAD_SPECS)
@pytest.mark.parametrize("with_writer", [False, True])
def test_a_bad_object_invalidates_only_itself(kube: FakeKube, make_writer: MakeWriter, inventories: list[Inventory],
                                              pubkey: str, other_pubkey: str, bad_spec: dict[str, Any],
                                              with_writer: bool) -> None:
    """One object the parser chokes on must not freeze revocation for everyone."""
    if bad_spec.get("publicKeys") == ["__compressed__"]:
        bad_spec = {"publicKeys": [compressed_ecdsa_line()]}
    bodies = {"alice": sshaccess(pubkey, "alice"), "broken": sshaccess(pubkey, "broken", **bad_spec),
              "bob": sshaccess(pubkey, "bob", publicKeys=[pubkey, other_pubkey])}
    for body in bodies.values():
        kube.add(body)
    store = AccessStore()
    inventory = Inventory(store, make_writer() if with_writer else None)
    inventories.append(inventory)
    for body in bodies.values():
        inventory.upsert(body)
    assert names(store.current, pubkey) == ["alice", "bob"]
    # A deletion and an edit after the bad object arrived both apply at once.
    inventory.delete(bodies["alice"])
    assert names(store.current, pubkey) == ["bob"]
    inventory.upsert(sshaccess(pubkey, "bob", publicKeys=[other_pubkey]))
    assert names(store.current, pubkey) == [] and names(store.current, other_pubkey) == ["bob"]
    # So does a full resync that still holds the bad object.
    inventory.replace_all([bodies["broken"]])
    assert store.current.grants == ()
    if with_writer:
        reason = "InvalidKey" if "publicKeys" in bad_spec else "InvalidSpec"
        kube.wait_until(reason_is(kube, "broken", reason))
        assert ready(kube, "broken")["status"] == "False" and kube.status_of("shop", "broken")["keyCount"] == 0
        kube.wait_until(reason_is(kube, "bob", "Valid"))
        warnings = [(e["involvedObject"]["name"], e["reason"], e["type"]) for e in kube.events()]
        assert warnings == [("broken", reason, "Warning")], "one Event, not one per rebuild"


def test_objects_of_any_shape_are_survived(store: AccessStore, inventory: Inventory, pubkey: str) -> None:
    for body in ({"metadata": "x"}, {"metadata": {"uid": "z"}, "spec": [1]},
                 {"metadata": {"name": "n", "uid": "q"}, "status": "odd"}):
        inventory.upsert(body)
    inventory.upsert(sshaccess(pubkey, "alice"))
    assert [g.name for g in store.current.grants] == ["alice"]
    inventory.delete(sshaccess(pubkey, "alice"))
    assert store.current.grants == ()


def test_expired_is_written_when_the_grant_expires_not_at_the_next_resync(
        kube: FakeKube, store: AccessStore, inventory: Inventory, pubkey: str) -> None:
    body = sshaccess(pubkey, "alice", expiresAt=stamp(datetime.now(UTC) + timedelta(milliseconds=100)))
    kube.add(body)
    inventory.replace_all([body])
    kube.wait_until(reason_is(kube, "alice", "Valid"))
    kube.wait_until(reason_is(kube, "alice", "Expired"), timeout=1.5)  # nobody calls the inventory
    assert ready(kube, "alice")["status"] == "False"
    assert not kube.actions_for("list"), "written by the timer, not by a resync"
    assert store.current.grants_for_fingerprint(parse_public_key(pubkey).fingerprint) == ()


def test_not_before_turns_ready_when_it_comes(kube: FakeKube, inventory: Inventory, pubkey: str) -> None:
    body = sshaccess(pubkey, "alice", notBefore=stamp(datetime.now(UTC) + timedelta(milliseconds=100)))
    kube.add(body)
    inventory.upsert(body)
    kube.wait_until(reason_is(kube, "alice", "NotYetValid"))
    kube.wait_until(reason_is(kube, "alice", "Valid"), timeout=1.5)


def test_a_timer_that_fires_before_the_clock_says_so_is_armed_again(
        kube: FakeKube, make_writer: MakeWriter, inventories: list[Inventory], pubkey: str) -> None:
    """The expiry timer measures its delay on the monotonic clock, expiry is on the wall clock:
    when the wall clock lags (set back, slewed), the timer fires while the grant is still valid,
    and the inventory must arm it again for the same moment instead of never waking up."""
    clock = Clock()
    inventory = Inventory(AccessStore(), make_writer(), clock=clock)
    inventories.append(inventory)
    body = sshaccess(pubkey, "alice", expiresAt=stamp(clock.now + timedelta(milliseconds=50)))
    kube.add(body)
    inventory.upsert(body)
    kube.wait_until(reason_is(kube, "alice", "Valid"))
    fired = threading.Event()
    refresh = inventory._rebuild

    def watched() -> None:
        refresh()
        if threading.current_thread().name == "expiry-timer":
            fired.set()

    inventory._rebuild = watched  # type: ignore[method-assign]
    assert fired.wait(1.0), "the timer never fired"
    clock.now += timedelta(seconds=1)  # now the wall clock agrees: the grant has expired
    kube.wait_until(reason_is(kube, "alice", "Expired"), timeout=1.0)


def test_a_resync_reconciles_what_the_watch_missed(kube: FakeKube, store: AccessStore, inventory: Inventory,
                                                   pubkey: str) -> None:
    def resync() -> None:
        inventory.replace_all(kube.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])

    for name in ("alice", "bob"):
        kube.add(sshaccess(pubkey, name))
    resync()
    assert names(store.current, pubkey) == ["alice", "bob"]
    kube.wait_until(lambda: reason_is(kube, "alice", "Valid")() and reason_is(kube, "bob", "Valid")())
    # During a watch gap: alice deleted, bob's status overwritten by someone else, carol created.
    kube.remove("shop", "alice")
    kube.add({**sshaccess(pubkey, "bob"), "status": {"keyCount": 7}})
    kube.add(sshaccess(pubkey, "carol"))
    resync()
    assert names(store.current, pubkey) == ["bob", "carol"]
    kube.wait_until(lambda: kube.status_of("shop", "bob").get("keyCount") == 1)
    kube.wait_until(reason_is(kube, "carol", "Valid"))
    assert kube.get("shop", "alice") is None  # no write for the deleted object brought it back


def test_a_status_the_api_server_refused_is_written_again_at_the_resync(
        kube: FakeKube, inventory: Inventory, pubkey: str) -> None:
    kube.add(sshaccess(pubkey, "alice"))
    kube.fail_next(1, api_error(422), verb="patch")  # dropped by the writer: it cannot succeed as is
    inventory.replace_all(kube.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])
    kube.wait_until(lambda: kube.actions_for("patch"))
    assert kube.status_of("shop", "alice") == {}
    inventory.replace_all(kube.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])
    kube.wait_until(reason_is(kube, "alice", "Valid"))
