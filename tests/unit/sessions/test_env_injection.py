"""Hole 1 of issue 11: environment variable names and values from the client never become shell
code. The names are refused at the env hook and again where the command is built, and the
argv the container gets carries names and values as arguments, never in the script text."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from sshserver.config.settings import GatewaySettings
from sshserver.grants.access import Grant
from sshserver.grants.envnames import valid_env_name
from sshserver.grants.labelselector import LabelSelector
from sshserver.sessions.execsession import build_command
from sshserver.ssh.connection import Connection
from sshserver.ssh.hooks import GatewayServer

ATTACK = "LC_X;touch pwned;echo${IFS}X;exit;LC_Y=2"  # what `ssh -o SetEnv=…` sends verbatim
HOSTILE_NAMES = [ATTACK, "LC_A\n", "LC_$(touch pwned)", "LC_`touch pwned`", "LC_A B", "LC_A=B", "", "1LC",
                 "LC_é", "LC_A;", "LC_A\rB", "LC_\x00", "LC_" + "A" * 300]
HOSTILE_VALUES = ["a b$(touch pwned)", "`touch pwned`", "'; touch pwned; '", '"; touch pwned; "', "\\", "$HOME",
                  "line1\nline2\n", " lead and trail ", "=", "é ✓ \u2028", "-n", "${IFS}x", "%s%n"]


def grant(**kw: object) -> Grant:
    return Grant(namespace="ns", name="g", uid="u", user="u", keys=(), selector=LabelSelector(()), **kw)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_names_that_are_not_identifiers_are_refused(name: str) -> None:
    assert not valid_env_name(name)
    assert not grant(env=frozenset({name})).env_allowed(name)  # not even when the grant lists it


@pytest.mark.parametrize("name", ["LC_ALL", "LC_FOO_2", "TERM", "LANG", "_X", "DEBUG"])
def test_identifiers_pass_where_the_grant_allows(name: str) -> None:
    assert valid_env_name(name)
    assert grant(env=frozenset({"DEBUG", "_X"})).env_allowed(name)
    assert not grant().env_allowed("DEBUG")


def _server(grants: tuple[Grant, ...]) -> tuple[GatewayServer, Connection]:
    conn = Connection("127.0.0.1:1", grants=grants)
    return GatewayServer(SimpleNamespace(settings=GatewaySettings()), conn), conn  # type: ignore[arg-type]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_env_hook_refuses_hostile_names(name: str) -> None:
    server, conn = _server((grant(env=frozenset({name})),))
    channel = SimpleNamespace(get_id=lambda: 0)
    assert server.check_channel_env_request(channel, name.encode(), b"1") is False  # type: ignore[arg-type]
    assert conn.channel_state(0).env == {}
    assert server.check_channel_env_request(channel, b"LC_FOO", b"a b$(x)") is True  # type: ignore[arg-type]
    assert conn.channel_state(0).env == {"LC_FOO": "a b$(x)"}


def _run(argv: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """The argv exactly as the container would get it, run by the local /bin/sh."""
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, timeout=10, check=False,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


@pytest.mark.parametrize("kind", ["exec", "shell-command", "shell"])
def test_hostile_env_never_reaches_the_script_and_never_runs(kind: str, tmp_path: Path) -> None:
    env = {name: "1" for name in HOSTILE_NAMES}
    env.update({f"LC_V{i}": value for i, value in enumerate(HOSTILE_VALUES)})
    env["TERM"] = "xterm;touch pwned"
    probe = "env > seen"
    if kind == "exec":
        argv = build_command("exec", probe, grant(), env, size=(80, 24), token="0123abcd")
    elif kind == "shell-command":
        argv = build_command("shell", None, grant(shell_command=("/bin/sh", "-c", probe)), env, size=(80, 24))
    else:
        argv = build_command("shell", None, grant(), env)
    script = argv[2]
    for text in [*HOSTILE_NAMES, *HOSTILE_VALUES, "touch", "pwned", "xterm"]:
        assert len(text) < 3 or text not in script, text
    assert script.isascii()
    # The script is the same whatever the values: they are arguments, not text.
    blank = {k: "" for k in env}
    if kind == "exec":
        assert build_command("exec", probe, grant(), blank, size=(80, 24), token="0123abcd")[2] == script
    if kind == "shell":  # a login shell with stdin at EOF: it starts, reads nothing and ends
        subprocess.run(list(argv), cwd=tmp_path, input=b"env > seen\n", capture_output=True, timeout=10,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)})
    else:
        assert _run(argv, tmp_path).returncode == 0
    assert not (tmp_path / "pwned").exists()
    seen = (tmp_path / "seen").read_text()
    for i, value in enumerate(HOSTILE_VALUES):
        if "\n" not in value:
            assert f"LC_V{i}={value}\n" in seen
    assert "TERM=xterm;touch pwned\n" in seen
    assert "LC_X" not in seen and "LC_Y" not in seen


def test_values_arrive_byte_exact(tmp_path: Path) -> None:
    env = {f"LC_V{i}": v for i, v in enumerate(HOSTILE_VALUES)}
    script = 'for n in ' + " ".join(env) + '; do eval "printf %s \\"\\${$n}\\""; printf "\\0"; done'
    out = _run(build_command("exec", script, grant(), env, token="feed"), tmp_path).stdout
    assert out.split(b"\0")[:-1] == [v.encode() for v in env.values()]


def test_more_than_nine_variables_and_the_token(tmp_path: Path) -> None:
    env = {f"LC_N{i:02d}": f"v{i}" for i in range(15)}
    argv = build_command("exec", 'echo "$LC_N00 $LC_N09 $LC_N14 $PODSSH_SESSION $0 $#"', grant(), env, token="t0k")
    assert _run(argv, tmp_path).stdout == b"v0 v9 v14 t0k /bin/sh 0\n"
