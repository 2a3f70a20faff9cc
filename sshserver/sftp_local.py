"""SFTP served by the gateway itself, for containers without an `sftp-server` binary.

paramiko speaks the protocol; every file-system operation is one exec of a standard tool in
the container (stat, find, cat, mkdir, mv, …). A directory listing is one exec, whatever the
number of entries; a download or upload is one streaming exec, plus one to check the path.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat as statmod
from typing import Any

import paramiko
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_OP_UNSUPPORTED, SFTP_PERMISSION_DENIED

from .podexec import PodRunner, Result, StreamReader, StreamWriter

STAT_FORMAT = "%f %s %u %g %X %Y %n"  # raw mode (hex), size, uid, gid, atime, mtime, name


def _error_code(result: Result) -> int:
    text = (result.stderr + result.stdout).lower()
    if b"no such file" in text or b"not found" in text:
        return SFTP_NO_SUCH_FILE
    if b"permission denied" in text or b"read-only file system" in text:
        return SFTP_PERMISSION_DENIED
    return SFTP_FAILURE


def parse_stat_line(line: str) -> paramiko.SFTPAttributes | None:
    parts = line.split(" ", 6)
    if len(parts) != 7:
        return None
    try:
        mode, size, uid, gid, atime, mtime = int(parts[0], 16), *(int(p) for p in parts[1:6])
    except ValueError:
        return None
    attr = paramiko.SFTPAttributes()
    attr.st_mode, attr.st_size, attr.st_uid, attr.st_gid = mode, size, uid, gid
    attr.st_atime, attr.st_mtime = atime, mtime
    attr.filename = posixpath.basename(parts[6]) or parts[6]
    return attr


class PodReadHandle(paramiko.SFTPHandle):
    """Streams the file with one `cat`; a read elsewhere than where the last one ended restarts
    the stream at that offset (`tail -c +N`), so clients that read in order pay one exec."""

    def __init__(self, runner: PodRunner, path: str, flags: int) -> None:
        super().__init__(flags)
        self._runner, self._path = runner, path
        self._reader: StreamReader | None = None
        self._pos = 0

    def read(self, offset: int, length: int) -> bytes | int:
        if self._reader is None or offset != self._pos:
            if self._reader is not None:
                self._reader.close()
            argv = ["cat", "--", self._path] if offset == 0 else ["tail", "-c", f"+{offset + 1}", "--", self._path]
            self._reader = self._runner.reader(argv)
            self._pos = offset
        data = self._reader.read(length)
        self._pos += len(data)
        if not data and self._reader.status is not None and self._reader.status.code != 0:
            return SFTP_FAILURE
        return data

    def stat(self) -> paramiko.SFTPAttributes | int:
        return PodFileSystem.stat_path(self._runner, self._path, follow=True)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class PodWriteHandle(paramiko.SFTPHandle):
    """Streams into one `dd … conv=notrunc` that starts where the first write does (or `cat >>`
    for append). Clients keep many writes in flight and they may arrive out of order: early
    ones wait (up to MAX_PENDING bytes) until the gap before them is filled."""

    MAX_PENDING = 32 * 1024 * 1024
    BLOCK = 64 * 1024

    def __init__(self, runner: PodRunner, path: str, flags: int) -> None:
        super().__init__(flags)
        self._runner, self._path = runner, path
        self._append = bool(flags & os.O_APPEND)
        self._writer: StreamWriter | None = None
        self._pos = -1  # set by the first write
        self._pending: dict[int, bytes] = {}
        self._pending_bytes = 0
        self._closed = False
        self.failed = False

    def _start(self, offset: int) -> bool:
        if self._append:
            script = 'cat >> "$1"; exit $?'
        elif offset % self.BLOCK == 0:
            # Overwrite in place from `offset` on, keeping what lies beyond (no O_TRUNC here).
            script = f'dd of="$1" bs={self.BLOCK} seek={offset // self.BLOCK} conv=notrunc 2>/dev/null; exit $?'
        elif offset < self.BLOCK:
            script = f'dd of="$1" obs={offset} seek=1 conv=notrunc 2>/dev/null; exit $?'
        else:
            return False
        # `; exit $?` keeps the shell (and the exec's stdout) alive: see session.build_command.
        self._writer = self._runner.writer(["sh", "-c", script, "sh", self._path])
        self._pos = offset
        return True

    def write(self, offset: int, data: bytes) -> int:
        if self.failed or self._closed:
            return SFTP_FAILURE
        if self._writer is None and not self._start(offset):
            return SFTP_OP_UNSUPPORTED
        if self._append:
            offset = self._pos  # O_APPEND: the offset does not matter
        if offset < self._pos:
            return SFTP_OP_UNSUPPORTED  # rewriting what was sent already: not with a stream
        if offset > self._pos:
            if self._pending_bytes + len(data) > self.MAX_PENDING:
                return SFTP_OP_UNSUPPORTED
            self._pending[offset] = data
            self._pending_bytes += len(data)
            return SFTP_OK
        try:
            self._send(data)
            while self._pos in self._pending:
                chunk = self._pending.pop(self._pos)
                self._pending_bytes -= len(chunk)
                self._send(chunk)
        except Exception:
            self.failed = True
            return SFTP_FAILURE
        return SFTP_OK

    def _send(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        self._pos += len(data)

    def stat(self) -> paramiko.SFTPAttributes | int:
        self.flush()
        return PodFileSystem.stat_path(self._runner, self._path, follow=True)

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        self.flush()  # attributes (size, times) apply to what has been written
        return PodFileSystem.apply_attributes(self._runner, self._path, attr)

    def flush(self) -> None:
        """Ends the stream so the file is complete; a later write starts a new one."""
        if self._writer is not None:
            result = self._writer.close()
            self._writer = None
            if not result.ok:
                self.failed = True

    def close(self) -> None:
        self.flush()
        self._closed = True


class PodFileSystem(paramiko.SFTPServerInterface):
    def __init__(self, server: object, *, runner: PodRunner, **_: Any) -> None:
        super().__init__(server)
        self._runner = runner
        self._home: str | None = None

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def stat_path(runner: PodRunner, path: str, follow: bool) -> paramiko.SFTPAttributes | int:
        argv = ["stat", *(["-L"] if follow else []), "-c", STAT_FORMAT, "--", path]
        result = runner.run(argv)
        if not result.ok:
            return _error_code(result)
        attr = parse_stat_line(result.stdout.decode(errors="surrogateescape").rstrip("\n"))
        return attr if attr is not None else SFTP_FAILURE

    @staticmethod
    def apply_attributes(runner: PodRunner, path: str, attr: paramiko.SFTPAttributes) -> int:
        """SETSTAT as one exec: permissions, owner, times and size, whichever the client sent."""
        commands: list[str] = []
        args = [path]

        def arg(value: object) -> str:
            args.append(str(value))
            return f'"${{{len(args)}}}"'

        flags = attr._flags
        if flags & attr.FLAG_PERMISSIONS and attr.st_mode is not None:
            commands.append(f'chmod {arg(f"{statmod.S_IMODE(attr.st_mode):o}")} "$1"')
        if flags & attr.FLAG_UIDGID and attr.st_uid is not None:
            commands.append(f'chown {arg(f"{attr.st_uid}:{attr.st_gid}")} "$1"')
        if flags & attr.FLAG_AMTIME and attr.st_mtime is not None:
            commands.append(f'touch -d {arg(f"@{int(attr.st_mtime)}")} "$1"')
        if flags & attr.FLAG_SIZE and attr.st_size is not None:
            commands.append(f'truncate -s {arg(attr.st_size)} "$1"')
        if not commands:
            return SFTP_OK
        result = runner.run(["sh", "-c", " && ".join(commands), "sh", *args])
        return SFTP_OK if result.ok else _error_code(result)

    def _simple(self, argv: list[str]) -> int:
        result = self._runner.run(argv)
        return SFTP_OK if result.ok else _error_code(result)

    # --- the interface ----------------------------------------------------------------------

    def canonicalize(self, path: str) -> str:
        if self._home is None:
            result = self._runner.run(["sh", "-c", "cd ~ 2>/dev/null && pwd || echo /"])
            self._home = result.stdout.decode(errors="replace").strip() or "/"
        return posixpath.normpath(posixpath.join(self._home, path or "."))

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        result = self._runner.run(["find", path, "-mindepth", "1", "-maxdepth", "1",
                                   "-exec", "stat", "-c", STAT_FORMAT, "{}", "+"])
        if not result.ok and not result.stdout:
            return _error_code(result)
        entries = []
        for line in result.stdout.decode(errors="surrogateescape").splitlines():
            attr = parse_stat_line(line)
            if attr is not None:
                entries.append(attr)
        return entries

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        return self.stat_path(self._runner, path, follow=True)

    def lstat(self, path: str) -> paramiko.SFTPAttributes | int:
        return self.stat_path(self._runner, path, follow=False)

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> paramiko.SFTPHandle | int:
        access = flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
        if access == os.O_RDONLY:
            st = self.stat(path)
            if isinstance(st, int):
                return st
            if statmod.S_ISDIR(st.st_mode or 0):
                return SFTP_FAILURE
            return PodReadHandle(self._runner, path, flags)
        if access == os.O_RDWR:
            return SFTP_OP_UNSUPPORTED
        # Open (create, truncate, exclusive) first, so that errors reach the client now.
        if flags & os.O_EXCL:
            prep = 'set -C; : > "$1"'
        elif flags & os.O_TRUNC:
            prep = ': > "$1"'
        else:
            prep = ': >> "$1"'
        result = self._runner.run(["sh", "-c", prep, "sh", path])
        if not result.ok:
            return _error_code(result)
        if attr is not None and attr._flags & attr.FLAG_PERMISSIONS:
            self.apply_attributes(self._runner, path, attr)
        return PodWriteHandle(self._runner, path, flags)

    def remove(self, path: str) -> int:
        return self._simple(["rm", "--", path])

    def rename(self, oldpath: str, newpath: str) -> int:
        # SFTP v3 rename must not replace an existing target.
        result = self._runner.run(["sh", "-c", '[ ! -e "$2" ] && [ ! -L "$2" ] && mv -- "$1" "$2"',
                                   "sh", oldpath, newpath])
        return SFTP_OK if result.ok else (_error_code(result) if result.stderr else SFTP_FAILURE)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._simple(["mv", "-f", "--", oldpath, newpath])

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        code = self._simple(["mkdir", "--", path])
        if code == SFTP_OK and attr is not None and attr._flags & attr.FLAG_PERMISSIONS:
            self.apply_attributes(self._runner, path, attr)
        return code

    def rmdir(self, path: str) -> int:
        return self._simple(["rmdir", "--", path])

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        return self.apply_attributes(self._runner, path, attr)

    def readlink(self, path: str) -> str | int:
        result = self._runner.run(["readlink", "--", path])
        return result.stdout.decode(errors="surrogateescape").rstrip("\n") if result.ok else _error_code(result)

    def symlink(self, target_path: str, path: str) -> int:
        return self._simple(["ln", "-s", "--", target_path, path])



class GatewaySFTPServer(paramiko.SFTPServer):
    """paramiko's SFTP server, ending like sshd's subsystem does: files complete, then an exit
    status, then the channel closes (scp reports a failure when no exit status comes)."""

    def finish_subsystem(self) -> None:
        for handle in list(self.file_table.values()):
            handle.close()
        self.file_table = {}
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.sock.send_exit_status(0)
        super().finish_subsystem()
