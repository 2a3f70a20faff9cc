"""The ServerInterface hooks (sshserver/ssh/hooks.py), driven by a real paramiko client over a
socketpair against a real server Transport: every request goes through paramiko's parsing and
reaches the hook on the Transport thread, as in the gateway. The gateway itself is replaced by
`StubServices` (HookServices recording what the hooks ask of it); grants, settings, metrics,
audit and throttle are the real ones. No sessions run and nothing reaches Kubernetes.

Certificates at the hooks: test_certificates_server.py; hostile env names: test_env_injection.py;
limits that need the gateway's supervisor (hang-ups, windows, threads): test_limits.py."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import paramiko
import pytest
from paramiko import OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED as PROHIBITED
from paramiko import OPEN_FAILED_RESOURCE_SHORTAGE as SHORTAGE
from paramiko import OPEN_FAILED_UNKNOWN_CHANNEL_TYPE as UNKNOWN_TYPE

from sshserver.config.settings import GatewaySettings
from sshserver.grants.access import AccessSnapshot, AccessStore, Grant, Identity, SessionKind, grant_from_object
from sshserver.grants.keys import fingerprint
from sshserver.observability.audit import AuditTrail
from sshserver.observability.metrics import Metrics
from sshserver.ssh.connection import ChannelState, Connection, PtyRequest
from sshserver.ssh.hooks import MAX_ENV_VALUE, MAX_NOTICES, GatewayServer
from sshserver.ssh.internals import patches
from sshserver.ssh.internals import transport as transports
from sshserver.ssh.throttle import FailureThrottle

patches.install()  # as the gateway does before any Transport exists

HOST_KEY = paramiko.ECDSAKey.generate()
KEY = paramiko.ECDSAKey.generate()  # granted
REVOKED = paramiko.ECDSAKey.generate()  # granted, but refused by revoked()
STRANGER = paramiko.ECDSAKey.generate()  # no grant
PEER = "10.0.0.7:40000"
TARGET = "ns/pod"


def fp(key: paramiko.PKey) -> str:
    return fingerprint(key.asbytes())


def grant(name: str, keys: list[paramiko.PKey], **spec: Any) -> Grant:
    return grant_from_object({
        "apiVersion": "podssh.dev/v1alpha1", "kind": "SSHAccess",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {"user": name, "publicKeys": [f"{k.get_name()} {k.get_base64()}" for k in keys],
                 "pods": {"selector": {"matchLabels": {"app": "web"}}}, **spec},
    })


GRANT = grant("alice", [KEY, REVOKED], env=["DEBUG", *(f"V{i}" for i in range(10))],
              allow={"portForward": [8080]})


@dataclass
class FakeSession:
    """A ChannelSession that records the resizes it is asked for, and on which thread."""

    resizes: list[tuple[int, int, threading.Thread]] = field(default_factory=list)

    def request_resize(self, cols: int, rows: int) -> None:
        self.resizes.append((cols, rows, threading.current_thread()))

    def stop_output(self) -> None:
        pass

    def terminate(self, reason: str, message: str | None = None) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


@dataclass
class StubServices:
    """HookServices without a gateway: records logins, started sessions and revocation checks."""

    settings: GatewaySettings = field(default_factory=GatewaySettings)
    store: AccessStore = field(default_factory=lambda: AccessStore(AccessSnapshot((GRANT,))))
    metrics: Metrics = field(default_factory=Metrics)
    throttle: FailureThrottle = field(default_factory=lambda: FailureThrottle(base=0, cap=0))
    sink: io.StringIO = field(default_factory=io.StringIO)
    revoked_keys: dict[str, str] = field(default_factory=lambda: {fp(REVOKED): "listed in the test's revoked keys"})
    login_allowed: bool = True  # what note_authenticated answers
    sessions_allowed: bool = True  # what start_session answers
    logins: list[Connection] = field(default_factory=list)
    asked_revoked: list[Identity] = field(default_factory=list)
    started: list[tuple[SessionKind, str | None]] = field(default_factory=list)
    listings: list[tuple[SessionKind, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.audit = AuditTrail(self.sink)

    def revoked(self, identity: Identity) -> str | None:
        self.asked_revoked.append(identity)
        return self.revoked_keys.get(identity.fingerprint)

    def note_authenticated(self, conn: Connection) -> bool:
        self.logins.append(conn)
        return self.login_allowed

    def start_session(self, conn: Connection, channel: paramiko.Channel, kind: SessionKind,
                      command: str | None) -> bool:
        self.started.append((kind, command))
        if self.sessions_allowed:
            conn.attach(channel, FakeSession())  # as the gateway binds its session to the channel
        return self.sessions_allowed

    def start_listing(self, conn: Connection, channel: paramiko.Channel, asked: SessionKind,
                      command: str | None) -> bool:
        self.listings.append((asked, command))
        conn.attach(channel, FakeSession())
        return True

    def records(self, name: str) -> list[dict[str, Any]]:
        return [r for r in map(json.loads, self.sink.getvalue().splitlines()) if r["event"] == name]

    def attempts(self, method: str, result: str) -> float:
        return self.metrics.auth_attempts.labels(method, result)._value.get()


@dataclass
class Link:
    """One connection: the client Transport and, on the server side, the hooks' Connection."""

    services: StubServices
    conn: Connection
    server: paramiko.Transport
    client: paramiko.Transport

    def state(self, chan: paramiko.Channel) -> ChannelState:
        """The server's state of a client channel (our channel id is the client's remote id)."""
        return self.conn.channels[chan.remote_chanid]

    def session(self, chan: paramiko.Channel) -> FakeSession:
        session = self.conn.session_on(chan.remote_chanid)
        assert isinstance(session, FakeSession)
        return session

    def sync(self) -> None:
        """A keepalive round trip: the Transport thread handles messages in order, so every
        request sent before it (env, window-change: no reply) has reached its hook."""
        assert self.client.global_request("keepalive@openssh.com", wait=True) is not None

    def open_forward(self, host: str, port: int) -> paramiko.Channel:
        return self.client.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 50000), timeout=5)


@contextmanager
def linked(key: paramiko.PKey | None = KEY, services: StubServices | None = None, user: str = TARGET,
           **settings: Any) -> Iterator[Link]:
    """A client connected to GatewayServer hooks over a socketpair, logged in as `user` with `key`."""
    services = services or StubServices(settings=GatewaySettings(**settings))
    near, far = socket.socketpair()
    conn = Connection(peer=PEER)
    server = transports.build(far, services.settings, [HOST_KEY])
    conn.transport = server
    client = paramiko.Transport(near)
    try:
        negotiated = threading.Event()
        server.start_server(event=negotiated, server=GatewayServer(services, conn))
        client.start_client(timeout=5)
        assert negotiated.wait(5) and server.is_active()
        if key is not None:
            client.auth_publickey(user, key)
        yield Link(services, conn, server, client)
    finally:
        client.close()
        server.close()
        near.close()
        far.close()


def refused(open_channel: Any) -> int:
    """The code of a refused CHANNEL_OPEN."""
    with pytest.raises(paramiko.ChannelException) as caught:
        open_channel()
    return caught.value.code


# --- authentication ----------------------------------------------------------------------------


def test_a_granted_key_logs_in_with_its_grants() -> None:
    with linked(KEY) as link:
        assert link.client.is_authenticated()
        conn = link.conn
        assert (conn.username, conn.identity.fingerprint, conn.grants) == (TARGET, fp(KEY), (GRANT,))
        assert conn.identity.blob == KEY.asbytes()  # what --revoked-keys is checked against later
        assert [i.fingerprint for i in link.services.asked_revoked] == [fp(KEY)]
        assert link.services.records("auth_failure") == []
        assert conn.auth_failures == 0


@pytest.mark.parametrize(("key", "reason"), [
    (STRANGER, None),  # no grant lists it
    (REVOKED, "listed in the test's revoked keys"),  # granted, but revoked() names it
])
def test_a_key_without_grant_or_revoked_is_refused_and_audited(key: paramiko.PKey, reason: str | None) -> None:
    with linked(None) as link:
        with pytest.raises(paramiko.AuthenticationException):
            link.client.auth_publickey(TARGET, key)
        assert not link.client.is_authenticated()
        assert link.conn.identity is None and link.conn.grants == ()
        [failure] = link.services.records("auth_failure")
        assert failure | {"ts": None, "conn": None} == {
            "ts": None, "audit": True, "event": "auth_failure", "conn": None, "peer": PEER, "method": "publickey",
            "fingerprint": fp(key), "target": TARGET, "attempt": 1, "delay": 0, "reason": reason}
        assert failure["conn"] == link.conn.id
        assert link.services.attempts("publickey", "failure") == 1
        assert len(link.services.throttle) == 1  # the source is counted by the throttle
        assert link.services.throttle.delay("10.0.0.7") == 0  # base=0: no sleeping in tests
        # The same connection may still log in with a good key.
        link.client.auth_publickey(TARGET, KEY)
        assert link.client.is_authenticated()


def test_password_and_keyboard_interactive_never_succeed_and_count() -> None:
    secret = "hunter2-correct-horse"
    with linked(None) as link:
        with pytest.raises(paramiko.AuthenticationException):
            link.client.auth_password(TARGET, secret)
        with pytest.raises(paramiko.AuthenticationException):
            link.client.auth_interactive(TARGET, lambda title, instructions, prompts: [secret] * len(prompts))
        assert not link.client.is_authenticated()
        assert [(r["method"], r["attempt"]) for r in link.services.records("auth_failure")] == [
            ("password", 1), ("keyboard-interactive", 2)]
        assert link.services.attempts("password", "failure") == 1
        assert link.services.attempts("keyboard-interactive", "failure") == 1
        assert secret not in link.services.sink.getvalue()  # a password is never logged
        assert link.services.logins == []


def test_max_auth_tries_hangs_up_and_refuses_even_a_good_key() -> None:
    with linked(None, max_auth_tries=3) as link:
        for attempt in range(1, 4):
            assert not link.conn.hangup.is_set()
            with pytest.raises(paramiko.AuthenticationException):
                link.client.auth_publickey(TARGET, STRANGER)
            assert link.conn.auth_failures == attempt
        assert link.conn.hangup.is_set()
        assert link.conn.hangup_reason == "too_many_auth_failures"  # what the supervisor closes with
        with pytest.raises(paramiko.AuthenticationException):
            link.client.auth_publickey(TARGET, KEY)  # past the cap, a granted key is refused too
        assert not link.client.is_authenticated()
        assert [r["attempt"] for r in link.services.records("auth_failure")] == [1, 2, 3]
        assert link.services.attempts("publickey", "failure") == 3


def forged(public: paramiko.PKey) -> paramiko.PKey:
    """`public`'s key blob (anyone may know a public key) signed by another private key."""
    key = paramiko.ECDSAKey.generate()
    key.asbytes = public.asbytes  # type: ignore[method-assign]
    return key


def test_a_bad_signature_on_a_granted_key_is_a_failed_attempt() -> None:
    """paramiko asks check_auth_publickey before it verifies the signature: a request naming a
    granted key with a wrong signature passed the hook and failed unseen (no audit record, no
    throttle, not counted against max_auth_tries: paramiko's own cap of 10 applied instead)."""
    with linked(None, max_auth_tries=2) as link:
        with pytest.raises(paramiko.AuthenticationException):
            link.client.auth_publickey(TARGET, forged(KEY))
        assert not link.client.is_authenticated()
        [failure] = link.services.records("auth_failure")
        assert (failure["method"], failure["fingerprint"], failure["reason"], failure["attempt"]) == (
            "publickey", fp(KEY), "invalid signature", 1)
        assert link.services.attempts("publickey", "failure") == 1
        assert len(link.services.throttle) == 1
        assert link.conn.identity is None and link.conn.grants == ()  # nothing left of the refused login
        with pytest.raises(paramiko.AuthenticationException):
            link.client.auth_publickey(TARGET, forged(KEY))
        assert link.conn.hangup.is_set()
        # A refused key is counted once, not again when paramiko sends the failure.
        with linked(None) as other:
            with pytest.raises(paramiko.AuthenticationException):
                other.client.auth_publickey(TARGET, STRANGER)
            other.client.auth_publickey(TARGET, KEY)
            assert other.client.is_authenticated() and other.conn.auth_failures == 1
            assert len(other.services.records("auth_failure")) == 1


def test_the_banner_is_sent_before_login() -> None:
    with linked(KEY, banner="authorized use only") as link:
        assert link.client.get_banner() == b"authorized use only\n"


# --- channels -----------------------------------------------------------------------------------


def test_a_login_is_noted_before_the_first_request_and_a_refused_one_gets_nothing() -> None:
    with linked(KEY) as link:
        assert link.services.logins == []
        link.client.open_session()
        assert link.services.logins == [link.conn]
    services = StubServices(login_allowed=False)  # e.g. the key is over its connection cap
    with linked(KEY, services) as link:
        assert refused(link.client.open_session) == PROHIBITED
        assert refused(lambda: link.open_forward("localhost", 8080)) == PROHIBITED
        assert link.client.global_request("keepalive@openssh.com", wait=True) is None
        assert link.conn.channels == {}
        assert services.logins and services.started == []


def test_shell_exec_and_sftp_reach_start_session() -> None:
    with linked(KEY) as link:
        shell, exe, raw, sftp = (link.client.open_session() for _ in range(4))
        shell.invoke_shell()
        exe.exec_command("ls -l /tmp; echo $HOME")
        raw.exec_command(b"printf \xff")  # not UTF-8: replaced, never an exception
        sftp.invoke_subsystem("sftp")
        assert link.services.started == [
            (SessionKind.SHELL, None), (SessionKind.EXEC, "ls -l /tmp; echo $HOME"),
            (SessionKind.EXEC, "printf \ufffd"), (SessionKind.SFTP, None)]
        assert all(type(kind) is SessionKind for kind, _ in link.services.started)
        for chan in (shell, exe, raw, sftp):  # each channel has its own session
            assert isinstance(link.session(chan), FakeSession)
        assert len({id(link.session(c)) for c in (shell, exe, raw, sftp)}) == 4


def test_the_reserved_user_name_ls_starts_listings_and_never_a_forward() -> None:
    with linked(KEY, user="ls") as link:
        assert link.conn.grants == (GRANT,)  # a key with a grant in force logs in as `ls`
        shell, exe, sftp, other = (link.client.open_session() for _ in range(4))
        shell.invoke_shell()
        exe.exec_command("ns")
        sftp.invoke_subsystem("sftp")  # the listing session refuses it, with a line
        with pytest.raises(paramiko.SSHException):
            other.invoke_subsystem("netconf")
        assert link.services.listings == [(SessionKind.SHELL, None), (SessionKind.EXEC, "ns"),
                                          (SessionKind.SFTP, None)]
        assert link.services.started == []
        # GRANT forwards port 8080, but `ls` names no pod to forward to.
        assert refused(lambda: link.open_forward("localhost", 8080)) == PROHIBITED
    with linked(KEY, user="ls:main") as link:  # only the bare name is reserved
        link.client.open_session().invoke_shell()
        assert (link.services.started, link.services.listings) == ([(SessionKind.SHELL, None)], [])


def test_an_unknown_subsystem_and_a_refused_start_fail_the_request() -> None:
    with linked(KEY) as link:
        chan = link.client.open_session()
        with pytest.raises(paramiko.SSHException):
            chan.invoke_subsystem("netconf")
        assert link.services.started == []
    with linked(KEY, StubServices(sessions_allowed=False)) as link:
        chan = link.client.open_session()
        with pytest.raises(paramiko.SSHException):
            chan.exec_command("true")
        assert link.services.started == [(SessionKind.EXEC, "true")]
        assert link.conn.session_on(chan.remote_chanid) is None


def test_pty_request_is_recorded_per_channel_with_sane_sizes() -> None:
    with linked(KEY) as link:
        plain, absurd, huge, none = (link.client.open_session() for _ in range(4))
        plain.get_pty("vt100", 132, 43)
        absurd.get_pty("", 0, 2**32 - 1)  # zero and 4 billion: the defaults instead
        huge.get_pty("x" * 300, 10_001, 10_000)
        link.sync()
        assert link.state(plain).pty == PtyRequest("vt100", 132, 43)
        assert link.state(absurd).pty == PtyRequest("xterm", 80, 24)
        assert link.state(huge).pty == PtyRequest("x" * 64, 80, 10_000)
        assert link.state(none).pty is None


def test_window_change_reaches_the_session_on_that_channel_on_the_transport_thread() -> None:
    with linked(KEY) as link:
        first, second, idle = (link.client.open_session() for _ in range(3))
        first.get_pty("xterm", 80, 24)
        idle.get_pty("xterm", 80, 24)
        first.invoke_shell()
        second.invoke_shell()
        first.resize_pty(120, 40)
        second.resize_pty(0, 99_999)  # clamped, as at pty-req
        first.resize_pty(100, 30)
        idle.resize_pty(90, 20)  # no session yet: only the pty it will start with changes
        link.sync()
        a, b = link.session(first), link.session(second)
        assert [(c, r) for c, r, _ in a.resizes] == [(120, 40), (100, 30)]
        assert [(c, r) for c, r, _ in b.resizes] == [(80, 24)]
        # Called on the Transport thread, in order with the client's messages: the session's
        # request_resize is what must not block (tests/unit/sessions/test_resize.py).
        assert all(thread is link.server for _, _, thread in a.resizes + b.resizes)
        assert link.state(first).pty == PtyRequest("xterm", 100, 30)
        assert link.state(second).pty is None  # a window-change does not invent a terminal
        assert link.state(idle).pty == PtyRequest("xterm", 90, 20)


def test_env_keeps_allowed_names_and_refuses_the_rest() -> None:
    with linked(KEY) as link:
        chan = link.client.open_session()
        sent = {
            "TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C", "DEBUG": "1",  # allowed
            "PATH": "/tmp", "LD_PRELOAD": "/tmp/x.so", "SECRET": "s",  # not allowed by the grant
            "LC_X;id>P": "1", "1LC": "1", "LC_A=B": "1",  # not identifiers
            "LC_NUL": "a\0b", "LC_BIG": "x" * (MAX_ENV_VALUE + 1),  # values refused
            "LC_EDGE": "y" * MAX_ENV_VALUE,
        }
        for name, value in sent.items():
            chan.set_environment_variable(name, value)
        link.sync()
        assert link.state(chan).env == {"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C", "DEBUG": "1",
                                        "LC_EDGE": "y" * MAX_ENV_VALUE}
        assert link.state(chan).env_requests == len(sent)
        other = link.client.open_session()  # env is per channel
        link.sync()
        assert link.state(other).env == {}


def test_env_requests_per_channel_are_capped_by_count_and_bytes() -> None:
    env = [f"V{i}" for i in range(10)]
    with linked(KEY, max_env_requests=5, max_env_bytes=10_000) as link:
        chan = link.client.open_session()
        for name in env:
            chan.set_environment_variable(name, "1")
        chan2 = link.client.open_session()
        for name in env[:5]:
            chan2.set_environment_variable(name, "x" * 3000)
        link.sync()
        assert sorted(link.state(chan).env) == env[:5]
        assert sorted(link.state(chan2).env) == env[:3]  # 3 * 3002 bytes fit in 10,000


@pytest.mark.parametrize(("host", "port", "result"), [
    ("localhost", 8080, None), ("LocalHost", 8080, None), ("127.0.0.1", 8080, None), ("::1", 8080, None),
    ("localhost", 8081, PROHIBITED),  # no grant lists the port
    ("10.0.0.1", 8080, PROHIBITED), ("pod.example", 8080, PROHIBITED),  # not the pod itself
])
def test_direct_tcpip_only_to_the_pod_itself_and_a_granted_port(host: str, port: int, result: int | None) -> None:
    with linked(KEY) as link:
        if result is None:
            chan = link.open_forward(host, port)
            assert link.state(chan).forward == (host.lower(), port)
        else:
            assert refused(lambda: link.open_forward(host, port)) == result
            assert link.conn.channels == {}


def test_channel_caps_refuse_the_eleventh_session_and_count_forwards_only_against_all_channels() -> None:
    with linked(KEY) as link:
        assert link.services.settings.max_sessions == 10
        sessions = [link.client.open_session() for _ in range(10)]
        assert refused(link.client.open_session) == SHORTAGE
        forward = link.open_forward("localhost", 8080)  # not a session: still allowed
        assert len(link.conn.channels) == 11 and forward.remote_chanid in link.conn.channels
        sessions[0].close()
        link.sync()
        sessions.append(link.client.open_session())  # a closed channel gives its place back
    with linked(KEY, max_channels=3) as link:
        chans = [link.client.open_session(), link.open_forward("localhost", 8080), link.open_forward("::1", 8080)]
        assert refused(lambda: link.open_forward("localhost", 8080)) == SHORTAGE
        assert refused(link.client.open_session) == SHORTAGE
        assert len(chans) == 3


def test_other_channel_types_are_unknown() -> None:
    with linked(KEY) as link:
        assert refused(lambda: link.client.open_channel("x11", src_addr=("127.0.0.1", 6000))) == UNKNOWN_TYPE
        assert refused(lambda: link.client.open_channel("tun@openssh.com")) == UNKNOWN_TYPE


def test_x11_and_agent_forwarding_are_refused_with_a_notice() -> None:
    with linked(KEY) as link:
        chan = link.client.open_session()
        chan.request_forward_agent(lambda channel: None)  # no reply asked, as OpenSSH's ssh -A
        with pytest.raises(paramiko.SSHException):
            chan.request_x11()
        link.sync()
        assert link.state(chan).notices == ["agent forwarding is not supported", "X11 forwarding is not supported"]
        assert link.conn.notices == []  # per channel: told by the session on that channel


# --- global requests ---------------------------------------------------------------------------


def test_tcpip_forward_is_refused_with_a_connection_notice() -> None:
    with linked(KEY) as link:
        with pytest.raises(paramiko.SSHException):
            link.client.request_port_forward("127.0.0.1", 2222)
        assert link.conn.notices == ["remote forwarding (-R 2222) is not supported"]
        for port in range(3000, 3010):
            with pytest.raises(paramiko.SSHException):
                link.client.request_port_forward("127.0.0.1", port)
        assert len(link.conn.notices) == MAX_NOTICES  # bounded, whatever the client repeats
        assert link.conn.global_requests == 11 and not link.conn.hangup.is_set()
        assert link.conn.take_notices()[0] == "remote forwarding (-R 2222) is not supported"
        assert link.conn.notices == []


def test_keepalive_is_answered_and_other_global_requests_refused_and_counted() -> None:
    with linked(KEY) as link:
        for _ in range(3):
            assert link.client.global_request("keepalive@openssh.com", wait=True) is not None
        assert link.conn.global_requests == 0
        assert link.client.global_request("no-such-request@example.com", wait=True) is None
        assert link.conn.global_requests == 1
