"""Sessions through a debug container: SFTP rooted at the target's file system, the "no shell"
refusal and its hint, and the choice of image by PODSSH_DEBUG_IMAGE."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paramiko
import pytest

from sshserver.grants.access import DEBUG_IMAGE_ENV, Debug
from sshserver.kube.exitstatus import ExitStatus
from sshserver.sessions.execsession import DEBUG_HINT, ExecSession, no_shell, no_shell_message
from sshserver.sessions.lifecycle import SessionRefused
from sshserver.sessions.sftpgateway import PodFileSystem, probe
from tests.unit.sessions.localrunner import LocalRunner

RUNTIME_NOT_FOUND = ExitStatus(127, 'exec: "/bin/sh": stat /bin/sh: no such file or directory: unknown')


def rooted(tmp_path: Path) -> tuple[PodFileSystem, Path, LocalRunner]:
    """A PodFileSystem whose root stands for /proc/1/root: `target` is the target's file system."""
    target = tmp_path / "target"
    (target / "etc").mkdir(parents=True)
    (target / "etc" / "app.conf").write_bytes(b"answer=42\n")
    (tmp_path / "outside").write_bytes(b"not the target's\n")
    runner = LocalRunner(tmp_path)
    tools = probe(runner, want_server=False)  # type: ignore[arg-type]
    return PodFileSystem(None, runner=runner, tools=tools, root=str(target)), target, runner


def test_sftp_in_a_debug_container_sees_and_writes_the_targets_paths(tmp_path: Path) -> None:
    fs, target, runner = rooted(tmp_path)
    assert fs.canonicalize(".") == "/"  # home is the target's root, not the debug image's
    assert sorted(a.filename for a in fs.list_folder("/")) == ["etc"]
    attr = fs.stat("/etc/app.conf")
    assert not isinstance(attr, int) and attr.st_size == 10
    handle = fs.open("/etc/app.conf", os.O_RDONLY, paramiko.SFTPAttributes())
    assert not isinstance(handle, int) and handle.read(0, 100) == b"answer=42\n"
    handle.close()
    out = fs.open("/etc/new.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, paramiko.SFTPAttributes())
    assert not isinstance(out, int) and out.write(0, b"\x00\x01bytes") == paramiko.sftp.SFTP_OK
    out.close()
    assert (target / "etc" / "new.bin").read_bytes() == b"\x00\x01bytes"
    # Every path a tool got is under the root.
    paths = [a for argv in runner.argvs for a in argv if a.startswith("/") and "etc" in a]
    assert paths and all(p.startswith(str(target)) for p in paths)


@pytest.mark.parametrize("path", ["/../outside", "../../outside", "/etc/../../outside"])
def test_no_path_climbs_out_of_the_root(tmp_path: Path, path: str) -> None:
    fs, _, _ = rooted(tmp_path)
    assert fs.stat(path) == paramiko.sftp.SFTP_NO_SUCH_FILE


def test_without_a_root_paths_are_unchanged(tmp_path: Path) -> None:
    runner = LocalRunner(tmp_path)
    fs = PodFileSystem(None, runner=runner, tools=probe(runner, want_server=False))  # type: ignore[arg-type]
    assert fs._path("/etc/passwd") == "/etc/passwd"


def test_the_runtimes_not_found_is_no_shell_but_a_commands_127_is_not() -> None:
    assert no_shell(RUNTIME_NOT_FOUND)
    assert not no_shell(ExitStatus(127))


def test_no_shell_hints_at_spec_debug_only_when_the_grant_lacks_it() -> None:
    without = SimpleNamespace(debug=None)
    with_debug = SimpleNamespace(debug=Debug(("podssh.local/busybox:1.35",)))
    text = no_shell_message("app", RUNTIME_NOT_FOUND, without)  # type: ignore[arg-type]
    assert text.startswith("no shell in this container (app: ") and text.endswith(DEBUG_HINT)
    assert "spec.debug" in DEBUG_HINT
    assert DEBUG_HINT not in no_shell_message("app", RUNTIME_NOT_FOUND, with_debug)  # type: ignore[arg-type]


def _asking(image: str | None) -> Any:
    """An ExecSession as far as _requested_debug_image reads it: the channel's env requests."""
    session = ExecSession.__new__(ExecSession)
    session._requests = SimpleNamespace(env={} if image is None else {DEBUG_IMAGE_ENV: image})  # type: ignore[assignment]
    return session


GRANT = SimpleNamespace(ref="shop/alice", debug=Debug(("podssh.local/busybox:1.35", "podssh.local/debian:bookworm")))


def test_the_debug_image_env_picks_an_image_of_the_list_or_the_default() -> None:
    assert _asking(None)._requested_debug_image(GRANT) is None
    assert _asking("")._requested_debug_image(GRANT) == "podssh.local/busybox:1.35"
    assert _asking("podssh.local/debian:bookworm")._requested_debug_image(GRANT) == "podssh.local/debian:bookworm"


def test_an_image_not_in_the_list_is_refused_by_name() -> None:
    with pytest.raises(SessionRefused, match=r"debug image 'evil/tools:1' is not in spec.debug.images of grant "
                                             r"shop/alice \(podssh.local/busybox:1.35, podssh.local/debian"):
        _asking("evil/tools:1")._requested_debug_image(GRANT)


def test_asking_for_a_debug_container_without_spec_debug_is_refused() -> None:
    with pytest.raises(SessionRefused, match=r"grant shop/alice does not allow debug containers \(spec.debug\)"):
        _asking("")._requested_debug_image(SimpleNamespace(ref="shop/alice", debug=None))
