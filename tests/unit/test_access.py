from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sshserver.access import AccessSnapshot, GrantError, grant_from_object, snapshot_from_objects
from sshserver.accessfile import load_access_file
from sshserver.keys import InvalidKeyError, parse_public_key
from sshserver.labelselector import LabelSelector


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


def test_access_file(pubkey: str, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "access.yaml"
    path.write_text(yaml.safe_dump([obj(pubkey)]))
    assert len(load_access_file(path).grants) == 1
    path.write_text(yaml.safe_dump([obj(pubkey, publicKeys=["junk"])]))
    with pytest.raises(ValueError, match="SSHAccess shop/alice"):
        load_access_file(path)
    path.write_text("{unbalanced")
    with pytest.raises(ValueError, match="cannot read access file"):
        load_access_file(path)


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
