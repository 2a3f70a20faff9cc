"""Refusals (unknown pod, not permitted, over a limit) end with 255 and one `podssh:` line, like
OpenSSH's own failures, so that a script tells them from a command's own exit status 1."""

from __future__ import annotations

import time

import paramiko
import pytest

from tests.support.inproc import client, grant_object, running_gateway

KEY = paramiko.ECDSAKey.generate()
GRANTS = [grant_object("alice", [KEY])]


def _run(port: int, user: str, command: str | None) -> tuple[int, bytes]:
    t = client(port, KEY, username=user)
    try:
        chan = t.open_session(timeout=5)
        chan.settimeout(10)
        if command is None:
            chan.get_pty()
            chan.invoke_shell()
        else:
            chan.exec_command(command)
        status = chan.recv_exit_status()
        err = b""
        while data := chan.recv_stderr(4096):
            err += data
        return status, err
    finally:
        t.close()


@pytest.mark.parametrize(("user", "command", "message"), [
    ("ns/pod", "true", b"unknown pod"),  # the stand-in API answers 404 to everything
    ("other/pod", "true", b"not permitted"),  # no grant in that namespace
    ("ns/pod", None, b"unknown pod"),  # a shell, with a terminal: the same
    ("ns/Bad_Name", "true", b"invalid pod name"),
])
def test_a_refusal_exits_255_with_one_line(user: str, command: str | None, message: bytes) -> None:
    with running_gateway(GRANTS) as gw:
        status, err = _run(gw.port, user, command)
        assert status == 255, err
        assert err.startswith(b"podssh: ") and message in err, err
        assert err.count(b"\n") == 1
        deadline = time.monotonic() + 5  # the audit record follows the channel's close
        while not gw.audit.named("session_end") and time.monotonic() < deadline:
            time.sleep(0.02)
        ends = gw.audit.named("session_end")
        assert [(e["reason"], e["exit_status"]) for e in ends] == [("refused", 255)]
