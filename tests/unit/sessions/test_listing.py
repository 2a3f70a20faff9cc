"""`ssh ls@gateway [NAMESPACE]` (sessions/listing.py): a real paramiko client against the
in-process gateway, whose pod cache (the real PodCache) watches the fake API of
tests/support/fakekube.py. The listing shows what the key's grants select and allow; a key
without a grant is refused at login like any unknown key; sftp, port forwards and env variables
with an effect are refused for `ls`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paramiko
import pytest

from sshserver.kube.podcache import PodCache
from tests.support.fakekube import PODS, FakeKube
from tests.support.inproc import InProcessGateway, client, grant_object, running_gateway
from tests.support.sshkeygen import make_key, sign

KEY = paramiko.ECDSAKey.generate()
STRANGER = paramiko.ECDSAKey.generate()
LS = "ls"
HEADER = "TARGET       CONTAINERS  ALLOWS                     UNTIL                 GRANT"
WEB_NS = "ns/web-1     app,side    shell,exec                 -                     ns/alice"
WEB_OTHER = "other/web-1  app         exec,sftp,forward:80,8080  2099-01-01T00:00:00Z  other/alice-fwd"


def pod(name: str, ns: str = "ns", labels: dict[str, str] | None = None, phase: str = "Running",
        containers: tuple[str, ...] = ("app", "side")) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {"app": "web"}},
            "spec": {"containers": [{"name": c} for c in containers]},
            "status": {"phase": phase, "containerStatuses": [
                {"name": c, "image": "i", "imageID": "i", "ready": True, "restartCount": 0,
                 "state": {"running": {}}} for c in containers]}}


def in_namespace(obj: dict[str, Any], ns: str) -> dict[str, Any]:
    obj["metadata"]["namespace"] = ns
    return obj


GRANTS = [
    grant_object("alice", [KEY], env=["DEBUG"], allow={"shell": True, "exec": True}),
    in_namespace(grant_object("alice-fwd", [KEY], pods={"selector": {"matchLabels": {"app": "web"}},
                                                        "containers": ["app"]},
                              allow={"exec": True, "sftp": True, "portForward": [8080, 80]},
                              expiresAt="2099-01-01T00:00:00Z"), "other"),
]


@contextmanager
def listing_gateway(grants: list[dict[str, Any]] = GRANTS, namespaces: tuple[str, ...] = ("ns", "other")
                    ) -> Iterator[InProcessGateway]:
    """The gateway with a pod cache synced on the fake API's pods: web-1 in ns and in other
    (granted), a pending web-2 and a db-1 of other labels in ns (not listed)."""
    kube = FakeKube()
    for body in (pod("web-1"), pod("web-2", phase="Pending"), pod("db-1", labels={"app": "db"}),
                 pod("web-1", ns="other", containers=("app", "secret")), pod("web-9", ns="nogrant")):
        kube.add(body, PODS)
    cache = PodCache(kube, watch_timeout=1, max_silence=5.0, backoff=(0.01, 0.05))  # type: ignore[arg-type]
    try:
        with running_gateway(grants, pod_cache=cache) as gw:
            kube.wait_until(lambda: all(cache.synced(ns) for ns in namespaces), timeout=5)
            yield gw
    finally:
        kube.release()


def run(port: int, command: str | None = None, *, pty: bool = False, subsystem: str | None = None,
        env: dict[str, str] | None = None, key: paramiko.PKey = KEY) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, stderr) of one `ls` request: a shell without a command."""
    t = client(port, key, username=LS)
    try:
        chan = t.open_session(timeout=5)
        chan.settimeout(10)
        for name, value in (env or {}).items():
            chan.set_environment_variable(name, value)
        if pty:
            chan.get_pty(width=100, height=30)
        if subsystem is not None:
            chan.invoke_subsystem(subsystem)
        elif command is None:
            chan.invoke_shell()
        else:
            chan.exec_command(command)
        status = chan.recv_exit_status()
        out = chan.makefile("rb").read()
        err = chan.makefile_stderr("rb").read()
        return status, out, err
    finally:
        t.close()


def records(gw: InProcessGateway, name: str, count: int = 1) -> list[dict[str, Any]]:
    """The audit records of that name, once `count` of them are there (a session's end record
    follows the close of its channel)."""
    deadline = time.monotonic() + 5
    while len(gw.audit.named(name)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return gw.audit.named(name)


def test_a_granted_key_lists_its_pods_with_containers_allows_expiry_and_grant() -> None:
    with listing_gateway() as gw:
        status, out, err = run(gw.port)
        assert (status, err) == (0, b"")
        assert out.decode().splitlines() == [HEADER, WEB_NS, WEB_OTHER]
        # An exec request lists as well (an empty command: every namespace).
        assert run(gw.port, "")[:2] == (0, out)
        [end, _] = records(gw, "session_end", 2)
        assert {k: end[k] for k in ("kind", "asked", "reason", "exit_status", "filter", "grants", "targets")} == {
            "kind": "list", "asked": "shell", "reason": "exit", "exit_status": 0, "filter": None,
            "grants": ["ns/alice", "other/alice-fwd"], "targets": 2}
        # Bounded metric labels: the kind is `list`; no grant was claimed, no place of maxSessions taken.
        metrics = gw.gateway.metrics
        assert metrics.sessions_started.labels("list", "false")._value.get() == 2
        assert metrics.sessions_active.labels("list")._value.get() == 0
        assert gw.gateway.registry.live() == []
        assert gw.audit.named("session_start") == []


def test_a_namespace_argument_lists_that_namespace_only() -> None:
    with listing_gateway() as gw:
        status, out, err = run(gw.port, "other")
        assert (status, err) == (0, b"")
        assert out.decode().splitlines() == [HEADER, WEB_OTHER]
        assert records(gw, "session_end")[0]["filter"] == "other"


@pytest.mark.parametrize(("command", "message"), [
    ("nogrant", b"podssh: not permitted: this key has no access in namespace 'nogrant'\n"),
    ("ns other", b"podssh: usage: ssh ls@GATEWAY [NAMESPACE] (one namespace, not 2 words)\n"),
    ("Bad_NS", b"podssh: invalid namespace 'Bad_NS': expected a Kubernetes name (lowercase a-z, 0-9, '-')\n"),
])
def test_a_bad_namespace_argument_is_refused_with_one_line(command: str, message: bytes) -> None:
    with listing_gateway() as gw:
        assert run(gw.port, command) == (255, b"", message)
        assert records(gw, "session_end")[0]["reason"] == "refused"


def test_grants_without_running_pods_say_so_and_exit_0() -> None:
    nothing = grant_object("alice", [KEY], pods={"selector": {"matchLabels": {"app": "none"}}})
    with listing_gateway([nothing], namespaces=("ns",)) as gw:
        assert run(gw.port) == (0, b"no running pods match your grants (1 grant in force)\n", b"")


def test_a_key_without_grant_is_refused_as_for_any_target() -> None:
    with listing_gateway() as gw:
        failures = []
        for user in (LS, "ns/web-1"):
            with pytest.raises(paramiko.AuthenticationException):
                client(gw.port, STRANGER, username=user)
            failures.append(records(gw, "auth_failure", len(failures) + 1)[-1])
        ls_failure, pod_failure = ({k: v for k, v in f.items() if k not in ("conn", "peer", "target")}
                                    for f in failures)
        assert ls_failure == pod_failure  # the same refusal: nothing tells that `ls` is special
        assert failures[0]["target"] == LS and failures[0]["reason"] is None
        assert gw.gateway.metrics.auth_attempts.labels("publickey", "failure")._value.get() == 2
        assert gw.audit.named("auth_success") == [] and gw.audit.named("session_end") == []


def test_sftp_and_env_variables_with_an_effect_are_refused_for_ls() -> None:
    with listing_gateway() as gw:
        status, out, err = run(gw.port, subsystem="sftp")
        assert (status, out) == (255, b"")
        assert err == b"podssh: not permitted: ls lists your targets and runs nothing; for sftp name a target " \
                      b"(NAMESPACE/POD@gateway)\n"
        for env in ({"DEBUG": "1"}, {"PODSSH_DEBUG_IMAGE": ""}):
            status, out, err = run(gw.port, env={"LANG": "C.UTF-8", **env})
            assert (status, out) == (255, b"")
            assert err.startswith(b"podssh: not permitted: ls lists your targets and runs nothing; environment") \
                and err.count(b"\n") == 1 and next(iter(env)).encode() in err
        # What clients send unasked (LANG, LC_*, TERM) changes nothing: the listing.
        status, out, _ = run(gw.port, env={"LANG": "C.UTF-8", "LC_ALL": "C"})
        assert status == 0 and out.startswith(b"TARGET")
        assert [(e["asked"], e["reason"]) for e in records(gw, "session_end", 4)] == [
            ("sftp", "refused"), ("shell", "refused"), ("shell", "refused"), ("shell", "exit")]


def certified(d: Path, name: str, *options: str) -> paramiko.PKey:
    """A key with a certificate of CA `d/ca` for principal alice."""
    priv = make_key(d, name)
    key = paramiko.Ed25519Key(filename=str(priv))
    key.load_certificate(str(sign(make_key(d, "ca"), priv, *options)))
    return key


def test_a_certificate_with_a_force_command_is_refused_for_ls(tmp_path: Path) -> None:
    """sshd would run the forced command and nothing else: `ls` lists nothing for such a
    certificate; the same CA's certificate without force-command lists."""
    ca = Path(f"{make_key(tmp_path, 'ca')}.pub").read_text().strip()
    grants = [grant_object("alice", [], certificateAuthorities=[ca], allow={"shell": True, "exec": True})]
    with listing_gateway(grants, namespaces=("ns",)) as gw:
        status, out, err = run(gw.port, key=certified(tmp_path, "free"))
        assert (status, err) == (0, b"") and out.split()[5:7] == [b"ns/web-1", b"app,side"]
        forced = certified(tmp_path, "forced", "force-command=uptime")
        for command in (None, "ns"):
            assert run(gw.port, command, key=forced) == (255, b"", (
                b"podssh: not permitted: this certificate has a force-command, which ls does not run; "
                b"name a target (NAMESPACE/POD@gateway) to run it\n"))
        assert all(r["reason"] == "refused" for r in records(gw, "session_end", 3)[1:])


def test_port_forwarding_is_refused_for_ls_though_a_grant_allows_the_port() -> None:
    allowed = [grant_object("alice", [KEY], allow={"shell": True, "exec": True, "portForward": [8080]})]
    with listing_gateway(allowed, namespaces=("ns",)) as gw:
        t = client(gw.port, KEY, username=LS)
        try:
            with pytest.raises(paramiko.ChannelException) as refused:
                t.open_channel("direct-tcpip", ("localhost", 8080), ("127.0.0.1", 50000), timeout=5)
            assert refused.value.code == paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
            # The connection goes on: the listing shows the port the grant forwards (to ns/POD).
            chan = t.open_session(timeout=5)
            chan.settimeout(10)
            chan.exec_command("ns")
            assert chan.recv_exit_status() == 0
            assert b"shell,exec,forward:8080" in chan.makefile("rb").read()
        finally:
            t.close()
        assert gw.audit.named("forward_start") == []


def test_under_a_pty_every_line_ends_with_crlf() -> None:
    with listing_gateway() as gw:
        status, out, err = run(gw.port, pty=True)
        assert (status, err) == (0, b"")
        assert out == f"{HEADER}\r\n{WEB_NS}\r\n{WEB_OTHER}\r\n".encode()
        status, _, err = run(gw.port, "nogrant", pty=True)
        assert (status, err) == (255, b"podssh: not permitted: this key has no access in namespace 'nogrant'\r\n")


def test_without_a_synced_cache_the_pods_come_from_the_api() -> None:
    """No pod cache: one list call, to the in-process API stand-in, which answers 404 to
    everything: the failure is one line and 255, never a traceback."""
    with running_gateway(GRANTS[:1]) as gw:
        status, out, err = run(gw.port)
    assert (status, out) == (255, b"")
    assert err == b"podssh: cannot list pods in ns: 404 Not Found\n"
