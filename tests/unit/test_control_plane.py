"""The control plane's own defects, with doubles for the API: failed status writes are retried
until written, `Expired` is written when a grant expires, and the enforcer counts a session it
moves onto another grant against that grant's maxSessions."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from sshoperator.inventory import Inventory
from sshoperator.writer import ClusterWriter, ObjectEvent, StatusPatch

from sshserver.grants.access import AccessStore


def wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


class FlakyApi:
    """Fails the first `failures` calls (a connection error or an HTTP status), then succeeds."""

    def __init__(self, failures: int, status: int | None = None) -> None:
        self.failures, self.status = failures, status
        self.calls = 0
        self.written: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            if self.status is None:
                raise ConnectionRefusedError("connection refused")
            raise ApiException(status=self.status, reason="nope")

    def patch_namespaced_custom_object_status(self, group: str, version: str, ns: str, plural: str,
                                              name: str, body: dict[str, Any], **_: Any) -> None:
        self._maybe_fail()
        self.written.append((ns, name, body["status"]))

    def create_namespaced_event(self, ns: str, body: dict[str, Any]) -> None:
        self._maybe_fail()
        self.events.append(body)


def writer_for(api: FlakyApi) -> ClusterWriter:
    kube = SimpleNamespace(custom=api, core=api)
    w = ClusterWriter(kube, retry_base=0.01, retry_cap=0.05)  # type: ignore[arg-type]
    w.start()
    return w


def test_a_failed_status_write_is_retried_until_written() -> None:
    api = FlakyApi(failures=3)
    w = writer_for(api)
    w.patch_status(StatusPatch("shop", "g", "u1", {"keyCount": 1}))
    wait_for(lambda: api.written)
    w.stop()
    assert api.written == [("shop", "g", {"keyCount": 1})]
    assert api.calls == 4


def test_patches_waiting_for_a_retry_are_merged_not_piled_up() -> None:
    api = FlakyApi(failures=2)
    w = ClusterWriter(SimpleNamespace(custom=api, core=api), retry_base=0.2, retry_cap=0.2)  # type: ignore[arg-type]
    w.start()
    w.patch_status(StatusPatch("shop", "g", "u1", {"keyCount": 1, "lastLoginTime": "a"}))
    wait_for(lambda: api.calls >= 1)
    w.patch_status(StatusPatch("shop", "g", "u1", {"keyCount": 2}))  # fails too: merged
    wait_for(lambda: api.written, timeout=5)
    time.sleep(0.5)  # a superseded retry must not write the older fields afterwards
    w.stop()
    assert api.written == [("shop", "g", {"keyCount": 2, "lastLoginTime": "a"})]


@pytest.mark.parametrize("status", [404, 422])
def test_writes_that_cannot_succeed_are_not_retried(status: int) -> None:
    api = FlakyApi(failures=100, status=status)
    w = writer_for(api)
    w.patch_status(StatusPatch("shop", "g", "u1", {"keyCount": 1}))
    wait_for(lambda: api.calls >= 1)
    time.sleep(0.2)
    w.stop()
    assert api.calls == 1 and w.pending_retries == 0


def test_events_are_retried_a_bounded_number_of_times() -> None:
    api = FlakyApi(failures=100, status=503)
    w = writer_for(api)
    w.emit(ObjectEvent("shop", "g", "u1", "SessionStarted", "x"))
    wait_for(lambda: api.calls >= 5)
    time.sleep(0.3)
    w.stop()
    assert api.calls == 5 and not api.events


@pytest.fixture(scope="module")
def pubkey(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("k") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return Path(f"{path}.pub").read_text().strip()


def sshaccess(pubkey: str, name: str, uid: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name, "uid": uid, "generation": 1},
            "spec": {"user": name, "publicKeys": [pubkey], "pods": {"selector": {"matchLabels": {"app": "web"}}},
                     **spec}}


@dataclass
class RecordingWriter:
    patches: list[StatusPatch] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def patch_status(self, patch: StatusPatch) -> None:
        with self.lock:
            self.patches.append(patch)

    def emit(self, ev: ObjectEvent) -> None:
        pass

    def reasons(self) -> list[str]:
        with self.lock:
            return [c["reason"] for p in self.patches for c in p.status.get("conditions", [])]


def test_expired_is_written_when_the_grant_expires_not_at_the_next_resync(pubkey: str) -> None:
    writer = RecordingWriter()
    inventory = Inventory(AccessStore(), writer)  # type: ignore[arg-type]
    expires = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    inventory.replace_all([sshaccess(pubkey, "g", "u1", expiresAt=expires)])
    assert writer.reasons() == ["Valid"]
    wait_for(lambda: "Expired" in writer.reasons(), timeout=4)  # nobody calls refresh() by hand
    inventory.close()


def test_not_before_turns_ready_when_it_comes(pubkey: str) -> None:
    writer = RecordingWriter()
    inventory = Inventory(AccessStore(), writer)  # type: ignore[arg-type]
    start = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    inventory.replace_all([sshaccess(pubkey, "g", "u1", notBefore=start)])
    assert writer.reasons() == ["NotYetValid"]
    wait_for(lambda: writer.reasons()[-1:] == ["Valid"], timeout=4)
    inventory.close()
