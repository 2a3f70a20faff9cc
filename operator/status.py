"""The status an SSHAccess object should have; computed the same way by every replica, so that
replicas converge on one value instead of overwriting each other."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sshserver.grants.access import Grant, GrantError


def _stamp(moment: datetime) -> str:
    """A Kubernetes Time: RFC 3339 in UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_condition(grant: Grant | None, error: GrantError | None, now: datetime) -> tuple[str, str, str]:
    """(status, reason, message) of the Ready condition."""
    if error is not None:
        return "False", error.reason, str(error)
    assert grant is not None
    if grant.not_before and now < grant.not_before:
        return "False", "NotYetValid", f"valid from {grant.not_before.isoformat()}"
    if grant.expires_at and now >= grant.expires_at:
        return "False", "Expired", f"expired at {grant.expires_at.isoformat()}"
    n = len(grant.keys) + len(grant.authorities)
    return "True", "Valid", f"{n} key{'s' if n != 1 else ''} or CA{'s' if n != 1 else ''} accepted"


def desired_status(body: Mapping[str, Any], grant: Grant | None, error: GrantError | None,
                   now: datetime) -> dict[str, Any]:
    """The whole status the inventory owns (not lastLoginTime, which session events write).
    `now` decides the Ready condition and is its lastTransitionTime when the condition changes."""
    status, reason, message = ready_condition(grant, error, now)
    generation = (body.get("metadata") or {}).get("generation")
    current = body.get("status") or {}
    old = next((c for c in current.get("conditions") or [] if c.get("type") == "Ready"), {})
    # The transition time moves only when the condition's status does.
    since = old.get("lastTransitionTime") if old.get("status") == status else None
    return {
        "observedGeneration": generation,
        "fingerprints": [k.fingerprint for k in grant.keys] if grant else [],
        "keyCount": (len(grant.keys) + len(grant.authorities)) if grant else 0,
        "conditions": [{
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message[:1024],
            "observedGeneration": generation,
            "lastTransitionTime": since or _stamp(now),
        }],
    }


def needs_patch(body: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether some field of `desired` differs from the object's status (others are left alone)."""
    current = body.get("status") or {}
    return any(current.get(k) != v for k, v in desired.items())
