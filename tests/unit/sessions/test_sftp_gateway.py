"""The gateway-served SFTP (issue 11, holes 4 and 8, and `find` option injection), driven by
paramiko's SFTP client through GatewaySFTPServer over a local socket pair, with every tool
run on this machine by LocalRunner."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_NAME,
    CMD_OPENDIR,
    CMD_READ,
    CMD_READDIR,
    CMD_WRITE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
)

from sshserver.kube.exitstatus import ExitStatus
from sshserver.kube.podrunner import Result
from sshserver.sessions.sftpgateway import (
    MAX_FOLDERS,
    MAX_HANDLES,
    MAX_READ,
    PROBE,
    SFTP_SERVERS,
    SHELL,
    SYSTEM_DIRS,
    TOOLS,
    GatewaySFTPServer,
    PendingBudget,
    PodFileSystem,
    PodWriteHandle,
    Tools,
    probe,
    resolve_path,
)
from tests.support.inproc import linked_transports
from tests.unit.sessions.localrunner import LocalRunner


@pytest.fixture(scope="module")
def host_key() -> paramiko.RSAKey:
    return paramiko.RSAKey.generate(2048)


@dataclass
class Pair:
    sftp: paramiko.SFTPClient
    runner: LocalRunner
    home: Path
    client: paramiko.Transport
    server: paramiko.Transport


@pytest.fixture
def pair(tmp_path: Path, host_key: paramiko.RSAKey) -> Iterator[Pair]:
    home = tmp_path / "home"
    home.mkdir()
    runner = LocalRunner(home)
    tools = probe(runner, want_server=False)  # type: ignore[arg-type]

    def serve_sftp(server: paramiko.Transport) -> None:
        server.set_subsystem_handler("sftp", GatewaySFTPServer, PodFileSystem, runner=runner, tools=tools)

    with linked_transports(host_key, serve_sftp) as (client, server):
        sftp = paramiko.SFTPClient.from_transport(client)
        assert sftp is not None
        yield Pair(sftp, runner, home, client, server)


def test_the_probe_finds_every_tool_by_absolute_path_in_system_directories(tmp_path: Path) -> None:
    tools = probe(LocalRunner(tmp_path), want_server=False)  # type: ignore[arg-type]
    assert set(tools.paths) == set(TOOLS) and tools.shell_trusted and tools.sftp_server is None
    assert all(p.rsplit("/", 1)[0] in SYSTEM_DIRS for p in tools.paths.values())
    with_server = probe(LocalRunner(tmp_path), want_server=True)  # type: ignore[arg-type]
    assert with_server.sftp_server in (None, *SFTP_SERVERS)
    if os.path.exists("/usr/lib/openssh/sftp-server"):
        assert with_server.sftp_server == "/usr/lib/openssh/sftp-server"


def _probe(candidates: list[str], user: int | None = None, shell: str = SHELL) -> list[str]:
    out = subprocess.run([shell, "-c", PROBE, "sh", *candidates], capture_output=True, check=True, timeout=10,
                         user=user).stdout
    return out.decode().splitlines()


@pytest.mark.parametrize("shell", [s for s in (SHELL, shutil.which("busybox")) if s])
def test_the_probe_refuses_what_the_sessions_user_could_have_written(shell: str) -> None:
    shell_argv = [shell, "sh"] if shell.endswith("busybox") else [shell]
    run_shell = shell_argv[0]
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        for name in ("mine", "theirs", "open"):
            (base / name).mkdir(mode=0o755)
            tool = base / name / "tool"
            tool.write_text("#!/bin/sh\necho run\n")
            tool.chmod(0o755)
        (base / "open").chmod(0o777)
        candidates = [str(base / n / "tool") for n in ("mine", "theirs", "open")] + ["/bin/sh", "/nonexistent/x"]
        if shell.endswith("busybox"):
            def run(user: int | None = None) -> list[str]:
                out = subprocess.run([run_shell, "sh", "-c", PROBE, "sh", *candidates], capture_output=True,
                                     timeout=10, user=user).stdout
                return out.decode().splitlines()
        else:
            def run(user: int | None = None) -> list[str]:
                return _probe(candidates, user, run_shell)
        if os.geteuid() == 0:
            # Root can write anything: what counts is that root owns the file and the directories.
            os.chown(base / "theirs" / "tool", 65534, 65534)
            assert run() == [str(base / "mine" / "tool"), str(base / "open" / "tool"), "/bin/sh"]
            # Another user: only files and directories that user cannot write.
            os.chown(base / "theirs", 65534, 65534)
            assert run(65534) == ["/bin/sh"]  # /tmp above base is writable by everyone
        else:
            assert run() == ["/bin/sh"]  # our own files, or under the world-writable /tmp
    finally:
        shutil.rmtree(base)


def test_every_tool_runs_by_its_absolute_path(pair: Pair) -> None:
    (pair.home / "f").write_bytes(b"data")
    pair.sftp.listdir(".")
    pair.sftp.stat("f")
    assert pair.sftp.open("f").read() == b"data"
    with pair.sftp.open("g", "w") as g:
        g.write(b"x")
    pair.sftp.chmod("g", 0o600)
    pair.sftp.rename("g", "h")
    pair.sftp.mkdir("d")
    pair.sftp.rmdir("d")
    pair.sftp.remove("h")
    for argv in pair.runner.argvs:
        assert argv[0].startswith("/"), argv
        if argv[0] == SHELL:  # scripts name their tools as arguments, never by PATH
            assert not any(f" {t} " in f" {argv[2]} " for t in TOOLS if t not in ("sh",)), argv[2]
    listing = next(a for a in pair.runner.argvs if a[0].endswith("/find"))
    assert listing[listing.index("-exec") + 1].endswith("/stat")


@pytest.mark.parametrize("path", ["-delete", "-fprint", "--help", "-exec"])
def test_a_path_is_never_an_option(pair: Pair, path: str) -> None:
    for name in ("keep1", "keep2"):
        (pair.home / name).write_text("x")
    with pytest.raises(IOError):
        pair.sftp.listdir(path)
    with pytest.raises(IOError):
        pair.sftp.stat(path)
    assert sorted(os.listdir(pair.home)) == ["keep1", "keep2"]
    finds = [a for a in pair.runner.argvs if a[0].endswith("/find")]
    assert finds and all(a[1] == "-H" and a[2].startswith("/") for a in finds)


def test_a_rooted_session_refuses_every_path_in_proc(tmp_path: Path, host_key: paramiko.RSAKey,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """In a debug container /proc/1/root/proc/self/root is the debug container's own root: an
    sftp user must not reach it (nor anything else in /proc), whatever way the path is spelt."""
    target = tmp_path / "target"
    (target / "proc" / "self" / "root" / "bin").mkdir(parents=True)  # stands for the debug image's tools
    (target / "proc" / "self" / "root" / "bin" / "stat").write_bytes(b"the debug image's stat")
    (target / "procfs").mkdir()
    (target / "procfs" / "f").write_bytes(b"ok")
    runner = LocalRunner(tmp_path)
    tools = probe(runner, want_server=False)  # type: ignore[arg-type]

    def serve_sftp(server: paramiko.Transport) -> None:
        server.set_subsystem_handler("sftp", GatewaySFTPServer, PodFileSystem, runner=runner, tools=tools,
                                     root=str(target))

    with linked_transports(host_key, serve_sftp) as (client, _):
        sftp = paramiko.SFTPClient.from_transport(client)
        assert sftp is not None
        with pytest.raises(PermissionError), sftp.open("/proc/self/root/bin/stat", "w") as f:
            f.write(b"#!/bin/sh\n")
        for path in ("/proc", "proc/self/root/bin", "/etc/../proc/self/root", "//proc/self", "/proc/."):
            with pytest.raises(PermissionError):
                sftp.listdir(path)
        with pytest.raises(PermissionError):
            sftp.stat("/proc/self/root/bin/stat")
        with pytest.raises(PermissionError):
            sftp.rename("/procfs/f", "/proc/self/root/bin/stat")
        with pytest.raises(PermissionError):
            sftp.symlink("/bin", "/proc/self/root/x")
        assert sftp.open("/procfs/f").read() == b"ok"  # a name that only begins with "proc" is fine
    assert (target / "proc" / "self" / "root" / "bin" / "stat").read_bytes() == b"the debug image's stat"
    assert (target / "procfs" / "f").exists()
    assert "sftp_path_refused" in caplog.text


def test_relative_paths_are_taken_from_home_and_never_start_with_a_dash() -> None:
    assert resolve_path("/home/u", "-delete") == "/home/u/-delete"
    assert resolve_path("/home/u", "/etc") == "/etc"
    assert resolve_path("/home/u", "") == "/home/u"
    assert resolve_path("/", "a\0b") is None


def test_a_read_returns_at_most_256_kib_whatever_the_client_asks(pair: Pair) -> None:
    (pair.home / "big").write_bytes(os.urandom(MAX_READ * 3))
    f = pair.sftp.open("big")
    t, msg = pair.sftp._request(CMD_READ, f.handle, paramiko.sftp.int64(0), 256 * 1024 * 1024)
    assert t == CMD_DATA
    data = msg.get_binary()
    assert len(data) == MAX_READ and data == (pair.home / "big").read_bytes()[:MAX_READ]
    f.close()
    assert pair.sftp.open("big").read() == (pair.home / "big").read_bytes()  # ordinary clients see no change


def test_open_handles_per_session_are_capped(pair: Pair) -> None:
    (pair.home / "f").write_text("x")
    folders = [pair.sftp._request(CMD_OPENDIR, ".")[1].get_binary() for _ in range(MAX_FOLDERS)]
    with pytest.raises(IOError, match="too many open directories"):
        pair.sftp.listdir(".")
    for handle in folders:
        pair.sftp._request(CMD_CLOSE, handle)
    handles = [pair.sftp.open("f") for _ in range(MAX_HANDLES)]
    with pytest.raises(IOError, match="too many open files"):
        pair.sftp.open("f")
    with pytest.raises(IOError, match="too many open files"):
        pair.sftp.listdir(".")  # a directory handle counts too
    handles.pop().close()
    pair.sftp.open("f").close()
    for h in handles:
        h.close()


def test_an_oversized_message_ends_the_session(pair: Pair) -> None:
    f = pair.sftp.open("f", "w")
    with pytest.raises((EOFError, OSError, paramiko.SSHException)):
        pair.sftp._request(CMD_WRITE, f.handle, paramiko.sftp.int64(0), b"x" * (1024 * 1024))
    assert (pair.home / "f").read_bytes() == b""  # nothing of it was written


class _Writer:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> Result:
        return Result(ExitStatus(0), b"", b"")


class _FakeRunner:
    def __init__(self) -> None:
        self.writers: list[_Writer] = []

    def writer(self, argv: list[str]) -> _Writer:
        self.writers.append(_Writer())
        return self.writers[-1]


def test_out_of_order_writes_share_one_budget_per_session() -> None:
    runner, budget = _FakeRunner(), PendingBudget(limit=100)
    tools = Tools({"dd": "/bin/dd", "cat": "/bin/cat"})
    a = PodWriteHandle(runner, tools, "/a", os.O_WRONLY, budget)  # type: ignore[arg-type]
    b = PodWriteHandle(runner, tools, "/b", os.O_WRONLY, budget)  # type: ignore[arg-type]
    assert a.write(0, b"a" * 10) == SFTP_OK
    assert b.write(0, b"b" * 10) == SFTP_OK
    assert a.write(60, b"x" * 60) == SFTP_OK  # held: the gap 10..60 is not filled yet
    assert b.write(50, b"y" * 41) == SFTP_OP_UNSUPPORTED  # 60 + 41 > 100, though b holds nothing
    assert a.write(10, b"a" * 50) == SFTP_OK  # fills the gap: the held bytes go out
    assert budget.used == 0 and runner.writers[0].data == b"a" * 60 + b"x" * 60
    assert b.write(50, b"y" * 40) == SFTP_OK and budget.used == 40
    b.close()  # the gap 10..50 never came: what was held is dropped and given back
    assert budget.used == 0


@pytest.mark.parametrize("shell", [s for s in (SHELL, shutil.which("busybox")) if s])
def test_a_tool_the_sessions_user_owns_is_refused_even_read_only(shell: str) -> None:
    """Mode 0555 is no protection from its owner: SETSTAT (the gateway's own chmod) would make
    it writable again. A tool counts only if the session's user neither owns nor can write it.
    (Runs as root, like the whole suite: it makes files owned by another user.)"""
    base = Path(tempfile.mkdtemp(dir="/opt" if Path("/opt").is_dir() else "/"))
    try:
        base.chmod(0o755)
        for name in ("owned", "other"):
            tool = base / f"{name}-tool"
            tool.write_text("#!/bin/sh\necho run\n")
            tool.chmod(0o555)
        os.chown(base / "owned-tool", 65534, 65534)
        argv = [shell, "sh"] if shell.endswith("busybox") else [shell]
        out = subprocess.run([*argv, "-c", PROBE, "sh", str(base / "owned-tool"), str(base / "other-tool")],
                             capture_output=True, timeout=10, user=65534).stdout.decode().splitlines()
        assert out == [str(base / "other-tool")]
    finally:
        shutil.rmtree(base)


def test_a_listing_keeps_a_bounded_number_of_entries(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsed entries cost ~14x their bytes: a huge directory (or a pod forging stat output)
    must not make one listing hold hundreds of MiB."""
    import sshserver.sessions.sftpgateway as sftp_local

    monkeypatch.setattr(sftp_local, "MAX_LISTING_ENTRIES", 5)
    for i in range(12):
        (pair.home / f"f{i}").write_text("x")
    assert len(pair.sftp.listdir(".")) == 5


# --- file names of any bytes -------------------------------------------------------------------

# Each would have been an entry that does not exist, or none at all, in a line-based listing:
# stat prints names raw, and busybox has no way to quote them.
STRANGE_NAMES = [
    b"a\n81a4 5 0 0 0 0 forged",  # a forged record ("forged", 5 bytes) after the newline
    b"b\n",  # the newline ends the name: a line-based parser would drop it
    b"\nc",
    b"\n\n",
    b"tab\there", b"quote'\"", b" spaced ", b"back\\slash", b"-dash", b"{}", b"*",
    b"\xff\xfe not utf-8", b"\x01\x7f",
    b"81a4 5 0 0 0 0 lookalike",
]


def _strange_dir(root: Path) -> dict[bytes, int]:
    """Files of the STRANGE_NAMES (sizes 1, 2, …) and a directory, in `root`; name -> size."""
    sizes: dict[bytes, int] = {}
    for i, name in enumerate(STRANGE_NAMES, 1):
        with open(os.path.join(os.fsencode(root), name), "wb") as f:
            f.write(b"x" * i)
        sizes[name] = i
    os.mkdir(os.path.join(os.fsencode(root), b"dir\n81a4 7 0 0 0 0 "))
    return sizes


def _busybox_tools(tmp_path: Path) -> Tools:
    """find and stat as busybox applets (a multi-call binary picks the applet by its name)."""
    busybox = shutil.which("busybox")
    assert busybox is not None
    bin_dir = tmp_path / "busybox-bin"
    bin_dir.mkdir()
    for tool in ("find", "stat"):
        (bin_dir / tool).symlink_to(busybox)
    return Tools({"find": str(bin_dir / "find"), "stat": str(bin_dir / "stat")})


TOOLSETS = ["coreutils", *(["busybox"] if shutil.which("busybox") else [])]


def _filesystem(tmp_path: Path, toolset: str) -> tuple[PodFileSystem, Path]:
    home = tmp_path / "home"
    home.mkdir()
    runner = LocalRunner(home)
    tools = probe(runner, want_server=False) if toolset == "coreutils" else _busybox_tools(tmp_path)  # type: ignore[arg-type]
    return PodFileSystem(None, runner=runner, tools=tools), home


@pytest.mark.parametrize("toolset", TOOLSETS)
def test_a_listing_shows_every_name_byte_exact_and_nothing_else(tmp_path: Path, toolset: str) -> None:
    fs, home = _filesystem(tmp_path, toolset)
    sizes = _strange_dir(home)
    entries = fs.list_folder(".")
    assert not isinstance(entries, int)
    got = {os.fsencode(a.filename): a for a in entries}
    assert len(got) == len(entries) == len(sizes) + 1  # no forged entry, none hidden
    for name, size in sizes.items():
        assert got[name].st_size == size and stat.S_ISREG(got[name].st_mode or 0), name
    assert stat.S_ISDIR(got[b"dir\n81a4 7 0 0 0 0 "].st_mode or 0)


@pytest.mark.parametrize("toolset", TOOLSETS)
def test_a_directory_with_a_strange_name_lists_and_stats_exactly(tmp_path: Path, toolset: str) -> None:
    fs, home = _filesystem(tmp_path, toolset)
    inner = os.path.join(os.fsencode(home), b"d\n81a4 9 0 0 0 0 \xff")
    os.mkdir(inner)
    with open(os.path.join(inner, b"f\nx"), "wb") as f:
        f.write(b"abc")
    path = os.fsdecode(inner) + "/"  # paths reach PodFileSystem as paramiko decodes them
    entries = fs.list_folder(path)
    assert not isinstance(entries, int)
    assert [(os.fsencode(a.filename), a.st_size) for a in entries] == [(b"f\nx", 3)]
    for name, size in _strange_dir(home).items():  # stat and lstat of each name, exact
        for st in (fs.stat(os.fsdecode(name)), fs.lstat(os.fsdecode(name))):
            assert not isinstance(st, int) and st.st_size == size and os.fsencode(st.filename) == name, name


def test_a_symlinked_directory_lists_its_target_with_or_without_a_trailing_slash(tmp_path: Path) -> None:
    fs, home = _filesystem(tmp_path, "coreutils")
    (home / "real").mkdir()
    (home / "real" / "f").write_text("x")
    (home / "link").symlink_to(home / "real")
    for path in ("link", "link/", "link/.", "./link//"):
        entries = fs.list_folder(path)
        assert not isinstance(entries, int) and [a.filename for a in entries] == ["f"], path


def test_readdir_sends_the_names_bytes_even_when_they_are_not_utf8(pair: Pair) -> None:
    """paramiko's server encoded names as strict UTF-8: one such name failed the whole READDIR."""
    sizes = _strange_dir(pair.home)
    handle = pair.sftp._request(CMD_OPENDIR, ".")[1].get_binary()
    names: list[bytes] = []
    while True:
        try:
            t, msg = pair.sftp._request(CMD_READDIR, handle)
        except EOFError:  # SFTP_EOF: the listing is over
            break
        assert t == CMD_NAME
        for _ in range(msg.get_int()):
            names.append(msg.get_string())
            msg.get_string()  # the long name
            paramiko.SFTPAttributes._from_msg(msg)
    pair.sftp._request(CMD_CLOSE, handle)
    assert sorted(names) == sorted([*sizes, b"dir\n81a4 7 0 0 0 0 "])


class _CannedRunner:
    """Answers the listing exec with given bytes (stat's output, cut at the limit or forged)."""

    def __init__(self, out: bytes) -> None:
        self.out = out

    def run(self, argv: list[str], stdin: bytes | None = None, limit: int = 1 << 30) -> Result:
        return Result(ExitStatus(0), self.out[:limit], b"")


def test_a_listing_cut_at_the_limit_keeps_only_whole_records(monkeypatch: pytest.MonkeyPatch) -> None:
    import sshserver.sessions.sftpgateway as sftp_local

    records = b"81a4 1 0 0 0 0 /d/one\n81a4 2 0 0 0 0 /d/two\nthree\n"
    tools = Tools({"find": "/bin/find", "stat": "/bin/stat"})
    for cut in range(len(records) + 1):
        monkeypatch.setattr(sftp_local, "MAX_LISTING", cut if cut < len(records) else 1 << 20)
        fs = PodFileSystem(None, runner=_CannedRunner(records), tools=tools)  # type: ignore[arg-type]
        entries = fs.list_folder("/d")
        assert not isinstance(entries, int)
        got = [(a.filename, a.st_size) for a in entries]
        whole = [("one", 1), ("two\nthree", 2)]
        assert got == whole if cut >= len(records) else (got == whole[:len(got)] and len(got) < 2), (cut, got)


def test_output_of_another_shape_stops_the_listing() -> None:
    tools = Tools({"find": "/bin/find", "stat": "/bin/stat"})
    for out in (b"81a4 1 0 0 0 0 /d/a\n81a4 1 0 0 0 0 /elsewhere/b\n", b"81a4 1 0 0 0 0 /d/a\n/d/b\n",
                b"81a4 1 0 0 0 0 /d/a\n81a4 1 0 0 0 0 /d/b\0c\n"):
        fs = PodFileSystem(None, runner=_CannedRunner(out), tools=tools)  # type: ignore[arg-type]
        entries = fs.list_folder("/d")
        assert not isinstance(entries, int) and [a.filename for a in entries] == ["a"], out
