"""Interactive sessions: a real pseudo-terminal on the client side, a pty in the pod."""

from __future__ import annotations

import time

import pytest

from tests.conftest import NS
from tests.support.gateway import Gateway, SSHKey
from tests.support.ptyclient import PtyClient


def test_shell_pty_size_follows_the_client(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    client = PtyClient(gateway.ssh_argv(f"{NS}/deb", keys["alice"], tty=True), rows=30, cols=100)
    try:
        client.send(b"stty size; echo \"term=$TERM\"; tty\n")
        out = client.expect(b"30 100")
        client.expect(b"/dev/pts/")
        client.resize(40, 132)
        # The resize travels apart from the keystrokes (ssh handles SIGWINCH on its own schedule,
        # the API server forwards resize and stdin as separate streams): ask until it shows.
        for _ in range(20):
            time.sleep(0.25)
            client.send(b"stty size\n")
            try:
                client.expect(b"40 132", timeout=1)
                break
            except AssertionError:
                continue
        client.expect(b"40 132", timeout=1)
        client.send(b"exit 5\n")
        assert client.wait() == 5
        assert b"bash" in out or b"$ " in out or b"# " in out  # a login shell prompt
    finally:
        client.kill()


def test_a_command_sees_the_terminal_size_from_its_first_instruction(gateway: Gateway,
                                                                   keys: dict[str, SSHKey]) -> None:
    # No prompt, no delay: the size must be in place before the command starts, every time
    # (containerd drops a resize that reaches it before the exec'd process has started).
    for _ in range(5):
        client = PtyClient([*gateway.ssh_argv(f"{NS}/deb", keys["alice"], tty=True), "stty size"],
                           rows=33, cols=111)
        try:
            client.expect(b"33 111")
            assert client.wait() == 0
        finally:
            client.kill()


@pytest.mark.parametrize(("target", "probe", "seen", "code"), [
    ("deb", b"echo bash=$BASH_VERSION\n", b"bash=5", 0),  # the image has bash: it is the shell
    ("deploy/web", b"echo marker-$((6*7)) bash=$BASH_VERSION.\n", b"marker-42 bash=.", 3),  # busybox: sh
])
def test_login_shell_is_the_best_the_image_has(gateway: Gateway, keys: dict[str, SSHKey], target: str,
                                               probe: bytes, seen: bytes, code: int) -> None:
    client = PtyClient(gateway.ssh_argv(f"{NS}/{target}", keys["alice"], tty=True))
    try:
        client.send(probe)
        client.expect(seen)
        client.send(f"exit {code}\n".encode())
        assert client.wait() == code
    finally:
        client.kill()


def test_exec_with_tty_sees_a_terminal(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    proc = gateway.ssh(f"{NS}/deb", "tty; echo \"$TERM\"", keys["alice"], tty=True)
    assert proc.returncode == 0
    lines = proc.stdout.replace(b"\r", b"").splitlines()
    assert lines[0].startswith(b"/dev/pts/")
    no_tty = gateway.ssh(f"{NS}/deb", "tty", keys["alice"])
    assert no_tty.stdout == b"not a tty\n" and no_tty.returncode == 1


def test_break_request_is_refused_and_the_session_goes_on(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    client = PtyClient(gateway.ssh_argv(f"{NS}/deb", keys["alice"], "-o", "EscapeChar=~", tty=True))
    try:
        client.send(b"echo ready-$((1+1))\n")
        client.expect(b"ready-2")
        client.send(b"\r~B")  # OpenSSH's escape: send a BREAK request on the channel
        time.sleep(0.5)
        client.send(b"echo after-$((2+2))\n")
        client.expect(b"after-4")
        client.send(b"exit\n")
        assert client.wait() == 0
    finally:
        client.kill()
