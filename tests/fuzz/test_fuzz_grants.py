"""Fuzzing everything a grantor writes: SSHAccess objects (shaped as the CRD allows, and of any
JSON shape), label selectors, durations and times, authorized_keys lines and key blobs.

The boundary: the grant parser raises GrantError and nothing else (the inventory and
`podssh serve --access` rely on it to isolate one bad object), parse_objects never raises, the
selector/duration/time parsers raise ValueError only, the key parser InvalidKeyError only. The
harnesses call `_parse_grant`, the parser without its catch-all safety net, so that a gap in the
explicit checks fails here instead of being hidden."""

from __future__ import annotations

import base64
import contextlib
import math
import struct
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from sshserver.grants.access import (
    Grant,
    GrantError,
    _parse_grant,
    grant_from_object,
    parse_objects,
    snapshot_from_objects,
)
from sshserver.grants.durations import MAX_DURATION, parse_duration, parse_time
from sshserver.grants.keys import KEY_TYPES, InvalidKeyError, PublicKey, parse_public_key
from sshserver.grants.labelselector import LabelSelector, check_label_key, check_label_value
from tests.fuzz.settings import FUZZ


def _openssh(key: Any) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _s(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


_COMPRESSED = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
GOOD_KEYS = [
    _openssh(ed25519.Ed25519PrivateKey.generate().public_key()) + " alice@laptop",
    _openssh(ec.generate_private_key(ec.SECP256R1()).public_key()),
    _openssh(ec.generate_private_key(ec.SECP384R1()).public_key()),
    _openssh(ec.generate_private_key(ec.SECP521R1()).public_key()),
    _openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()),
]
# Lines the CRD's pattern lets through but that are no usable key.
BAD_KEYS = [
    "ecdsa-sha2-nistp256 " + base64.b64encode(_s(b"ecdsa-sha2-nistp256") + _s(b"nistp256") + _s(_COMPRESSED)).decode(),
    _openssh(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()),
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMq",
    "ssh-rsa " + base64.b64encode(_s(b"ssh-rsa") + _s(b"\x01" * 3) + _s(b"")).decode(),
    "ecdsa-sha2-nistp256 " + base64.b64encode(_s(b"ecdsa-sha2-nistp256") + _s(b"nistp384") + _s(b"\x04")).decode(),
]

# --- building blocks ---------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "false", "true", "0", "yes", "\r\n", "a\nb", "a\x00", "a\x85", "9" * 400, "-1",
                     "system:masters", "x" * 300, "é", "\u2028", "1e999", "nan", "inf"]),
)
label_name = st.from_regex(r"[a-z0-9]([-a-z0-9_.]{0,8}[a-z0-9])?", fullmatch=True)
label_key = st.one_of(label_name, st.builds(lambda p, n: f"{p}/{n}", st.sampled_from(["app.kubernetes.io", "x.y"]),
                                            label_name), hostile_text)
label_value = st.one_of(label_name, st.just(""), hostile_text)
durations = st.one_of(
    st.from_regex(r"([0-9]{1,7}h)?([0-9]{1,7}m)?([0-9]{1,7}s)?", fullmatch=True),
    st.integers(min_value=-10, max_value=10**12), st.floats(), st.just("9" * 400 + "s"), hostile_text, json_values,
)
times = st.one_of(
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-31T18:00:00Z",
                     "2026-01-31T18:00:00z", "2026-13-01T00:00:00Z", "", "yesterday"]),
    st.datetimes(), hostile_text, json_values,
)


def maybe(strategy: st.SearchStrategy[Any], other: st.SearchStrategy[Any] = json_values) -> st.SearchStrategy[Any]:
    """Mostly well-typed values, sometimes anything at all."""
    return st.one_of(strategy, strategy, strategy, other)


selectors = st.one_of(
    st.fixed_dictionaries({}, optional={
        "matchLabels": maybe(st.dictionaries(label_key, label_value, max_size=4)),
        "matchExpressions": maybe(st.lists(st.fixed_dictionaries(
            {"key": maybe(label_key)},
            optional={"operator": maybe(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "in", ""])),
                      "values": maybe(st.lists(label_value, max_size=4))}), max_size=4)),
    }),
    json_values,
)

# Objects as the CRD shapes them, with valid-looking values everywhere...
good_selectors = st.one_of(
    st.fixed_dictionaries({"matchLabels": st.dictionaries(label_name, label_name, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"matchExpressions": st.lists(st.one_of(
        st.fixed_dictionaries({"key": label_name, "operator": st.sampled_from(["In", "NotIn"]),
                               "values": st.lists(label_name, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"key": label_name, "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
    ), min_size=1, max_size=3)}),
)
rfc3339 = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"))
good_durations = st.from_regex(r"([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?", fullmatch=True)
specs = st.fixed_dictionaries(
    {"user": st.one_of(st.sampled_from(["alice", "system:serviceaccount:a:b"]), st.text(min_size=1, max_size=20)),
     "publicKeys": st.lists(st.sampled_from(GOOD_KEYS), min_size=1, max_size=3),
     "pods": st.fixed_dictionaries({"selector": good_selectors},
                                   optional={"containers": st.lists(label_name, min_size=1, max_size=3)})},
    optional={
        "certificateAuthorities": st.lists(st.sampled_from(GOOD_KEYS), max_size=2),
        "allow": st.fixed_dictionaries({}, optional={
            "shell": st.booleans(), "exec": st.booleans(), "sftp": st.booleans(),
            "portForward": st.lists(st.integers(min_value=1, max_value=65535), max_size=4)}),
        "env": st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), max_size=3),
        "shellCommand": st.lists(st.text(max_size=10), min_size=1, max_size=3),
        "groups": st.lists(st.text(min_size=1, max_size=10), max_size=3),
        "notBefore": rfc3339,
        "expiresAt": rfc3339,
        "limits": st.fixed_dictionaries({}, optional={
            "maxSessions": st.integers(min_value=1, max_value=1000),
            "idleTimeout": good_durations, "maxSessionDuration": good_durations}),
    },
)
metadata = st.fixed_dictionaries(
    {"namespace": st.sampled_from(["shop", "a" * 63]), "name": st.sampled_from(["alice-web", "a.b"])},
    optional={"uid": st.uuids().map(str)},
)
good_objects = st.fixed_dictionaries({"apiVersion": st.just("podssh.dev/v1alpha1"), "kind": st.just("SSHAccess"),
                                      "metadata": metadata, "spec": specs})

# ... then up to three fields, anywhere, replaced by something hostile or of the wrong shape.
FIELDS = [
    ("metadata",), ("metadata", "namespace"), ("metadata", "name"), ("metadata", "uid"), ("spec",),
    ("spec", "user"), ("spec", "groups"), ("spec", "groups", 0), ("spec", "publicKeys"), ("spec", "publicKeys", 0),
    ("spec", "certificateAuthorities"), ("spec", "pods"), ("spec", "pods", "selector"),
    ("spec", "pods", "selector", "matchLabels"), ("spec", "pods", "selector", "matchExpressions"),
    ("spec", "pods", "selector", "matchExpressions", 0, "values"), ("spec", "pods", "containers"),
    ("spec", "pods", "containers", 0), ("spec", "allow"), ("spec", "allow", "shell"), ("spec", "allow", "exec"),
    ("spec", "allow", "sftp"), ("spec", "allow", "portForward"), ("spec", "env"), ("spec", "shellCommand"),
    ("spec", "notBefore"), ("spec", "expiresAt"), ("spec", "limits"), ("spec", "limits", "maxSessions"),
    ("spec", "limits", "idleTimeout"), ("spec", "limits", "maxSessionDuration"),
]
hostile_values = st.one_of(
    json_values, hostile_text, st.sampled_from(BAD_KEYS), durations, times, selectors,
    st.lists(st.one_of(hostile_text, st.sampled_from(BAD_KEYS)), max_size=3),
    st.sampled_from([[], {}, [[]], 10**400, -(10**400), float("inf"), float("nan"), True, False, None]),
)


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        if isinstance(obj, dict):
            obj = obj.setdefault(step, {})
        elif isinstance(obj, list) and isinstance(step, int) and step < len(obj):
            obj = obj[step]
        else:
            return
    last = path[-1]
    if isinstance(obj, dict) or (isinstance(obj, list) and isinstance(last, int) and last < len(obj)):
        obj[last] = value


@st.composite
def crd_objects(draw: st.DrawFn) -> dict[str, Any]:
    obj = draw(good_objects)
    for path in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        _replace(obj, path, draw(hostile_values))
    return obj


any_objects = st.one_of(json_values, st.dictionaries(st.sampled_from(["metadata", "spec", "status"]), json_values))


def _parse_only_grant_error(obj: Any) -> Grant | None:
    try:
        grant = _parse_grant(obj)
    except GrantError as exc:
        assert exc.reason in ("InvalidSpec", "InvalidKey", "NoKeys"), exc.reason
        assert str(exc)
        return None
    assert isinstance(grant, Grant)
    # What a valid grant holds is what the gateway can use as is.
    assert grant.selector.requirements, "an empty selector covers every pod"
    assert grant.containers is None or grant.containers
    assert not any(c in grant.user for c in "\r\n\x00")
    assert all(not any(c in g for c in "\r\n\x00") for g in grant.groups)
    for limit in (grant.limits.idle_timeout, grant.limits.max_session_duration):
        assert limit is None or (math.isfinite(limit) and 0 < limit <= MAX_DURATION)
    assert grant.limits.max_sessions is None or type(grant.limits.max_sessions) is int
    assert all(type(v) is bool for v in (grant.allow.shell, grant.allow.exec, grant.allow.sftp))
    if grant.not_before and grant.expires_at:
        assert grant.expires_at > grant.not_before
    grant.active_at(datetime.now(UTC))
    return grant


# --- SSHAccess objects -----------------------------------------------------------------------------

@FUZZ
@given(crd_objects())
def test_crd_shaped_objects(obj: dict[str, Any]) -> None:
    _parse_only_grant_error(obj)


@FUZZ
@given(any_objects)
def test_objects_of_any_shape(obj: Any) -> None:
    _parse_only_grant_error(obj)
    with contextlib.suppress(GrantError):
        grant_from_object(obj)


@FUZZ
@given(st.lists(st.one_of(crd_objects(), any_objects), max_size=5))
def test_parse_objects_never_raises(objects: list[Any]) -> None:
    parsed = parse_objects(objects)
    assert len(parsed) == len(objects)
    assert all((p.grant is None) != (p.error is None) for p in parsed)
    snapshot, _errors = snapshot_from_objects(objects)
    assert len(snapshot.grants) == sum(p.grant is not None for p in parsed)


# --- label selectors -----------------------------------------------------------------------------

@FUZZ
@given(selectors, st.dictionaries(label_name, label_name, max_size=4))
def test_label_selectors(spec: Any, labels: dict[str, str]) -> None:
    try:
        selector = LabelSelector.from_dict(spec, max_terms=32)
    except ValueError:
        return
    for r in selector.requirements:
        check_label_key(r.key)
        for v in r.values:
            check_label_value(v)
    assert isinstance(selector.matches(labels), bool)
    str(selector)


# --- durations and times -----------------------------------------------------------------------------

@FUZZ
@given(durations)
def test_durations(value: Any) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert isinstance(seconds, float) and math.isfinite(seconds) and 0 < seconds <= MAX_DURATION


@FUZZ
@given(times, times)
def test_times(a: Any, b: Any) -> None:
    try:
        first, second = parse_time(a), parse_time(b)
    except ValueError:
        return
    assert first.utcoffset() is not None and first.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert (first < second) or (first >= second)  # comparing never overflows


# --- authorized_keys lines and key blobs ---------------------------------------------------------------

def _only_invalid_key(line: Any) -> PublicKey | None:
    try:
        key = parse_public_key(line)
    except InvalidKeyError as exc:
        assert str(exc)
        return None
    assert key.key_type in KEY_TYPES
    assert parse_public_key(key.line()).blob == key.blob
    assert key.fingerprint.startswith("SHA256:")
    return key


_blob_fields = st.lists(st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b"nistp256", b"nistp384", b"nistp521", b"ssh-ed25519", b"\x04" + b"\x01" * 64, b"\x00",
                     b"\x02" + b"\x01" * 32, b"\x03" + b"\x01" * 48, b"\xff" * 33, b"\x01\x00\x01"]),
    st.integers(min_value=0, max_value=2**4096).map(lambda n: n.to_bytes((n.bit_length() + 8) // 8 or 1, "big")),
), max_size=4)


@FUZZ
@given(st.sampled_from(sorted(KEY_TYPES)), st.sampled_from(sorted(KEY_TYPES)), _blob_fields,
       st.sampled_from(["", " comment", " a b c", "\n"]))
def test_key_blobs(line_type: str, blob_type: str, fields: list[bytes], tail: str) -> None:
    blob = _s(blob_type.encode()) + b"".join(_s(f) if i % 3 else f for i, f in enumerate(fields))
    _only_invalid_key(f"{line_type} {base64.b64encode(blob).decode()}{tail}")


@FUZZ
@given(st.one_of(st.text(max_size=200), json_values,
                 st.builds(lambda t, d: f"{t} {d}", st.sampled_from([*sorted(KEY_TYPES), "ssh-dss", "x"]),
                           st.text(alphabet="AB+/=\n c3NzaC1lZDI1NTE5", max_size=120))))
def test_key_lines(line: Any) -> None:
    _only_invalid_key(line)


@FUZZ
@given(st.sampled_from(GOOD_KEYS + BAD_KEYS), st.integers(min_value=0, max_value=600),
       st.binary(min_size=1, max_size=3))
def test_mutated_real_keys(line: str, position: int, replacement: bytes) -> None:
    key_type, data = line.split()[:2]
    blob = bytearray(base64.b64decode(data))
    position %= len(blob)
    blob[position:position + len(replacement)] = replacement
    _only_invalid_key(f"{key_type} {base64.b64encode(bytes(blob)).decode()}")
