"""The table `ssh ls@gateway` prints: one row per pod and grant that selects it, with the
containers the grant lets the key enter, what it allows and until when. Pure: the pods come in
from the resolver, the text goes out to the listing session (listing.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sshserver.grants.access import Grant

HEADER = ("TARGET", "CONTAINERS", "ALLOWS", "UNTIL", "GRANT")


@dataclass(frozen=True)
class Row:
    target: str  # namespace/pod: what the user name takes
    containers: str
    allows: str
    until: str
    grant: str

    @property
    def cells(self) -> tuple[str, str, str, str, str]:
        return (self.target, self.containers, self.allows, self.until, self.grant)


def _until(grant: Grant) -> str:
    if grant.expires_at is None:
        return "-"
    return grant.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def row(grant: Grant, pod: Any) -> Row | None:
    """The row of one pod the grant selects; None when the grant lets the key do nothing there
    (its container allowlist names none of the pod's containers, and it forwards no port)."""
    names = [c.name for c in (pod.spec.containers or [])]
    allowed = [n for n in names if grant.containers is None or n in grant.containers]
    if not allowed and not grant.allow.port_forward:
        return None
    return Row(f"{pod.metadata.namespace or grant.namespace}/{pod.metadata.name}", ",".join(allowed) or "-",
               grant.allow.summary(), _until(grant), grant.ref)


def rows(selected: Iterable[tuple[Grant, Sequence[Any]]]) -> list[Row]:
    """Every grant's rows, sorted by target, then grant."""
    found = [r for grant, pods in selected for pod in pods if (r := row(grant, pod)) is not None]
    return sorted(found, key=lambda r: (r.target, r.grant))


def render(table: Sequence[Row]) -> list[str]:
    """The header and the rows, in columns two spaces apart (as kubectl prints), without line ends."""
    lines = [HEADER, *(r.cells for r in table)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]


def nothing_found(grants: int) -> str:
    """The one line for a key whose grants select no running pod."""
    return f"no running pods match your grants ({grants} grant{'' if grants == 1 else 's'} in force)"
