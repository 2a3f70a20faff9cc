from __future__ import annotations

import base64
import logging
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sshserver.grants.access import (
    AccessSnapshot,
    Allow,
    GrantError,
    SessionKind,
    grant_from_object,
    snapshot_from_objects,
)
from sshserver.grants.accessfile import load_access_file
from sshserver.grants.keys import InvalidKeyError, parse_public_key
from sshserver.grants.labelselector import LabelSelector


@pytest.fixture(scope="module")
def pubkey(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("k") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@host", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def obj(pubkey: str, **spec: object) -> dict:
    base = {"user": "alice", "publicKeys": [pubkey], "pods": {"selector": {"matchLabels": {"app": "web"}}}}
    base.update(spec)
    return {"metadata": {"namespace": "shop", "name": "alice", "uid": "u1"}, "spec": base}


def test_fingerprint_matches_ssh_keygen(pubkey: str, tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text(pubkey + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True).stdout
    assert parse_public_key(pubkey).fingerprint == out.split()[1]
    assert parse_public_key(pubkey).comment == "me@host"


@pytest.mark.parametrize(("line", "message"), [
    ("ssh-ed25519", "expected"),
    ("ssh-foo AAAA", "unsupported key type"),
    ("ssh-ed25519 not-base64!", "not valid base64"),
    ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "not 'ssh-rsa'"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMq", "malformed ssh-ed25519 key"),
    ("ssh-ed25519-cert-v01@openssh.com AAAA", "is a certificate"),
])
def test_bad_keys(line: str, message: str) -> None:
    with pytest.raises(InvalidKeyError, match=message):
        parse_public_key(line)


def test_defaults_are_shell_and_exec_only(pubkey: str) -> None:
    g = grant_from_object(obj(pubkey))
    assert g.allow.shell and g.allow.exec and not g.allow.sftp and not g.allow.port_forward
    explicit = grant_from_object(obj(pubkey, allow={"exec": True, "portForward": [8080]}))
    assert not explicit.allow.shell and explicit.allow.exec and explicit.allow.port_forward == {8080}


@pytest.mark.parametrize(("allow", "summary"), [
    (Allow(), "shell,exec"),
    (Allow(shell=False, exec=False, sftp=True), "sftp"),
    (Allow(shell=False, exec=False, port_forward=frozenset({8080, 80, 443})), "forward:80,443,8080"),
    (Allow(sftp=True, port_forward=frozenset({5432})), "shell,exec,sftp,forward:5432"),
    (Allow(shell=False, exec=False), "-"),
])
def test_what_a_grant_allows_reads_as_the_listing_shows_it(allow: Allow, summary: str) -> None:
    assert allow.summary() == summary
    assert allow.permits(SessionKind.LIST)  # any grant in force shows itself to its key


def test_grant_covers_selector_namespace_and_containers(pubkey: str) -> None:
    g = grant_from_object(obj(pubkey, pods={"selector": {"matchLabels": {"app": "web"}}, "containers": ["app"]}))
    assert g.covers("shop", {"app": "web", "x": "y"}, "app")
    assert not g.covers("shop", {"app": "web"}, "sidecar")
    assert not g.covers("other", {"app": "web"}, "app")
    assert not g.covers("shop", {"app": "db"}, "app")


def test_time_window(pubkey: str) -> None:
    now = datetime.now(UTC)
    g = grant_from_object(obj(pubkey, notBefore=(now - timedelta(hours=1)).isoformat(),
                              expiresAt=(now + timedelta(hours=1)).isoformat()))
    assert g.active_at(now)
    assert not g.active_at(now + timedelta(hours=2))
    assert not g.active_at(now - timedelta(hours=2))


@pytest.mark.parametrize(("spec", "reason", "message"), [
    ({"publicKeys": []}, "NoKeys", "both empty"),
    ({"publicKeys": ["ssh-ed25519 !!"]}, "InvalidKey", r"publicKeys\[0\]"),
    ({"pods": {}}, "InvalidSpec", "selector is required"),
    ({"pods": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}, "InvalidSpec", "operator"),
    ({"expiresAt": "yesterday"}, "InvalidSpec", "invalid time"),
    ({"notBefore": "2026-01-02T00:00:00Z", "expiresAt": "2026-01-01T00:00:00Z"}, "InvalidSpec", "after"),
    ({"limits": {"idleTimeout": "soon"}}, "InvalidSpec", "invalid duration"),
    ({"allow": {"portForward": [0]}}, "InvalidSpec", "portForward"),
    ({"user": ""}, "InvalidSpec", "user is required"),
])
def test_bad_grants_say_why(pubkey: str, spec: dict, reason: str, message: str) -> None:
    with pytest.raises(GrantError, match=message) as info:
        grant_from_object(obj(pubkey, **spec))
    assert info.value.reason == reason


def test_snapshot_skips_bad_objects_and_indexes_keys(pubkey: str) -> None:
    good = obj(pubkey)
    bad = obj(pubkey, publicKeys=["nonsense"])
    bad["metadata"]["name"] = "broken"
    snapshot, errors = snapshot_from_objects([good, bad])
    assert list(errors) == ["shop/broken"]
    fp = parse_public_key(pubkey).fingerprint
    assert [g.name for g in snapshot.grants_for_fingerprint(fp)] == ["alice"]
    assert snapshot.grants_for_fingerprint("SHA256:nope") == ()
    expired = obj(pubkey, expiresAt="2000-01-01T00:00:00Z")
    assert AccessSnapshot((grant_from_object(expired),)).grants_for_fingerprint(fp) == ()


def test_access_file(pubkey: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "access.yaml"
    path.write_text(yaml.safe_dump([obj(pubkey)]))
    assert len(load_access_file(path).grants) == 1
    path.write_text("{unbalanced")
    with pytest.raises(ValueError, match="cannot read access file") as info:
        load_access_file(path)
    assert "\n" not in str(info.value)
    path.write_text("[" * 5000)  # PyYAML's composer recurses: RecursionError, not a traceback
    with pytest.raises(ValueError, match="cannot read access file"):
        load_access_file(path)


def test_access_file_reports_a_bad_object_and_serves_the_others(
        pubkey: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Like the cluster: a bad object grants nothing and is named in one log line; it is not fatal."""
    bad = obj(pubkey, limits={"idleTimeout": "9" * 400 + "s"})
    bad["metadata"]["name"] = "broken"
    other = obj(pubkey)
    other["metadata"]["name"] = "bob"
    path = tmp_path / "access.yaml"
    path.write_text(yaml.safe_dump_all([[obj(pubkey), bad, "not an object"], {"kind": "List", "items": [other]}]))
    with caplog.at_level(logging.WARNING, logger="podssh.access"):
        snapshot = load_access_file(path)
    assert sorted(g.name for g in snapshot.grants) == ["alice", "bob"]
    lines = [r for r in caplog.records if r.getMessage() == "access_object_invalid"]
    assert len(lines) == 2
    broken = lines[0].fields  # type: ignore[attr-defined]
    assert broken["object"] == "shop/broken" and broken["reason"] == "InvalidSpec"
    assert "idleTimeout" in broken["message"]
    assert lines[1].fields["object"] == "?/?"  # type: ignore[attr-defined]


def test_label_selector() -> None:
    sel = LabelSelector.from_dict({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["a", "b"]},
        {"key": "legacy", "operator": "DoesNotExist"},
        {"key": "env", "operator": "NotIn", "values": ["prod"]},
        {"key": "team", "operator": "Exists"},
    ]})
    assert sel.matches({"app": "web", "tier": "a", "team": "x"})
    assert not sel.matches({"app": "web", "tier": "c", "team": "x"})
    assert not sel.matches({"app": "web", "tier": "a", "team": "x", "legacy": "1"})
    assert not sel.matches({"app": "web", "tier": "a", "team": "x", "env": "prod"})
    assert not sel.matches({"app": "web", "tier": "a"})
    assert str(sel) == "app=web,tier in (a,b),!legacy,env notin (prod),team"
    assert LabelSelector.from_dict({}).matches({"anything": "x"})


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def compressed_ecdsa_line() -> str:
    """An ecdsa-sha2-nistp256 key whose point is compressed: it passes the CRD's pattern, and
    cryptography raises NotImplementedError for it."""
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    blob = _ssh_string(b"ecdsa-sha2-nistp256") + _ssh_string(b"nistp256") + _ssh_string(point)
    return "ecdsa-sha2-nistp256 " + base64.b64encode(blob).decode()


def rsa_line(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_cryptography_failures_become_invalid_key() -> None:
    with pytest.raises(InvalidKeyError, match="malformed ecdsa-sha2-nistp256 key"):
        parse_public_key(compressed_ecdsa_line())


def test_rsa_keys_under_2048_bits_are_refused() -> None:
    with pytest.raises(InvalidKeyError, match="RSA key of 1024 bits is too small"):
        parse_public_key(rsa_line(1024))
    assert parse_public_key(rsa_line(2048)).key_type == "ssh-rsa"


@pytest.mark.parametrize("line", [None, 5, ["ssh-ed25519", "AAAA"], "ssh-ed25519 " + "A" * 5000])
def test_keys_of_any_shape_raise_invalid_key(line: object) -> None:
    with pytest.raises(InvalidKeyError):
        parse_public_key(line)  # type: ignore[arg-type]


SEL = {"matchLabels": {"app": "web"}}


@pytest.mark.parametrize(("spec", "reason", "message"), [
    # Values that passed the old CRD and made the parser raise something else.
    ({"limits": {"idleTimeout": "9" * 400 + "s"}}, "InvalidSpec", "idleTimeout"),
    ({"limits": {"maxSessionDuration": "1" * 7 + "h"}}, "InvalidSpec", "maxSessionDuration"),
    ({"publicKeys": ["__compressed__"]}, "InvalidKey", r"publicKeys\[0\]: malformed ecdsa"),
    # Fields of the wrong shape (possible in --access files).
    ({"pods": "x"}, "InvalidSpec", "spec.pods must be an object"),
    ({"pods": {"selector": 5}}, "InvalidSpec", "selector must be an object"),
    ({"pods": {"selector": {"matchLabels": ["app"]}}}, "InvalidSpec", "matchLabels must be a map"),
    ({"pods": {"selector": {"matchLabels": {"app": 1}}}}, "InvalidSpec", "must be a string"),
    ({"pods": {"selector": {"matchExpressions": "app"}}}, "InvalidSpec", "must be a list"),
    ({"pods": {"selector": {"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]}}},
     "InvalidSpec", "values must be a list"),
    ({"pods": {"selector": {"matchExpressions": [{"key": ["a"], "operator": "Exists"}]}}},
     "InvalidSpec", "must be a string"),
    ({"pods": {"selector": {"matchExpressions": [{"key": "a", "operator": ["In"]}]}}},
     "InvalidSpec", "operator"),
    ({"pods": {"selector": {"matchLabels": {"app": "web\nx"}}}}, "InvalidSpec", "invalid label value"),
    ({"pods": {"selector": {"matchLabels": {"a b": "web"}}}}, "InvalidSpec", "invalid label key"),
    ({"limits": [1]}, "InvalidSpec", "spec.limits must be an object"),
    ({"allow": "yes"}, "InvalidSpec", "spec.allow must be an object"),
    ({"publicKeys": "ssh-ed25519 AAAA"}, "InvalidSpec", "publicKeys must be a list"),
    ({"groups": [1]}, "InvalidSpec", "groups must be a list of strings"),
    ({"user": ["alice"]}, "InvalidSpec", "spec.user"),
    # Booleans must be booleans: bool("false") is True.
    ({"allow": {"shell": "false"}}, "InvalidSpec", "spec.allow.shell must be true or false"),
    ({"allow": {"exec": 1}}, "InvalidSpec", "spec.allow.exec must be true or false"),
    ({"allow": {"sftp": "yes"}}, "InvalidSpec", "spec.allow.sftp must be true or false"),
    ({"allow": {"portForward": [True]}}, "InvalidSpec", "portForward"),
    ({"allow": {"portForward": list(range(1, 100))}}, "InvalidSpec", "portForward"),
    # Numbers must be bounded whole numbers.
    ({"limits": {"maxSessions": True}}, "InvalidSpec", "maxSessions"),
    ({"limits": {"maxSessions": 10**400}}, "InvalidSpec", "maxSessions"),
    ({"limits": {"maxSessions": "3"}}, "InvalidSpec", "maxSessions"),
    ({"limits": {"maxSessions": 2.5}}, "InvalidSpec", "maxSessions"),
    ({"limits": {"maxSessions": 0}}, "InvalidSpec", "maxSessions"),
    ({"limits": {"idleTimeout": float("inf")}}, "InvalidSpec", "idleTimeout"),
    ({"limits": {"idleTimeout": float("nan")}}, "InvalidSpec", "idleTimeout"),
    ({"limits": {"idleTimeout": "0s"}}, "InvalidSpec", "longer than zero"),
    ({"limits": {"idleTimeout": ""}}, "InvalidSpec", "idleTimeout"),
    ({"limits": {"idleTimeout": "15m\n"}}, "InvalidSpec", "idleTimeout"),
    ({"limits": {"idleTimeout": "\u0661\u0665m"}}, "InvalidSpec", "idleTimeout"),  # Arabic-Indic digits
    ({"limits": {"idleTimeout": ["15m"]}}, "InvalidSpec", "idleTimeout"),
    # Times that overflow once compared.
    ({"notBefore": "0001-01-01T00:00:00+01:00"}, "InvalidSpec", "out of range"),
    ({"expiresAt": 17}, "InvalidSpec", "expiresAt"),
    ({"expiresAt": "x" * 10000}, "InvalidSpec", "expiresAt"),
    # Control characters would reach the Impersonate-User/-Group headers.
    ({"user": "alice\r\nImpersonate-Group: system:masters"}, "InvalidSpec", "control characters"),
    ({"user": "alice\x00"}, "InvalidSpec", "control characters"),
    ({"user": "alice\x85"}, "InvalidSpec", "control characters"),
    ({"user": "system:serviceaccount:ns:sa "}, "InvalidSpec", "start or end with a space"),
    ({"groups": [" system:masters"]}, "InvalidSpec", "start or end with a space"),
    ({"user": "a" * 254}, "InvalidSpec", "longer than 253"),
    ({"groups": ["dev\nx"]}, "InvalidSpec", r"spec.groups\[0\] must not contain control characters"),
    ({"groups": [""]}, "InvalidSpec", r"spec.groups\[0\]"),
    ({"groups": ["g"] * 17}, "InvalidSpec", "limit is 16"),
    # Empty lists and selectors that would read as "everything".
    ({"pods": {"selector": SEL, "containers": []}}, "InvalidSpec", "containers must not be empty"),
    ({"pods": {"selector": SEL, "containers": ["App"]}}, "InvalidSpec", "not a valid Kubernetes name"),
    ({"pods": {"selector": {}}}, "InvalidSpec", "must not be empty"),
    ({"pods": {"selector": None}}, "InvalidSpec", "must not be empty"),
    ({"pods": {"selector": {"matchLabels": {}}}}, "InvalidSpec", "must not be empty"),
    ({"pods": {"selector": {"matchLabels": {}, "matchExpressions": []}}}, "InvalidSpec", "must not be empty"),
    ({"pods": {"selector": {"matchlabels": {"app": "web"}}}}, "InvalidSpec", "unknown selector field"),
    ({"shellCommand": []}, "InvalidSpec", "shellCommand must not be empty"),
    ({"shellCommand": ["sh"] * 65}, "InvalidSpec", "shellCommand"),
    ({"publicKeys": ["x"] * 33}, "InvalidSpec", "limit is 32"),
])
def test_any_bad_field_is_invalid_spec_on_that_object(pubkey: str, spec: dict, reason: str, message: str) -> None:
    if spec.get("publicKeys") == ["__compressed__"]:
        spec = {"publicKeys": [compressed_ecdsa_line()]}
    with pytest.raises(GrantError, match=message) as info:
        grant_from_object(obj(pubkey, **spec))
    assert info.value.reason == reason


@pytest.mark.parametrize("body", [
    None, "x", [], 5,
    {"metadata": "x", "spec": {}},
    {"metadata": {"namespace": ["shop"], "name": "a"}, "spec": {"user": "a"}},
    {"metadata": {"namespace": "Shop", "name": "a"}, "spec": {"user": "a"}},
    {"metadata": {"namespace": "shop", "name": "a", "uid": 7}, "spec": {"user": "a"}},
    {"metadata": {"namespace": "shop", "name": "a"}, "spec": "x"},
])
def test_objects_of_any_shape_are_invalid_spec(body: object) -> None:
    with pytest.raises(GrantError) as info:
        grant_from_object(body)  # type: ignore[arg-type]
    assert info.value.reason == "InvalidSpec"


def test_allow_takes_real_booleans(pubkey: str) -> None:
    g = grant_from_object(obj(pubkey, allow={"shell": False, "exec": True, "sftp": None}))
    assert (g.allow.shell, g.allow.exec, g.allow.sftp) == (False, True, False)


def test_limits_and_times_parse(pubkey: str) -> None:
    g = grant_from_object(obj(pubkey, limits={"maxSessions": 3, "idleTimeout": "999999h", "maxSessionDuration": 90},
                              notBefore="2026-01-01T01:00:00+01:00"))
    assert g.limits.max_sessions == 3 and g.limits.idle_timeout == 999999 * 3600.0
    assert g.limits.max_session_duration == 90.0
    assert g.not_before == datetime(2026, 1, 1, tzinfo=UTC) and g.not_before.tzinfo is UTC


def test_the_safety_net_turns_any_parser_bug_into_invalid_spec(
        pubkey: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import sshserver.grants.access as access

    def broken(_obj: object) -> None:
        raise OverflowError("a bug")

    monkeypatch.setattr(access, "_parse_grant", broken)
    with caplog.at_level(logging.ERROR, logger="podssh.access"), pytest.raises(GrantError) as info:
        grant_from_object(obj(pubkey))
    assert info.value.reason == "InvalidSpec" and "OverflowError" in str(info.value)
    assert [r.getMessage() for r in caplog.records] == ["grant_parser_error"]


def _sk_line(key_type: bytes, *fields: bytes) -> str:
    blob = _ssh_string(key_type) + b"".join(map(_ssh_string, fields))
    return key_type.decode() + " " + base64.b64encode(blob).decode()


def test_security_keys_are_checked_field_by_field() -> None:
    ed, ecdsa = b"sk-ssh-ed25519@openssh.com", b"sk-ecdsa-sha2-nistp256@openssh.com"
    assert parse_public_key(_sk_line(ed, b"\x01" * 32, b"ssh:")).key_type == ed.decode()
    assert parse_public_key(_sk_line(ecdsa, b"nistp256", b"\x04" + b"\x01" * 64, b"ssh:")).key_type == ecdsa.decode()
    for line in (_sk_line(ed), _sk_line(ed, b"\x01" * 31, b"ssh:"), _sk_line(ed, b"\x01" * 32, b"ssh:", b"x"),
                 _sk_line(ecdsa, b"nistp384", b"\x04" + b"\x01" * 64, b"ssh:"),
                 _sk_line(ecdsa, b"nistp256", b"\x02" + b"\x01" * 32, b"ssh:"),
                 _sk_line(ed, b"\x01" * 32, b"ssh:")[:-8]):
        with pytest.raises(InvalidKeyError):
            parse_public_key(line)
