"""Fuzz harnesses for what a grant holder (or the API server's stream) feeds a session: SFTP
paths, stat output (file names of any bytes), exit statuses, exec WebSocket frames, and
environment variables on their way into the container's argv. Anything but the intended result or error fails."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

import paramiko
import websocket
from hypothesis import given
from hypothesis import strategies as st

from sshserver.grants.access import Grant
from sshserver.grants.envnames import valid_env_name
from sshserver.grants.labelselector import LabelSelector
from sshserver.kube.execstream import ExecStream
from sshserver.kube.exitstatus import TRANSPORT_ERROR, ExitStatus, parse_status
from sshserver.kube.podrunner import Result
from sshserver.sessions.execsession import build_command
from sshserver.sessions.sftpgateway import SHELL, PodFileSystem, Tools, resolve_path
from sshserver.sessions.statoutput import (
    STAT_FORMAT,
    MalformedListing,
    fs_bytes,
    listing_directory,
    listing_prefix,
    parse_fields,
    parse_listing,
    parse_stat,
)
from tests.fuzz.settings import FUZZ

# --- SFTP paths -------------------------------------------------------------------------------

paths = st.one_of(st.text(), st.text(alphabet="-./ \\\n\0a~*$"), st.sampled_from(["-delete", "--", "-", "~", ""]))


class RecordingRunner:
    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def run(self, argv: list[str], stdin: bytes | None = None, limit: int = 0) -> Result:
        self.argvs.append(list(argv))
        out = b"/home/u\n" if argv[:2] == [SHELL, "-c"] and "pwd" in argv[2] else b""
        return Result(ExitStatus(0), out, b"")


TOOLS = Tools({t: f"/bin/{t}" for t in ("stat", "find", "cat", "tail", "dd", "mkdir", "mv", "rm", "rmdir", "readlink",
                                         "ln", "chmod", "chown", "touch", "truncate")})
FIXED = {"-L", "-H", "-c", STAT_FORMAT, "--", "-mindepth", "1", "-maxdepth", "-exec", "{}", "+", "-f", "-s", "sh"}


def _run_every_operation(path: str, other: str) -> RecordingRunner:
    runner = RecordingRunner()
    fs = PodFileSystem(None, runner=runner, tools=TOOLS)  # type: ignore[arg-type]
    attr = paramiko.SFTPAttributes()
    for op in (lambda: fs.list_folder(path), lambda: fs.stat(path), lambda: fs.lstat(path), lambda: fs.remove(path),
               lambda: fs.mkdir(path, attr), lambda: fs.rmdir(path), lambda: fs.readlink(path),
               lambda: fs.rename(path, other), lambda: fs.posix_rename(path, other), lambda: fs.chattr(path, attr),
               lambda: fs.canonicalize(path)):
        op()
    return runner


# The shell text of every operation for harmless paths: a path that is only a piece of this text
# (" && ") says nothing about pasting.
FIXED_SCRIPTS = " ".join(argv[2] for p in ("/neutral", "neutral", ".") for argv in
                         _run_every_operation(p, p).argvs if argv[0] == SHELL)


@FUZZ
@given(paths, paths)
def test_fuzz_sftp_paths_reach_tools_only_as_absolute_operands(path: str, other: str) -> None:
    resolved = resolve_path("/home/u", path)
    assert resolved is None or (resolved.startswith("/") and "\0" not in resolved)
    runner = _run_every_operation(path, other)
    for argv in runner.argvs:
        assert argv[0].startswith("/")
        if argv[0] == SHELL:
            script, operands = argv[2], argv[4:]
            assert script.isascii() and (len(path) < 4 or path not in script or path in FIXED_SCRIPTS)
        else:
            operands = argv[1:]
        for word in operands:
            assert word in FIXED or word.startswith("/"), (argv, word)


# --- stat output ------------------------------------------------------------------------------

numbers = st.one_of(st.integers(-(1 << 70), 1 << 70).map(str), st.text(alphabet="0123456789-+_ xaf", max_size=30))
field_texts = st.one_of(st.text(), st.builds(lambda f: " ".join(f), st.lists(numbers, min_size=5, max_size=8)))
# What a file name can hold: any byte but `/` and NUL.
names = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"/", b"").replace(b"\0", b"")).filter(
    lambda b: b not in (b"", b".", b".."))
name_bytes = st.sampled_from([b"\n", b" ", b"81a4 5 0 0 0 0 ", b"\xff", b"a", b"\t"])
tricky_names = st.lists(name_bytes, min_size=1, max_size=8).map(b"".join).filter(lambda b: b not in (b".", b".."))
directories = st.one_of(st.just("/"), st.text(alphabet="/.a\n 81", max_size=20).map(lambda t: "/" + t))


def _packs(attr: paramiko.SFTPAttributes) -> None:
    attr._pack(paramiko.Message())  # what the SFTP server sends: every field fits its wire type


@FUZZ
@given(field_texts)
def test_fuzz_stat_fields_parse_or_give_none_and_always_pack(fields: str) -> None:
    attr = parse_fields(fs_bytes(fields), "n")
    if attr is not None:
        _packs(attr)


@FUZZ
@given(directories, st.lists(st.tuples(st.one_of(names, tricky_names), st.integers(0, (1 << 64) - 1),
                                       st.integers(0, (1 << 32) - 1)), max_size=8, unique_by=lambda t: t[0]))
def test_fuzz_listing_names_round_trip_exactly(where: str, files: list[tuple[bytes, int, int]]) -> None:
    """stat's output for any names (newlines, forged records, bytes that are not UTF-8) gives
    back exactly these entries: none forged, none hidden."""
    prefix = listing_prefix(listing_directory(where))
    out = b"".join(b"%x %d 0 0 %d %d " % (0o100644, size, mtime, mtime) + prefix + name + b"\n"
                   for name, size, mtime in files)
    got = [(fs_bytes(a.filename), a.st_size, a.st_mtime) for a in parse_listing(out, prefix)]
    assert got == [(name, size, mtime) for name, size, mtime in files]
    for cut in range(len(out)):  # cut at a limit: whole records only, in order
        partial = [(fs_bytes(a.filename), a.st_size, a.st_mtime) for a in parse_listing(out[:cut], prefix, False)]
        assert partial == got[:len(partial)]


@FUZZ
@given(st.one_of(st.binary(), st.lists(st.one_of(st.binary(max_size=8), st.sampled_from(
    [b"\n", b" ", b"/d/", b"81a4 1 0 0 0 0 ", b"\0"])), max_size=12).map(b"".join)), st.booleans())
def test_fuzz_any_listing_output_gives_entries_or_malformed(out: bytes, complete: bool) -> None:
    try:
        for attr in parse_listing(out, b"/d/", complete):
            assert attr.filename and "/" not in attr.filename and "\0" not in attr.filename
            _packs(attr)
    except MalformedListing:
        pass


@FUZZ
@given(st.binary(max_size=60), names)
def test_fuzz_a_single_stat_is_exactly_its_path_or_none(out: bytes, name: bytes) -> None:
    path = "/d/" + name.decode("utf-8", "surrogateescape")
    attr = parse_stat(out, path)
    if attr is not None:
        assert out.endswith(b" " + fs_bytes(path) + b"\n") and fs_bytes(attr.filename) == name
        _packs(attr)


# --- exit status ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
statuses = st.fixed_dictionaries(
    {"status": st.sampled_from(["Success", "Failure", 1, None]), "reason": st.sampled_from(["NonZeroExitCode", "x"])},
    optional={"message": json_values, "details": st.one_of(json_values, st.fixed_dictionaries({"causes": st.lists(
        st.one_of(json_values, st.fixed_dictionaries({"reason": st.just("ExitCode"), "message": json_values})))}))}
)


@FUZZ
@given(st.one_of(st.binary(), json_values.map(lambda v: json.dumps(v).encode()),
                 statuses.map(lambda v: json.dumps(v).encode())))
def test_fuzz_exit_status_is_always_a_result(payload: bytes) -> None:
    result = parse_status(payload)
    assert isinstance(result, ExitStatus) and 0 <= result.code <= 255
    assert result.error is None or (isinstance(result.error, str) and result.code in (TRANSPORT_ERROR, 127))


# --- the exec WebSocket frame reader ------------------------------------------------------------

def _frame(opcode: int, payload: bytes, fin: bool, masked: bool, length: int | None) -> bytes:
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (opcode & 0x0F)])
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n & ((1 << 64) - 1))
    return head + (b"\0\0\0\0" if masked else b"") + payload


frames = st.builds(_frame, st.integers(0, 15), st.binary(max_size=300), st.booleans(), st.booleans(),
                   st.one_of(st.none(), st.integers(0, (1 << 64) - 1)))


@FUZZ
@given(st.one_of(st.binary(max_size=2000), st.lists(frames, max_size=6).map(b"".join)))
def test_fuzz_exec_frames_end_quietly_on_any_input(data: bytes) -> None:
    ours, theirs = socket.socketpair()
    try:
        ours.settimeout(5)
        theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)  # the server is done; pongs it is sent go unread
        ws = websocket.WebSocket(skip_utf8_validation=True)
        ws.sock, ws.connected = ours, True
        stream = ExecStream(ws, "v5.channel.k8s.io")
        for channel, payload in stream.frames():  # only (channel, bytes) pairs, then the end
            assert 0 <= channel <= 255 and isinstance(payload, bytes)
        stream.close()
    finally:
        ours.close()
        theirs.close()


# --- environment variables into the container's argv ----------------------------------------------

names = st.one_of(st.from_regex(r"LC_[A-Z0-9_]{0,8}", fullmatch=True), st.text(min_size=0, max_size=12),
                  st.text(alphabet="LC_;$(){}`'\" \n=|&<>", max_size=12))
values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40)
GRANT = Grant(namespace="ns", name="g", uid="u", user="u", keys=(), selector=LabelSelector(()))


@FUZZ
@given(st.dictionaries(names, values, max_size=6), st.sampled_from(["exec", "shell"]),
       st.one_of(st.none(), st.tuples(st.integers(1, 500), st.integers(1, 500))))
def test_fuzz_env_never_becomes_shell_text(env: dict[str, str], kind: str, size: tuple[int, int] | None) -> None:
    argv = build_command(kind, "env -0" if kind == "exec" else None, GRANT, env, size, token="t0k")
    valid = {k: v for k, v in env.items() if valid_env_name(k)}
    # The script depends only on how many variables there are: none of their bytes is in it.
    stand_in = {f"LC_STANDIN{i:02d}": "" for i in range(len(valid))}
    assert argv[2] == build_command(kind, "x" if kind == "exec" else None, GRANT, stand_in, size, token="t")[2]
    assert argv[2].isascii()
    if kind != "exec":
        return
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=10, env={"PATH": os.environ["PATH"]})
        assert proc.returncode == 0, proc.stderr
        assert not list(Path(cwd).iterdir())  # nothing was run that could write here
    seen = dict(item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item)
    for name, value in valid.items():
        assert seen.get(name) == value
    assert seen.get("PODSSH_SESSION") == "t0k"
