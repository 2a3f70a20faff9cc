"""The status the inventory wants for a grant: the Ready condition of valid, invalid, expired and
not-yet-valid grants, and when lastTransitionTime moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sshoperator.status import desired_status, needs_patch, ready_condition

from sshserver.grants.access import GrantError, grant_from_object

from .conftest import sshaccess, stamp

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def ready(status: dict[str, Any]) -> dict[str, Any]:
    [condition] = status["conditions"]
    assert condition["type"] == "Ready"
    return condition


def test_a_valid_grant_is_ready_with_its_fingerprints(pubkey: str, other_pubkey: str) -> None:
    body = sshaccess(pubkey, publicKeys=[pubkey, other_pubkey])
    grant = grant_from_object(body)
    status = desired_status(body, grant, None, NOW)
    assert ready(status) == {"type": "Ready", "status": "True", "reason": "Valid",
                             "message": "2 keys or CAs accepted", "observedGeneration": 1,
                             "lastTransitionTime": "2030-01-02T03:04:05Z"}
    assert status["fingerprints"] == [k.fingerprint for k in grant.keys] and len(status["fingerprints"]) == 2
    assert (status["keyCount"], status["observedGeneration"]) == (2, 1)
    assert ready_condition(grant_from_object(sshaccess(pubkey)), None, NOW)[2] == "1 key or CA accepted"


def test_an_invalid_object_is_not_ready_and_says_why(pubkey: str) -> None:
    body = sshaccess(pubkey, pods="x")
    error = GrantError("InvalidSpec", "spec.pods must be a mapping" + "!" * 2000)
    status = desired_status(body, None, error, NOW)
    condition = ready(status)
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")
    assert condition["message"].startswith("spec.pods must be a mapping") and len(condition["message"]) == 1024
    assert (status["fingerprints"], status["keyCount"]) == ([], 0)


@pytest.mark.parametrize(("expires", "reason"), [(NOW + SECOND, "Valid"), (NOW, "Expired"), (NOW - SECOND, "Expired")])
def test_a_grant_is_expired_from_its_expires_at_on(pubkey: str, expires: datetime, reason: str) -> None:
    grant = grant_from_object(sshaccess(pubkey, expiresAt=stamp(expires)))
    status, got, message = ready_condition(grant, None, NOW)
    assert (status, got) == ("True" if reason == "Valid" else "False", reason)
    if reason == "Expired":
        assert message == f"expired at {expires.isoformat()}"


@pytest.mark.parametrize(("start", "reason"), [(NOW + SECOND, "NotYetValid"), (NOW, "Valid"), (NOW - SECOND, "Valid")])
def test_a_grant_is_not_yet_valid_before_its_not_before(pubkey: str, start: datetime, reason: str) -> None:
    grant = grant_from_object(sshaccess(pubkey, notBefore=stamp(start), expiresAt=stamp(NOW + 60 * SECOND)))
    status, got, message = ready_condition(grant, None, NOW)
    assert (status, got) == ("False" if reason == "NotYetValid" else "True", reason)
    if reason == "NotYetValid":
        assert message == f"valid from {start.isoformat()}"


def test_an_error_wins_over_the_times(pubkey: str) -> None:
    error = GrantError("NoKeys", "spec.publicKeys and spec.certificateAuthorities are both empty")
    assert ready_condition(None, error, NOW) == ("False", "NoKeys", str(error))


def test_the_transition_time_moves_only_when_the_condition_status_does(pubkey: str) -> None:
    body = sshaccess(pubkey, expiresAt=stamp(NOW + SECOND))
    grant = grant_from_object(body)
    body["status"] = desired_status(body, grant, None, NOW - 60 * SECOND)
    first = ready(body["status"])["lastTransitionTime"]
    assert ready(desired_status(body, grant, None, NOW))["lastTransitionTime"] == first  # still True
    expired = desired_status(body, grant, None, NOW + 2 * SECOND)
    assert ready(expired)["reason"] == "Expired"
    assert ready(expired)["lastTransitionTime"] == stamp(NOW + 2 * SECOND)[:19] + "Z"
    # True -> False because invalid, then False -> False because expired: the False time is kept.
    body["status"] = desired_status(body, None, GrantError("InvalidSpec", "x"), NOW)
    assert ready(desired_status(body, grant, None, NOW + 9 * SECOND))["lastTransitionTime"] == "2030-01-02T03:04:05Z"


def test_needs_patch_compares_only_the_fields_it_owns(pubkey: str) -> None:
    body = sshaccess(pubkey)
    grant = grant_from_object(body)
    desired = desired_status(body, grant, None, NOW)
    assert needs_patch(body, desired)
    body["status"] = {**desired, "lastLoginTime": "2030-01-01T00:00:00Z"}  # written by session events
    assert not needs_patch(body, desired_status(body, grant, None, NOW + 60 * SECOND))
    body["metadata"]["generation"] = 2  # an edit: observedGeneration must follow
    assert needs_patch(body, desired_status(body, grant, None, NOW))
