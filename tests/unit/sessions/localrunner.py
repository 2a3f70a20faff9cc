"""A PodRunner double that runs each argv on this machine, in one directory: the same argv the
container would get, so the gateway's SFTP and its probe are tested against a real file system
and real tools (GNU coreutils here, busybox in the test images)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from sshserver.kube.exitstatus import ExitStatus
from sshserver.kube.podrunner import Result


class LocalReader:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self.status: ExitStatus | None = None
        self.stderr = b""

    def read(self, size: int) -> bytes:
        assert self._proc.stdout is not None
        out = bytearray()
        while len(out) < size:
            chunk = self._proc.stdout.read1(size - len(out))  # type: ignore[union-attr]
            if not chunk:
                self.status = ExitStatus(self._proc.wait())
                break
            out += chunk
        return bytes(out)

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()


class LocalWriter:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    def write(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)

    def close(self) -> Result:
        out, err = self._proc.communicate(timeout=30)
        return Result(ExitStatus(self._proc.returncode), out, err)


class LocalRunner:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.argvs: list[list[str]] = []

    def _popen(self, argv: Sequence[str], stdin: bool) -> subprocess.Popen[bytes]:
        self.argvs.append(list(argv))
        return subprocess.Popen(list(argv), cwd=self.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                env={"HOME": str(self.home), "PATH": "/usr/bin:/bin"})

    def run(self, argv: Sequence[str], stdin: bytes | None = None, limit: int = 1 << 30) -> Result:
        proc = self._popen(argv, True)
        out, err = proc.communicate(stdin or b"", timeout=30)
        return Result(ExitStatus(proc.returncode), out[:limit], err[:limit])

    def reader(self, argv: Sequence[str]) -> LocalReader:
        return LocalReader(self._popen(argv, False))

    def writer(self, argv: Sequence[str]) -> LocalWriter:
        return LocalWriter(self._popen(argv, True))
