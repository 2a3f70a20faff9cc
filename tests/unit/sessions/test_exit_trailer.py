"""The exit-status line the wrapper writes to stderr: stripped wherever chunks split it, the
user's bytes untouched, and the built script runs as the container's shell would run it."""

from __future__ import annotations

import subprocess

from hypothesis import given
from hypothesis import strategies as st

from sshserver.sessions.execsession import build_command
from sshserver.sessions.exittrailer import TrailerFilter, new_token
from tests.fuzz.settings import FUZZ

TOKEN = new_token()


def run_filter(chunks: list[bytes]) -> tuple[bytes, int | None]:
    f = TrailerFilter(TOKEN)
    out = b"".join(f.feed(c) for c in chunks) + f.flush()
    return out, f.code


def test_the_line_is_stripped_and_its_code_kept() -> None:
    out, code = run_filter([b"warning: x\n", f"{TOKEN}:3\n".encode()])
    assert out == b"warning: x\n" and code == 3


def test_a_line_split_anywhere_is_still_found() -> None:
    whole = b"err" + f"{TOKEN}:127\n".encode()
    for i in range(len(whole) + 1):
        assert run_filter([whole[:i], whole[i:]]) == (b"err", 127)


def test_a_look_alike_is_the_users_and_is_delivered() -> None:
    almost = f"{TOKEN}:12x\n{TOKEN[:-1]}".encode()
    out, code = run_filter([almost])
    assert out == almost and code is None


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 255), st.lists(st.integers(0, 400), max_size=5))
def test_any_user_bytes_survive_and_the_code_is_found(user: bytes, code: int, cuts: list[int]) -> None:
    stream = user + f"{TOKEN}:{code}\n".encode()
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert run_filter(chunks) == (user, code)


def test_the_wrapper_reports_the_status_on_stderr_and_exits_with_it(tmp_path) -> None:
    from types import SimpleNamespace

    grant = SimpleNamespace(shell_command=None)
    argv = build_command("exec", "echo out; echo err >&2; exit 7", grant, {}, trailer=TOKEN)  # type: ignore[arg-type]
    proc = subprocess.run(list(argv), capture_output=True)
    assert proc.returncode == 7
    assert proc.stdout == b"out\n"
    assert proc.stderr == f"err\n{TOKEN}:7\n".encode()
