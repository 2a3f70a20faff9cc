"""Programs the gateway runs itself in a container (stty before a terminal session, grep for
the hangup) are taken by checked absolute paths, never from PATH: a user who could upload a
file must not get it run (issue 11, hole 8 and its relatives)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sshserver.grants.access import Grant
from sshserver.grants.labelselector import LabelSelector
from sshserver.sessions import hangup
from sshserver.sessions.execsession import build_command


def _planted(directory: Path, name: str) -> Path:
    marker = directory / f"ran-{name}"
    tool = directory / name
    tool.write_text(f"#!/bin/sh\ntouch {marker}\n")
    tool.chmod(0o755)
    return marker


def test_the_terminal_size_is_never_set_by_a_stty_from_path(tmp_path: Path) -> None:
    marker = _planted(tmp_path, "stty")
    grant = Grant(namespace="ns", name="g", uid="u", user="u", keys=(), selector=LabelSelector(()),
                  shell_command=("/bin/echo", "menu"))
    argv = build_command("shell", None, grant, {"TERM": "xterm"}, size=(100, 30))
    proc = subprocess.run(list(argv), capture_output=True, timeout=10, cwd=tmp_path,
                          env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert proc.stdout == b"menu\n" and not marker.exists()


def test_the_hangup_uses_a_checked_grep_not_one_from_path(tmp_path: Path) -> None:
    marker = _planted(tmp_path, "grep")
    token = hangup.new_token()
    proc = subprocess.run(["/bin/sh", "-c", hangup._SCRIPT, "sh", token], capture_output=True,
                          timeout=30, cwd=tmp_path, env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert proc.returncode == 0 and proc.stdout == f"{token} 0\n".encode(), proc.stderr  # nothing carries it
    assert not marker.exists()
