"""Fuzzing the SSH user name parser (`parse_target`): the user name is the first thing an
unauthenticated client controls. Only TargetError may come out, and whatever is accepted must be
made of Kubernetes names only (no newline, no control character, nothing a URL would reinterpret)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from sshserver.grants.target import MAX_USERNAME, WORKLOAD_KINDS, Target, TargetError, parse_target
from tests.fuzz.settings import FUZZ

_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", re.ASCII)

# Names close to valid ones: the alphabet of Kubernetes names plus the separators and the
# characters that have slipped through name checks elsewhere (newline, NUL, Unicode digits).
_near = st.text(alphabet="abz09-./:\n\x00\u0660Z_ ", max_size=40)
_part = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
_structured = st.builds(
    lambda ns, kind, name, cont, junk: "/".join(p for p in (ns, kind, name) if p) + (f":{cont}" if cont else "") + junk,
    st.one_of(st.none(), _part), st.one_of(st.none(), st.sampled_from(sorted(WORKLOAD_KINDS)), _part),
    _part, st.one_of(st.none(), _part), st.sampled_from(["", "", "", "\n", "\x00", ":", "/", "Ä"]),
)


def _check(username: str) -> None:
    try:
        target = parse_target(username)
    except TargetError as exc:
        assert str(exc) and "\n" not in str(exc).replace("\\n", "")
        return
    assert isinstance(target, Target)
    assert len(username) <= MAX_USERNAME
    for part in (target.namespace, target.name, target.container):
        if part is not None:
            assert _NAME.fullmatch(part), part
    assert target.kind is None or target.kind in WORKLOAD_KINDS.values()
    assert parse_target(str(target)) == target  # what the audit shows names the same target


@FUZZ
@given(st.text(max_size=700))
def test_any_text(username: str) -> None:
    _check(username)


@FUZZ
@given(_near)
def test_near_names(username: str) -> None:
    _check(username)


@FUZZ
@given(_structured)
def test_structured_targets(username: str) -> None:
    _check(username)
