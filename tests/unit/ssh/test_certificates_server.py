"""The server hooks with certificates: source-address and revocation at login, permit-pty and
permit-port-forwarding on the channel requests, force-command in place of the client's command.
Real ssh-keygen certificates loaded into paramiko keys, as the client presents them."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

from sshserver.config.settings import GatewaySettings
from sshserver.grants.access import AccessSnapshot, AccessStore, Allow, Grant, Identity
from sshserver.grants.keys import parse_public_key
from sshserver.grants.labelselector import LabelSelector
from sshserver.grants.revocation import RevokedKeysFile
from sshserver.observability.audit import AuditTrail
from sshserver.observability.metrics import Metrics
from sshserver.sessions.execsession import ExecSession
from sshserver.sessions.services import SessionServices
from sshserver.ssh.connection import Connection
from sshserver.ssh.hooks import GatewayServer
from sshserver.ssh.throttle import FailureThrottle
from tests.support.sshkeygen import krl, make_key, sign


@dataclass
class FakeGateway:
    store: AccessStore
    settings: GatewaySettings = field(default_factory=GatewaySettings)
    metrics: Metrics = field(default_factory=Metrics)
    throttle: FailureThrottle = field(default_factory=lambda: FailureThrottle(base=0.0, cap=0.0))
    sink: io.StringIO = field(default_factory=io.StringIO)

    def __post_init__(self) -> None:
        self.audit = AuditTrail(self.sink)

    def note_authenticated(self, conn: Connection) -> None:
        pass

    def revoked(self, identity: Identity) -> str | None:
        return SessionServices.revoked(self, identity)  # type: ignore[arg-type]  # it reads settings only

    def records(self, name: str) -> list[dict]:
        return [r for r in map(json.loads, self.sink.getvalue().splitlines()) if r["event"] == name]


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-certs")


def grant_for_ca(d: Path, ca: str = "ca") -> Grant:
    line = Path(f"{make_key(d, ca)}.pub").read_text()
    return Grant(namespace="ns", name="g", uid="u", user="alice", keys=(), selector=LabelSelector(()),
                 authorities=(parse_public_key(line),), allow=Allow(port_forward=frozenset({80})))


def cert_key(d: Path, name: str, *options: str, ca: str = "ca", serial: int = 1) -> paramiko.PKey:
    priv = make_key(d, name)
    cert = sign(make_key(d, ca), priv, *options, serial=serial)
    key = paramiko.Ed25519Key(filename=str(priv))
    key.load_certificate(str(cert))
    return key


def server(d: Path, peer: str = "10.1.2.3:50000", revoked: RevokedKeysFile | None = None):
    gw = FakeGateway(AccessStore(AccessSnapshot((grant_for_ca(d),))),
                     settings=GatewaySettings(revoked_keys=revoked))
    conn = Connection(peer=peer)
    conn.transport = SimpleNamespace(is_authenticated=lambda: True)  # type: ignore[assignment]
    return gw, conn, GatewayServer(gw, conn)  # type: ignore[arg-type]


class FakeChannel:
    def __init__(self, chanid: int = 0) -> None:
        self._id = chanid

    def get_id(self) -> int:
        return self._id


def test_a_certificate_logs_in_and_keeps_its_permissions(d: Path) -> None:
    _gw, _conn, srv = server(d)
    assert srv.check_auth_publickey("ns/pod", cert_key(d, "plain")) == paramiko.AUTH_SUCCESSFUL
    assert srv.check_channel_pty_request(FakeChannel(), b"xterm", 80, 24, 0, 0, b"")
    assert srv.check_channel_direct_tcpip_request(1, ("", 0), ("localhost", 80)) == paramiko.OPEN_SUCCEEDED


@pytest.mark.parametrize(("peer", "ok"), [
    ("10.1.2.3:50000", True), ("10.1.3.3:50000", False), ("::1:50000", True), ("::2:50000", False),
    ("::ffff:10.1.2.9:50000", True),
])
def test_source_address_is_enforced_at_login(d: Path, peer: str, ok: bool) -> None:
    gw, conn, srv = server(d, peer)
    key = cert_key(d, "sourced", "source-address=10.1.2.0/24,::1")
    expected = paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED
    assert srv.check_auth_publickey("ns/pod", key) == expected
    if not ok:
        [failure] = gw.records("auth_failure")
        assert failure["reason"] == "certificate source-address excludes this address"
        assert conn.identity is None


def test_clear_certificate_gets_no_pty_and_no_port_forwarding(d: Path) -> None:
    _gw, conn, srv = server(d)
    assert srv.check_auth_publickey("ns/pod", cert_key(d, "cleared", "clear")) == paramiko.AUTH_SUCCESSFUL
    assert srv.check_channel_pty_request(FakeChannel(), b"xterm", 80, 24, 0, 0, b"") is False
    assert conn.channel_state(0).pty is None  # the session goes on without a terminal
    assert srv.check_channel_direct_tcpip_request(1, ("", 0), ("localhost", 80)) == \
        paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


def test_unknown_ca_is_an_audited_failure(d: Path) -> None:
    gw, _conn, srv = server(d)
    assert srv.check_auth_publickey("ns/pod", cert_key(d, "stranger", ca="other-ca")) == paramiko.AUTH_FAILED
    [failure] = gw.records("auth_failure")
    assert failure["method"] == "publickey-cert" and "unknown CA" in failure["reason"]


def test_revoked_certificate_cannot_log_in(d: Path, tmp_path: Path) -> None:
    make_key(d, "ca")
    path = krl(tmp_path / "revoked.krl", "serial: 13\n", ca=d / "ca")
    gw, _conn, srv = server(d, revoked=RevokedKeysFile(path))
    assert srv.check_auth_publickey("ns/pod", cert_key(d, "s12", serial=12)) == paramiko.AUTH_SUCCESSFUL
    gw, _conn, srv = server(d, revoked=RevokedKeysFile(path))
    assert srv.check_auth_publickey("ns/pod", cert_key(d, "s13", serial=13)) == paramiko.AUTH_FAILED
    assert gw.records("auth_failure")[0]["reason"] == "certificate revoked"


def test_revoked_plain_key_cannot_log_in(d: Path, tmp_path: Path) -> None:
    priv = make_key(d, "plainkey")
    line = Path(f"{priv}.pub").read_text()
    (tmp_path / "list").write_text(line)
    grant = Grant(namespace="ns", name="g", uid="u", user="alice", keys=(parse_public_key(line),),
                  selector=LabelSelector(()))
    key = paramiko.Ed25519Key(filename=str(priv))
    for revoked, expected in ((None, paramiko.AUTH_SUCCESSFUL),
                              (RevokedKeysFile(tmp_path / "list"), paramiko.AUTH_FAILED)):
        gw = FakeGateway(AccessStore(AccessSnapshot((grant,))), settings=GatewaySettings(revoked_keys=revoked))
        conn = Connection(peer="10.0.0.1:1")
        assert GatewayServer(gw, conn).check_auth_publickey("ns/pod", key) == expected  # type: ignore[arg-type]


def test_force_command_replaces_shell_and_exec_and_refuses_sftp(d: Path) -> None:
    gw, conn, srv = server(d)
    assert srv.check_auth_publickey("ns/pod", cert_key(d, "forced", "force-command=uptime")) == \
        paramiko.AUTH_SUCCESSFUL
    gw.metrics = Metrics()
    chan = SimpleNamespace(get_id=lambda: 0)
    for kind, command in (("shell", None), ("exec", "rm -rf /")):
        s = ExecSession(gw, conn, chan, kind, command, conn.channel_state(0))  # type: ignore[arg-type]
        assert (s.kind, s.command, s.requested_command) == ("exec", "uptime", command)
    sftp = ExecSession(gw, conn, chan, "sftp", None, conn.channel_state(0))  # type: ignore[arg-type]
    assert sftp.kind == "sftp" and sftp.sftp_forbidden
    from sshserver.sessions.lifecycle import SessionRefused
    with pytest.raises(SessionRefused, match="force-command"):
        sftp._prepare()
    # Without force-command, nothing changes.
    gw, conn, srv = server(d)
    srv.check_auth_publickey("ns/pod", cert_key(d, "free"))
    s = ExecSession(gw, conn, chan, "exec", "ls", conn.channel_state(0))  # type: ignore[arg-type]
    assert (s.kind, s.command, s.forced) == ("exec", "ls", None)
