from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from sshserver.grants.access import Grant
from sshserver.grants.labelselector import LabelSelector
from sshserver.kube.exitstatus import parse_status
from sshserver.sessions.execsession import build_command
from sshserver.ssh.throttle import FailureThrottle


def status(**fields: object) -> bytes:
    return json.dumps({"metadata": {}, **fields}).encode()


def test_success_is_zero() -> None:
    assert parse_status(status(status="Success")).code == 0


@pytest.mark.parametrize("code", [1, 7, 127, 255])
def test_non_zero_exit_code(code: int) -> None:
    payload = status(status="Failure", reason="NonZeroExitCode", message=f"exit code {code}",
                     details={"causes": [{"reason": "ExitCode", "message": str(code)}]})
    result = parse_status(payload)
    assert (result.code, result.error) == (code, None)


def test_runtime_errors() -> None:
    missing = parse_status(status(status="Failure", reason="InternalError",
                                  message='exec: "nope": executable file not found in $PATH'))
    assert missing.code == 127 and "not found" in (missing.error or "")
    other = parse_status(status(status="Failure", message="container not running"))
    assert other.code == 255 and other.error == "container not running"
    assert parse_status(b"\xff{garbage").code == 255


def grant(**kw: object) -> Grant:
    return Grant(namespace="ns", name="g", uid="u", user="u", keys=(), selector=LabelSelector(()), **kw)


def run(argv: tuple[str, ...]) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False).stdout


def test_exec_command_runs_exactly_with_env() -> None:
    cmd = "printf '%s|' \"$FOO\" \"$0\" 'a b'; echo"
    assert run(build_command("exec", cmd, grant(), {})) == "|/bin/sh|a b|\n"
    assert subprocess.run(list(build_command("exec", "exit 7", grant(), {}))).returncode == 7
    argv = build_command("exec", cmd, grant(), {"FOO": "it's $HOME"})
    assert run(argv) == "it's $HOME|/bin/sh|a b|\n"


def test_a_terminal_gets_its_size_before_the_command_runs() -> None:
    argv = build_command("exec", "stty size", grant(), {"TERM": "xterm"}, size=(111, 33))
    assert argv[:2] == ("/bin/sh", "-c")
    assert argv[2].index('"$stty" cols 111 rows 33 2>/dev/null)') < argv[2].index('/bin/sh -c "$1"')
    shell = build_command("shell", None, grant(), {"TERM": "xterm"}, size=(80, 24))
    assert shell[2].index('"$stty" cols 80 rows 24') < shell[2].index("bash -l")
    # Without a terminal, nothing is added; without a stty in the image, the command still runs.
    assert "stty" not in build_command("exec", "true", grant(), {})[2]
    no_stty = subprocess.run(["env", "PATH=/nonexistent", *build_command("exec", "exit 3", grant(), {}, size=(1, 1))],
                             capture_output=True)
    assert (no_stty.returncode, no_stty.stderr) == (3, b"")


def test_shell_command_of_the_grant() -> None:
    g = grant(shell_command=("/bin/echo", "hi there"))
    assert build_command("shell", None, g, {}) == ("/bin/echo", "hi there")
    assert run(build_command("shell", None, g, {"LANG": "C"})) == "hi there\n"
    default = build_command("shell", None, grant(), {})
    assert default[:2] == ("/bin/sh", "-c") and "bash -l" in default[2]
    assert shlex.split(default[2])


def test_failure_throttle_doubles_after_free_attempts() -> None:
    t = FailureThrottle(base=0.5, cap=4.0, free=2)
    delays = []
    for _ in range(7):
        delays.append(t.delay("1.2.3.4"))
        t.failed("1.2.3.4")
    assert delays == [0, 0, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert t.delay("5.6.7.8") == 0
    t.succeeded("1.2.3.4")
    assert t.delay("1.2.3.4") == 0
