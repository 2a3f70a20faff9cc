"""ClusterWriter against the fake API: a failed write is retried until it lands, patches of one
object waiting for a retry are merged, a gone object stops the retries, Events are posted, no
call can hold the writer thread for ever, and the thread stops when told."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sshoperator import GROUP, KIND, VERSION
from sshoperator.writer import ClusterWriter, ObjectEvent, StatusPatch

from sshserver.kube.client import TRANSPORT_ERRORS
from tests.support.fakekube import FakeKube, api_error, connection_refused, connection_reset

from .conftest import sshaccess

MakeWriter = Callable[..., ClusterWriter]


@pytest.fixture
def kube(kube: FakeKube, pubkey: str) -> FakeKube:
    kube.add(sshaccess(pubkey, "g", "u1"))
    return kube


def patch(**status: Any) -> StatusPatch:
    return StatusPatch("shop", "g", "u1", status)


def test_the_fakes_connection_errors_are_what_the_client_treats_as_transport_errors() -> None:
    assert isinstance(connection_refused(), TRANSPORT_ERRORS) and isinstance(connection_reset(), TRANSPORT_ERRORS)


@pytest.mark.parametrize("error", [
    connection_refused(), connection_reset(), ConnectionRefusedError(111, "refused"),
    api_error(409), api_error(429), api_error(500), api_error(503),
], ids=["refused", "reset", "oserror", "409", "429", "500", "503"])
def test_a_failed_status_write_is_retried_until_written(kube: FakeKube, make_writer: MakeWriter,
                                                        error: BaseException) -> None:
    kube.fail_next(3, error, verb="patch")
    writer = make_writer()
    writer.patch_status(patch(keyCount=1))
    kube.wait_until(lambda: kube.status_of("shop", "g"))
    assert kube.status_of("shop", "g") == {"keyCount": 1}
    assert len(kube.actions_for("patch")) == 4 and writer.patches == 1


def test_a_write_that_keeps_failing_is_neither_written_nor_given_up(kube: FakeKube, make_writer: MakeWriter) -> None:
    kube.fail_next(1000, api_error(503), verb="patch")
    writer = make_writer()
    writer.patch_status(patch(keyCount=1))
    kube.wait_until(lambda: len(kube.actions_for("patch")) >= 5)
    assert writer.patches == 0 and kube.status_of("shop", "g") == {}
    kube.wait_until(lambda: writer.pending_retries >= 1)  # (not while the thread is inside a call)
    kube.heal()  # the API server is back: the write that failed five times lands
    kube.wait_until(lambda: kube.status_of("shop", "g") == {"keyCount": 1})


def test_patches_waiting_for_a_retry_are_merged_and_the_last_state_wins(
        kube: FakeKube, make_writer: MakeWriter) -> None:
    kube.fail_next(1000, api_error(503), verb="patch")
    writer = make_writer(retry_base=0.05, retry_cap=0.05)
    writer.patch_status(patch(keyCount=1, lastLoginTime="a"))
    kube.wait_until(lambda: kube.actions_for("patch"))
    writer.patch_status(patch(keyCount=2))  # fails too, and waits with the first one's fields merged in
    writer.patch_status(patch(observedGeneration=3))
    kube.wait_until(lambda: len(kube.actions_for("patch")) >= 3)
    kube.heal()
    kube.wait_until(lambda: writer.patches)
    time.sleep(0.15)  # a superseded retry, if any, would write the older fields now
    assert kube.status_of("shop", "g") == {"keyCount": 2, "lastLoginTime": "a", "observedGeneration": 3}
    assert writer.patches == 1, "one merged write, not one per patch"
    assert kube.actions_for("patch")[-1].body == {"status": {"keyCount": 2, "lastLoginTime": "a",
                                                             "observedGeneration": 3}}


def test_patches_of_different_objects_are_not_merged(kube: FakeKube, make_writer: MakeWriter, pubkey: str) -> None:
    kube.add(sshaccess(pubkey, "h", "u2"))
    kube.fail_next(2, api_error(500), verb="patch")
    writer = make_writer()
    writer.patch_status(patch(keyCount=1))
    writer.patch_status(StatusPatch("shop", "h", "u2", {"keyCount": 2}))
    kube.wait_until(lambda: writer.patches == 2)
    assert kube.status_of("shop", "g") == {"keyCount": 1} and kube.status_of("shop", "h") == {"keyCount": 2}


def test_a_gone_object_stops_the_retries(kube: FakeKube, make_writer: MakeWriter) -> None:
    kube.fail_next(1, api_error(503), verb="patch")
    writer = make_writer(retry_base=0.05)
    writer.patch_status(patch(keyCount=1))
    kube.wait_until(lambda: kube.actions_for("patch"))
    kube.remove("shop", "g")  # deleted while its write waits for a retry: the retry gets 404
    kube.wait_until(lambda: len(kube.actions_for("patch")) == 2)
    time.sleep(0.12)  # more than two retry periods
    assert len(kube.actions_for("patch")) == 2 and writer.pending_retries == 0 and writer.patches == 0


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_writes_that_cannot_succeed_are_not_retried(kube: FakeKube, make_writer: MakeWriter, status: int) -> None:
    kube.fail_next(1000, api_error(status), verb="patch")
    writer = make_writer()
    writer.patch_status(patch(keyCount=1))
    kube.wait_until(lambda: kube.actions_for("patch"))
    time.sleep(0.06)
    assert len(kube.actions_for("patch")) == 1 and writer.pending_retries == 0


def test_a_status_patch_is_a_merge_patch_of_the_status_subresource(kube: FakeKube, make_writer: MakeWriter) -> None:
    writer = make_writer()
    writer.patch_status(patch(lastLoginTime="t"))
    writer.patch_status(patch(keyCount=1))
    kube.wait_until(lambda: writer.patches == 2)
    assert kube.status_of("shop", "g") == {"lastLoginTime": "t", "keyCount": 1}  # the server merged them
    first = kube.actions_for("patch")[0]
    assert (first.subresource, first.options.get("_content_type")) == ("status", "application/merge-patch+json")


def test_events_are_posted_about_their_object(kube: FakeKube, make_writer: MakeWriter) -> None:
    kube.fail_next(1, connection_refused(), verb="create")
    writer = make_writer(component="podssh-test")
    writer.emit(ObjectEvent("shop", "g", "u1", "InvalidSpec", "spec.pods is missing", warning=True))
    writer.emit(ObjectEvent("shop", "g", "u1", "SessionStarted", "x" * 5000))
    kube.wait_until(lambda: len(kube.events()) == 2)
    warning, normal = sorted(kube.events(), key=lambda e: e["reason"])
    assert warning["involvedObject"] == {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": "g",
                                         "namespace": "shop", "uid": "u1"}
    assert (warning["reason"], warning["type"], warning["message"]) == ("InvalidSpec", "Warning",
                                                                        "spec.pods is missing")
    assert warning["source"] == {"component": "podssh-test"} and warning["metadata"]["namespace"] == "shop"
    assert (normal["reason"], normal["type"], len(normal["message"])) == ("SessionStarted", "Normal", 1024)
    assert warning["metadata"]["name"] != normal["metadata"]["name"]


def test_events_are_retried_a_bounded_number_of_times(kube: FakeKube, make_writer: MakeWriter) -> None:
    kube.fail_next(1000, api_error(503), verb="create")
    writer = make_writer(retry_base=0.005, retry_cap=0.01)
    writer.emit(ObjectEvent("shop", "g", "u1", "SessionStarted", "x"))
    kube.wait_until(lambda: len(kube.actions_for("create")) >= 5)
    time.sleep(0.05)  # five retry periods
    assert len(kube.actions_for("create")) == 5 and not kube.events() and writer.pending_retries == 0


def test_an_api_server_that_never_answers_does_not_hold_the_writer(kube: FakeKube, make_writer: MakeWriter) -> None:
    """Every call has a request timeout: without one a partitioned API server (no answer, no
    reset) blocks the only writer thread, and with it every later status and Event, for ever."""
    kube.hang_next(1, verb="patch")
    writer = make_writer(request_timeout=0.05)
    writer.patch_status(patch(keyCount=1))
    writer.emit(ObjectEvent("shop", "g", "u1", "SessionStarted", "x"))
    kube.wait_until(lambda: kube.status_of("shop", "g") == {"keyCount": 1} and kube.events(), timeout=1.5)
    assert {a.options.get("_request_timeout") for a in kube.actions} == {0.05}


def test_stop_ends_the_thread_after_the_writes_queued_before_it(kube: FakeKube) -> None:
    writer = ClusterWriter(kube, retry_base=0.01, retry_cap=0.05, request_timeout=1.0)  # type: ignore[arg-type]
    writer.patch_status(patch(keyCount=1))  # queued before the thread even runs
    writer.start()
    writer.stop()
    assert not any(t.name == "cluster-writer" and t.is_alive() for t in threading.enumerate())
    assert kube.status_of("shop", "g") == {"keyCount": 1}


def test_stop_does_not_wait_for_pending_retries(kube: FakeKube) -> None:
    kube.fail_next(1000, api_error(503))
    writer = ClusterWriter(kube, retry_base=10.0, retry_cap=10.0, request_timeout=1.0)  # type: ignore[arg-type]
    writer.start()
    writer.patch_status(patch(keyCount=1))
    kube.wait_until(lambda: writer.pending_retries == 1)
    started = time.monotonic()
    writer.stop()
    assert time.monotonic() - started < 0.5
    assert not any(t.name == "cluster-writer" and t.is_alive() for t in threading.enumerate())
