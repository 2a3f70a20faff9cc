"""What the SSHSession objects, the replica Leases and the pod Events look like: pure functions,
no API calls, so that the writer (sessionobjects.py) and the tests agree on one shape.

Ownership (why the labels): every SSHSession carries `podssh.dev/replica`, the replica that
serves it. Every replica holds a Lease `podssh-gateway-<replica>` (label `podssh.dev/gateway-lease`)
in its own namespace and renews it every few seconds. A replica whose Lease expired is dead:
any living replica deletes its objects (marked `podssh.dev/reaped` first, so that the dead
replica's deletion handler, should it come back, does not read the deletion as a user's) and
then its Lease. A replica writes its Lease before its first object, so an object's replica
always had a Lease. Objects also carry `podssh.dev/lease-namespace`, where their replica keeps
its Lease: a replica judges only the objects of its own installation (same namespace), never
those of another gateway whose Leases it cannot see.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sshserver.grants.text import printable
from sshserver.observability.observer import SessionCounters, SessionOutcome, SessionRecord

from . import GROUP, SESSION_KIND, VERSION

REPLICA_LABEL = "podssh.dev/replica"
SESSION_LABEL = "podssh.dev/session-id"
LEASE_LABEL = "podssh.dev/gateway-lease"
LEASE_NAMESPACE_LABEL = "podssh.dev/lease-namespace"  # where the replica's Lease lives
REAPED_ANNOTATION = "podssh.dev/reaped"  # deleted by the cleanup of a dead replica, not by a user
LEASE_PREFIX = "podssh-gateway-"
COMMAND_MAX = 60  # characters of the command shown in `kubectl get sshsessions`


def dns_label(text: str, limit: int = 40, fallback: str = "x") -> str:
    """Lower-case letters, digits and dashes, no dash at either end: fits a name and a label value."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower())[:limit].strip("-")
    return cleaned or fallback


def object_name(record: SessionRecord) -> str:
    """`<user>-<session id>`: readable in a listing, unique (the id is random per session)."""
    return f"{dns_label(record.user, 40, 'session')}-{record.session_id}"


def lease_name(replica: str) -> str:
    return LEASE_PREFIX + replica


def shorten(command: str | None, limit: int = COMMAND_MAX) -> str | None:
    """One printable line of at most `limit` characters (a command may hold newlines, escapes)."""
    if command is None:
        return None
    line = " ".join(printable(command).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def rfc3339(epoch: float, micro: bool = False) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def session_status(counters: SessionCounters) -> dict[str, Any]:
    return {"bytesIn": counters.bytes_in, "bytesOut": counters.bytes_out,
            "lastActivityTime": rfc3339(counters.last_activity)}


def session_object(record: SessionRecord, replica: str, counters: SessionCounters | None,
                   lease_namespace: str) -> dict[str, Any]:
    """The SSHSession as created (spec never changes afterwards; status is patched)."""
    spec: dict[str, Any] = {
        "user": record.user, "grant": record.grant_name, "grantNamespace": record.grant_namespace,
        "pod": record.pod, "kind": record.kind, "replica": replica, "sessionID": record.session_id,
        "peer": record.peer, "startedAt": rfc3339(record.started_at),
    }
    if record.container:
        spec["container"] = record.container
    command = shorten(record.command)
    if command:
        spec["command"] = command
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": SESSION_KIND,
        "metadata": {"name": object_name(record), "namespace": record.namespace,
                     "labels": {REPLICA_LABEL: replica, SESSION_LABEL: record.session_id,
                                LEASE_NAMESPACE_LABEL: lease_namespace}},
        "spec": spec,
    }
    if counters is not None:
        body["status"] = session_status(counters)
    return body


def lease_body(replica: str, namespace: str, duration_s: int, now: float) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease_name(replica), "namespace": namespace,
                     "labels": {LEASE_LABEL: "true", REPLICA_LABEL: replica}},
        "spec": {"holderIdentity": replica, "leaseDurationSeconds": duration_s,
                 "renewTime": rfc3339(now, micro=True)},
    }


def lease_alive(lease: dict[str, Any], now: float, grace_s: float = 5.0) -> bool:
    """Renewed within its duration (plus a grace for clock skew between replicas)."""
    spec = lease.get("spec") or {}
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    if renewed is None:
        renewed = parse_time((lease.get("metadata") or {}).get("creationTimestamp"))
    duration = spec.get("leaseDurationSeconds") or 0
    return renewed is not None and now <= renewed + duration + grace_s


def lease_replica(lease: dict[str, Any]) -> str | None:
    labels = (lease.get("metadata") or {}).get("labels") or {}
    return labels.get(REPLICA_LABEL) or (lease.get("spec") or {}).get("holderIdentity")


def started_message(r: SessionRecord) -> str:
    """The same for every session of one user, kind and grant in one pod: Events aggregate on it."""
    return f"{r.user} started a {r.kind} session (grant {r.grant_namespace}/{r.grant_name}) through podssh"


def ended_message(r: SessionRecord, o: SessionOutcome, name: str) -> str:
    if o.reason == "deleted":
        return f"{r.user}'s {r.kind} session was ended through the Kubernetes API (sshsession {name} deleted)"
    return f"{r.user}'s {r.kind} session ended ({o.reason})"
