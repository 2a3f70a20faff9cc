"""SFTP served by the gateway itself: for containers without an `sftp-server` binary, and for
every grant that allows sftp but not exec.

paramiko speaks the protocol; every file-system operation is one exec of a standard tool in
the container (stat, find, cat, mkdir, mv, …). A directory listing is one exec, whatever the
number of entries; a download or upload is one streaming exec, plus one to check the path.

What an sftp-only grant must not reach is command execution, and the user can write files:
so tools are never looked up through PATH (a directory the user can write may come first).
One probe exec at the start of the session (`probe`) picks each tool by absolute path in
the system directories, and only a file the exec's user cannot have put there (trusted.py):
for a non-root user, neither the file nor any directory above it is writable; for root (who
can write everything anyway), file and directories are owned by root. Paths from the client are
made absolute before they reach a tool, so none can be taken for an option. What the tools print
is parsed byte-exact (statoutput.py): a file name, whatever bytes it holds, is one entry.

In a debug container (kube/ephemeral.py) the tools are the debug image's and the files the
target's: `root` (/proc/1/root) is put before every path a tool gets, after the client's path
was made absolute and normalized, so the user sees and names the target's paths. Absolute
symlinks inside the target resolve against the debug container's root (the kernel follows
/proc/1/root only once): a limit of the approach, said in the README. For the same reason
the target's /proc is out of reach when rooted: /proc/1/root/proc/self/root is the debug
container's own root (the process doing the lookup is the tool in it), so a client could write
the debug image's tools; any client path in /proc is refused (it is the shared procfs anyway,
nothing a user transfers).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import posixpath
import stat as statmod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

import paramiko
from paramiko.sftp import (
    CMD_NAME,
    SFTP_EOF,
    SFTP_FAILURE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
    SFTP_PERMISSION_DENIED,
)

from sshserver.kube.exitstatus import NOT_FOUND, ExitStatus
from sshserver.kube.podrunner import PodRunner, Result, StreamReader, StreamWriter
from sshserver.observability.logevents import event
from sshserver.sessions.statoutput import (
    STAT_FORMAT,
    MalformedListing,
    fs_bytes,
    fs_text,
    listing_directory,
    listing_prefix,
    parse_listing,
    parse_stat,
)
from sshserver.sessions.trusted import TRUSTED_FUNCTIONS

SHELL = "/bin/sh"  # the one program run by a fixed path before any check: the probe itself
SYSTEM_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin")
TOOLS = ("stat", "find", "cat", "tail", "dd", "mkdir", "mv", "rm", "rmdir", "readlink", "ln", "chmod", "chown",
         "touch", "truncate")
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server",
                "/usr/libexec/sftp-server", "/usr/lib/sftp-server", "/usr/sbin/sftp-server")

# Prints each argument that is an executable regular file the exec's user cannot have written
# (see trusted.py). Shell builtins only: no tool is trusted before.
PROBE = TRUSTED_FUNCTIONS + """for p in "$@"; do if trusted "$p"; then printf '%s\\n' "$p"; fi; done
"""

MAX_READ = 256 * 1024  # per READ request, as OpenSSH's sftp-server: fewer bytes are returned
MAX_HANDLES = 64  # open files and directories per session
MAX_FOLDERS = 8  # of which directories: each holds its whole listing until closed
log = logging.getLogger("podssh.sftp")

MAX_LISTING = 8 * 1024 * 1024  # bytes of `stat` output per directory listing
# Entries kept per listing: each parsed entry costs ~300 bytes of Python objects (about 14x its
# line), so 8 MiB of output alone could hold 115 MiB; 50,000 entries are ~15 MiB.
MAX_LISTING_ENTRIES = 50_000
MAX_PENDING = 16 * 1024 * 1024  # out-of-order write data held per session, all handles together
MAX_PACKET = 256 * 1024 + 1024  # an SFTP message (OpenSSH's SFTP_MAX_MSG_LENGTH, plus headers)


class ToolError(Exception):
    """A tool the gateway needs is missing or not trustworthy; the message says which."""


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the tools the gateway's SFTP runs in one container, and of the
    container's own sftp-server when the caller may use it."""

    paths: Mapping[str, str]
    sftp_server: str | None = None
    shell_trusted: bool = True  # SHELL itself passed the check (it ran the probe regardless)
    shell_missing: ExitStatus | None = None  # the runtime's answer when the container has no SHELL

    def __getitem__(self, name: str) -> str:
        try:
            return self.paths[name]
        except KeyError:
            raise ToolError(f"no trusted {name} in the container (looked in {', '.join(SYSTEM_DIRS)})") from None


def probe(runner: PodRunner, want_server: bool) -> Tools:
    """One exec: which tools (and, if wanted, which sftp-server) may be run, by absolute path."""
    candidates = [SHELL, *(f"{d}/{t}" for t in TOOLS for d in SYSTEM_DIRS)]
    if want_server:
        candidates = [*SFTP_SERVERS, *candidates]
    result = runner.run([SHELL, "-c", PROBE, "sh", *candidates])
    found = set(result.stdout.decode(errors="replace").splitlines()) & set(candidates)
    paths = {}
    for tool in TOOLS:
        path = next((f"{d}/{tool}" for d in SYSTEM_DIRS if f"{d}/{tool}" in found), None)
        if path is not None:
            paths[tool] = path
    server = next((p for p in SFTP_SERVERS if p in found), None) if want_server else None
    status = result.status
    missing = status if status.code == NOT_FOUND and status.error is not None else None
    return Tools(MappingProxyType(paths), server, SHELL in found, missing)


class PendingBudget:
    """Out-of-order write data held by one session, across its handles."""

    def __init__(self, limit: int = MAX_PENDING) -> None:
        self.limit, self.used = limit, 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class PathRefused(Exception):
    """A client path the gateway will not hand to a tool (see `PodFileSystem._path`)."""


F = TypeVar("F", bound=Callable[..., Any])


def refusing(method: F) -> F:
    """An interface method that answers SFTP_PERMISSION_DENIED for a refused path (paramiko
    would answer a plain SFTP_FAILURE for the exception). Runs on the SFTP server's thread."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except PathRefused as exc:
            event(log, "sftp_path_refused", logging.WARNING, operation=method.__name__, path=str(exc)[:256])
            return SFTP_PERMISSION_DENIED

    return wrapper  # type: ignore[return-value]


def in_proc(path: str) -> bool:
    """Whether a normalized absolute path is /proc or under it."""
    return path == "/proc" or path.startswith("/proc/")


def _error_code(result: Result) -> int:
    text = (result.stderr + result.stdout).lower()
    if b"no such file" in text or b"not found" in text:
        return SFTP_NO_SUCH_FILE
    if b"permission denied" in text or b"read-only file system" in text:
        return SFTP_PERMISSION_DENIED
    return SFTP_FAILURE


def resolve_path(cwd: str, path: str) -> str | None:
    """A client's path as a tool gets it: absolute (relative ones are taken from cwd, as
    sftp-server does), so it never starts with `-`; None for a path no file can have."""
    if "\0" in path:
        return None
    resolved = posixpath.join(cwd, path) if path else cwd
    return resolved if resolved.startswith("/") else "/" + resolved


class PodReadHandle(paramiko.SFTPHandle):
    """Streams the file with one `cat`; a read elsewhere than where the last one ended restarts
    the stream at that offset (`tail -c +N`), so clients that read in order pay one exec."""

    def __init__(self, runner: PodRunner, tools: Tools, path: str, flags: int) -> None:
        super().__init__(flags)
        self._runner, self._tools, self._path = runner, tools, path
        self._reader: StreamReader | None = None
        self._pos = 0

    def read(self, offset: int, length: int) -> bytes | int:
        length = min(length, MAX_READ)  # the client asks; what is buffered for it is ours to bound
        if self._reader is None or offset != self._pos:
            if self._reader is not None:
                self._reader.close()
            try:
                argv = ([self._tools["cat"], "--", self._path] if offset == 0 else
                        [self._tools["tail"], "-c", f"+{int(offset) + 1}", "--", self._path])
            except ToolError:
                return SFTP_OP_UNSUPPORTED
            self._reader = self._runner.reader(argv)
            self._pos = offset
        data = self._reader.read(length)
        self._pos += len(data)
        if not data and self._reader.status is not None and self._reader.status.code != 0:
            return SFTP_FAILURE
        return data

    def stat(self) -> paramiko.SFTPAttributes | int:
        return PodFileSystem.stat_path(self._runner, self._tools, self._path, follow=True)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class PodWriteHandle(paramiko.SFTPHandle):
    """Streams into one `dd … conv=notrunc` that starts where the first write does (or `cat >>`
    for append). Clients keep many writes in flight and they may arrive out of order: early
    ones wait until the gap before them is filled, within the session's PendingBudget."""

    BLOCK = 64 * 1024

    def __init__(self, runner: PodRunner, tools: Tools, path: str, flags: int,
                 budget: PendingBudget | None = None) -> None:
        super().__init__(flags)
        self._runner, self._tools, self._path = runner, tools, path
        self._budget = budget if budget is not None else PendingBudget()
        self._append = bool(flags & os.O_APPEND)
        self._writer: StreamWriter | None = None
        self._pos = -1  # set by the first write
        self._pending: dict[int, bytes] = {}
        self._closed = False
        self.failed = False

    def _start(self, offset: int) -> bool:
        # The tools are arguments ($2): a script names none by PATH (see the module docstring).
        if self._append:
            script = '"$2" >> "$1"; exit $?'
            tool = self._tools["cat"]
        elif offset % self.BLOCK == 0:
            # Overwrite in place from `offset` on, keeping what lies beyond (no O_TRUNC here).
            script = f'"$2" of="$1" bs={self.BLOCK} seek={int(offset) // self.BLOCK} conv=notrunc 2>/dev/null; exit $?'
            tool = self._tools["dd"]
        elif offset < self.BLOCK:
            script = f'"$2" of="$1" obs={int(offset)} seek=1 conv=notrunc 2>/dev/null; exit $?'
            tool = self._tools["dd"]
        else:
            return False
        # `; exit $?` keeps the shell (and the exec's stdout) alive: see session.build_command.
        self._writer = self._runner.writer([SHELL, "-c", script, "sh", self._path, tool])
        self._pos = offset
        return True

    def write(self, offset: int, data: bytes) -> int:
        if self.failed or self._closed:
            return SFTP_FAILURE
        try:
            if self._writer is None and not self._start(offset):
                return SFTP_OP_UNSUPPORTED
        except ToolError:
            return SFTP_OP_UNSUPPORTED
        if self._append:
            offset = self._pos  # O_APPEND: the offset does not matter
        if offset < self._pos:
            return SFTP_OP_UNSUPPORTED  # rewriting what was sent already: not with a stream
        if offset > self._pos:
            if offset in self._pending or not self._budget.take(len(data)):
                return SFTP_OP_UNSUPPORTED
            self._pending[offset] = data
            return SFTP_OK
        try:
            self._send(data)
            while self._pos in self._pending:
                chunk = self._pending.pop(self._pos)
                self._budget.give(len(chunk))
                self._send(chunk)
        except Exception:
            self.failed = True
            return SFTP_FAILURE
        return SFTP_OK

    def _send(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        self._pos += len(data)

    def _drop_pending(self) -> None:
        self._budget.give(sum(len(c) for c in self._pending.values()))
        self._pending.clear()

    def stat(self) -> paramiko.SFTPAttributes | int:
        self.flush()
        return PodFileSystem.stat_path(self._runner, self._tools, self._path, follow=True)

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        self.flush()  # attributes (size, times) apply to what has been written
        return PodFileSystem.apply_attributes(self._runner, self._tools, self._path, attr)

    def flush(self) -> None:
        """Ends the stream so the file is complete; a later write starts a new one."""
        if self._writer is not None:
            result = self._writer.close()
            self._writer = None
            if not result.ok:
                self.failed = True

    def close(self) -> None:
        self.flush()
        self._drop_pending()  # a gap never filled: those bytes have nowhere to go
        self._closed = True


class PodFileSystem(paramiko.SFTPServerInterface):
    """The SFTP operations, each as an exec of a probed tool (see `probe`) in the container."""

    def __init__(self, server: object, *, runner: PodRunner, tools: Tools, root: str = "", **_: Any) -> None:
        super().__init__(server)
        self._runner = runner
        self._tools = tools
        self._root = root.rstrip("/")  # "" or a debug container's view of the target (/proc/1/root)
        self._home: str | None = "/" if self._root else None  # the debug container's home is not the target's
        self._budget = PendingBudget()

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def stat_path(runner: PodRunner, tools: Tools, path: str, follow: bool) -> paramiko.SFTPAttributes | int:
        try:
            argv = [tools["stat"], *(["-L"] if follow else []), "-c", STAT_FORMAT, "--", path]
        except ToolError:
            return SFTP_OP_UNSUPPORTED
        result = runner.run(argv)
        if not result.ok:
            return _error_code(result)
        attr = parse_stat(result.stdout, path)
        return attr if attr is not None else SFTP_FAILURE

    @staticmethod
    def apply_attributes(runner: PodRunner, tools: Tools, path: str, attr: paramiko.SFTPAttributes) -> int:
        """SETSTAT as one exec: permissions, owner, times and size, whichever the client sent.
        Every value and every tool path is an argument; the script holds only their numbers,
        and the path is absolute (no `--`: busybox's chmod would take it for a file)."""
        commands: list[str] = []
        args = [path]

        def arg(value: object) -> str:
            args.append(str(value))
            return f'"${{{len(args)}}}"'

        flags = attr._flags
        try:
            if flags & attr.FLAG_PERMISSIONS and attr.st_mode is not None:
                commands.append(f'{arg(tools["chmod"])} {arg(f"{statmod.S_IMODE(attr.st_mode):o}")} "$1"')
            if flags & attr.FLAG_UIDGID and attr.st_uid is not None:
                commands.append(f'{arg(tools["chown"])} {arg(f"{int(attr.st_uid)}:{int(attr.st_gid or 0)}")} "$1"')
            if flags & attr.FLAG_AMTIME and attr.st_mtime is not None:
                commands.append(f'{arg(tools["touch"])} -d {arg(f"@{int(attr.st_mtime)}")} "$1"')
            if flags & attr.FLAG_SIZE and attr.st_size is not None:
                commands.append(f'{arg(tools["truncate"])} -s {arg(int(attr.st_size))} "$1"')
        except ToolError:
            return SFTP_OP_UNSUPPORTED
        if not commands:
            return SFTP_OK
        result = runner.run([SHELL, "-c", " && ".join(commands), "sh", *args])
        return SFTP_OK if result.ok else _error_code(result)

    def _path(self, path: str) -> str | None:
        """The path a tool gets: absolute, and under the root when there is one (normalized
        first, so that no `..` climbs out of it). Under a root, raises PathRefused for /proc and
        below (the module's docstring says why); the interface methods are `refusing`."""
        resolved = resolve_path(self._cwd(), path)
        if resolved is None or not self._root:
            return resolved
        normal = "/" + posixpath.normpath(resolved).lstrip("/")
        if in_proc(normal):
            raise PathRefused(normal)
        return self._root + normal

    def _cwd(self) -> str:
        if self._home is None:
            result = self._runner.run([SHELL, "-c", "cd ~ 2>/dev/null && pwd || echo /"])
            home = result.stdout.decode(errors="replace").strip()
            self._home = home if home.startswith("/") and "\0" not in home else "/"
        return self._home

    def _simple(self, tool: str, *args: str | None) -> int:
        if any(a is None for a in args):
            return SFTP_NO_SUCH_FILE
        try:
            argv = [self._tools[tool], *args]
        except ToolError:
            return SFTP_OP_UNSUPPORTED
        result = self._runner.run(argv)  # type: ignore[arg-type]
        return SFTP_OK if result.ok else _error_code(result)

    # --- the interface ----------------------------------------------------------------------

    def canonicalize(self, path: str) -> str:
        return posixpath.normpath(resolve_path(self._cwd(), path) or self._cwd())

    @refusing
    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        """One exec: find hands the entries to stat in batches; statoutput parses the records
        byte-exact, so no file name (newlines and all) can forge or hide an entry. `-H` follows
        the directory itself when it is a symlink, as sftp-server's opendir does."""
        where = self._path(path)
        if where is None:
            return SFTP_NO_SUCH_FILE
        directory = listing_directory(where)
        try:  # `directory` starts with "/": no find takes it for an option (busybox's has no `--`)
            argv = [self._tools["find"], "-H", directory, "-mindepth", "1", "-maxdepth", "1",
                    "-exec", self._tools["stat"], "-c", STAT_FORMAT, "{}", "+"]
        except ToolError:
            return SFTP_OP_UNSUPPORTED
        result = self._runner.run(argv, limit=MAX_LISTING)
        if not result.ok and not result.stdout:
            return _error_code(result)
        entries: list[paramiko.SFTPAttributes] = []
        records = parse_listing(result.stdout, listing_prefix(directory), complete=len(result.stdout) < MAX_LISTING)
        try:
            for attr in records:
                entries.append(attr)
                if len(entries) >= MAX_LISTING_ENTRIES:
                    event(log, "sftp_listing_truncated", logging.WARNING, entries=len(entries))
                    break
        except MalformedListing as exc:
            event(log, "sftp_listing_malformed", logging.WARNING, entries=len(entries), error=str(exc))
        return entries

    @refusing
    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        where = self._path(path)
        return SFTP_NO_SUCH_FILE if where is None else self.stat_path(self._runner, self._tools, where, follow=True)

    @refusing
    def lstat(self, path: str) -> paramiko.SFTPAttributes | int:
        where = self._path(path)
        return SFTP_NO_SUCH_FILE if where is None else self.stat_path(self._runner, self._tools, where, follow=False)

    @refusing
    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> paramiko.SFTPHandle | int:
        where = self._path(path)
        if where is None:
            return SFTP_NO_SUCH_FILE
        access = flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
        if access == os.O_RDONLY:
            st = self.stat_path(self._runner, self._tools, where, follow=True)  # `where` is resolved already
            if isinstance(st, int):
                return st
            if statmod.S_ISDIR(st.st_mode or 0):
                return SFTP_FAILURE
            return PodReadHandle(self._runner, self._tools, where, flags)
        if access == os.O_RDWR:
            return SFTP_OP_UNSUPPORTED
        # Open (create, truncate, exclusive) first, so that errors reach the client now.
        if flags & os.O_EXCL:
            prep = 'set -C; : > "$1"'
        elif flags & os.O_TRUNC:
            prep = ': > "$1"'
        else:
            prep = ': >> "$1"'
        result = self._runner.run([SHELL, "-c", prep, "sh", where])
        if not result.ok:
            return _error_code(result)
        if attr is not None and attr._flags & attr.FLAG_PERMISSIONS:
            self.apply_attributes(self._runner, self._tools, where, attr)
        return PodWriteHandle(self._runner, self._tools, where, flags, self._budget)

    @refusing
    def remove(self, path: str) -> int:
        return self._simple("rm", "--", self._path(path))

    @refusing
    def rename(self, oldpath: str, newpath: str) -> int:
        # SFTP v3 rename must not replace an existing target.
        old, new = self._path(oldpath), self._path(newpath)
        if old is None or new is None:
            return SFTP_NO_SUCH_FILE
        try:
            mv = self._tools["mv"]
        except ToolError:
            return SFTP_OP_UNSUPPORTED
        result = self._runner.run([SHELL, "-c", '[ ! -e "$2" ] && [ ! -L "$2" ] && "$3" -- "$1" "$2"',
                                   "sh", old, new, mv])
        return SFTP_OK if result.ok else (_error_code(result) if result.stderr else SFTP_FAILURE)

    @refusing
    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._simple("mv", "-f", "--", self._path(oldpath), self._path(newpath))

    @refusing
    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        where = self._path(path)
        code = self._simple("mkdir", "--", where)
        if code == SFTP_OK and where and attr is not None and attr._flags & attr.FLAG_PERMISSIONS:
            self.apply_attributes(self._runner, self._tools, where, attr)
        return code

    @refusing
    def rmdir(self, path: str) -> int:
        return self._simple("rmdir", "--", self._path(path))

    @refusing
    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        where = self._path(path)
        return SFTP_NO_SUCH_FILE if where is None else self.apply_attributes(self._runner, self._tools, where, attr)

    @refusing
    def readlink(self, path: str) -> str | int:
        where = self._path(path)
        if where is None:
            return SFTP_NO_SUCH_FILE
        try:
            argv = [self._tools["readlink"], "--", where]
        except ToolError:
            return SFTP_OP_UNSUPPORTED
        result = self._runner.run(argv)
        if not result.ok:
            return _error_code(result)
        target = result.stdout[:-1] if result.stdout.endswith(b"\n") else result.stdout  # its own newline only
        return fs_text(target)

    @refusing
    def symlink(self, target_path: str, path: str) -> int:
        # The link's content is the client's string as is (sftp-server does the same), but it is
        # an operand after `--`, never an option.
        if "\0" in target_path:
            return SFTP_NO_SUCH_FILE
        return self._simple("ln", "-s", "--", target_path, self._path(path))


class GatewaySFTPServer(paramiko.SFTPServer):
    """paramiko's SFTP server, with OpenSSH's limits (message size, handles per session), ending
    like sshd's subsystem does: files complete, then an exit status, then the channel closes
    (scp reports a failure when no exit status comes)."""

    def _read_packet(self) -> tuple[int, bytes]:
        header = self._read_all(4)
        size = int.from_bytes(header, "big")
        if size > MAX_PACKET:  # paramiko would read up to 16 MiB into memory first
            raise paramiko.SFTPError(f"SFTP message of {size} bytes is over the limit of {MAX_PACKET}")
        data = self._read_all(size)
        return (data[0], data[1:]) if size else (0, b"")

    def _send_handle_response(self, request_number: int, handle: Any, folder: bool = False) -> None:
        if isinstance(handle, paramiko.SFTPHandle):
            if len(self.file_table) + len(self.folder_table) >= MAX_HANDLES:
                handle.close()
                self._send_status(request_number, SFTP_FAILURE,
                                  f"too many open files and directories (at most {MAX_HANDLES} per session)")
                return
            if folder and len(self.folder_table) >= MAX_FOLDERS:
                handle.close()
                self._send_status(request_number, SFTP_FAILURE,
                                  f"too many open directories (at most {MAX_FOLDERS} per session)")
                return
        super()._send_handle_response(request_number, handle, folder)

    def _read_folder(self, request_number: int, folder: paramiko.SFTPHandle) -> None:
        """paramiko's, with names sent as the bytes the container holds: it encodes them (and
        the `ls -l` long name) as strict UTF-8, so one name that is not UTF-8 failed the whole
        READDIR, hiding every other entry."""
        flist = folder._get_next_files()
        if not flist:
            self._send_status(request_number, SFTP_EOF)
            return
        msg = paramiko.Message()
        msg.add_int(request_number)
        msg.add_int(len(flist))
        for attr in flist:
            msg.add_string(fs_bytes(attr.filename))
            msg.add_string(fs_bytes(str(attr)))
            attr._pack(msg)
        self._send_packet(CMD_NAME, msg)

    def finish_subsystem(self) -> None:
        for handle in list(self.file_table.values()):
            handle.close()
        self.file_table = {}
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.sock.send_exit_status(0)
        super().finish_subsystem()
