"""Short commands in a pod, for the gateway's own use (not a user's session): run one and
collect its output, or stream a file out of or into the container."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from sshserver.kube.client import KubeClient
from sshserver.kube.execstream import STATUS, STDERR, STDOUT, ExecRequest, ExecStream
from sshserver.kube.exitstatus import ExitStatus, parse_status

OUTPUT_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class Result:
    status: ExitStatus
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.status.code == 0


def collect(stream: ExecStream, limit: int) -> Result:
    """Reads a command's stream to its end: up to `limit` bytes of each output, and its status."""
    out, err, status = bytearray(), bytearray(), None
    for channel, data in stream.frames():
        if channel == STDOUT and len(out) < limit:
            out += data[:limit - len(out)]
        elif channel == STDERR and len(err) < limit:
            err += data[:limit - len(err)]
        elif channel == STATUS:
            status = parse_status(data)
    return Result(status or ExitStatus(255, "no exit status"), bytes(out), bytes(err))


class PodRunner:
    """Runs commands in one container, with the credentials of the session that asked."""

    def __init__(self, kube: KubeClient, base: ExecRequest, timeout: float = 30.0,
                 activity: Callable[[], None] | None = None) -> None:
        self._kube = kube
        self._base = replace(base, tty=False, size=None)
        self._timeout = timeout
        self._activity = activity or (lambda: None)

    def _open(self, argv: Sequence[str], stdin: bool) -> ExecStream:
        self._activity()  # a session working through many short commands is not idle
        return ExecStream.open(self._kube, replace(self._base, command=tuple(argv), stdin=stdin), self._timeout)

    def run(self, argv: Sequence[str], stdin: bytes | None = None, limit: int = OUTPUT_LIMIT) -> Result:
        """Runs argv to its end; keeps at most `limit` bytes of each output."""
        stream = self._open(argv, stdin is not None)
        try:
            if stdin is not None:
                if stdin:
                    stream.send_stdin(stdin)
                stream.close_stdin()
            return collect(stream, limit)
        finally:
            stream.close()

    def reader(self, argv: Sequence[str]) -> StreamReader:
        return StreamReader(self._open(argv, False))

    def writer(self, argv: Sequence[str]) -> StreamWriter:
        return StreamWriter(self._open(argv, True))


class StreamReader:
    """A command's stdout, read in pieces of any size, in order."""

    def __init__(self, stream: ExecStream) -> None:
        self._stream = stream
        self._frames: Iterator[tuple[int, bytes]] = stream.frames()
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self.status: ExitStatus | None = None
        self.stderr = b""
        self.eof = False

    def read(self, size: int) -> bytes:
        while self._buffered < size and not self.eof:
            try:
                channel, data = next(self._frames)
            except StopIteration:
                self.eof = True
                break
            if channel == STDOUT:
                self._buffer.append(data)
                self._buffered += len(data)
            elif channel == STDERR and len(self.stderr) < 4096:
                self.stderr += data[:4096 - len(self.stderr)]
            elif channel == STATUS:
                self.status = parse_status(data)
        out = bytearray()
        while self._buffer and len(out) < size:
            chunk = self._buffer.popleft()
            take = size - len(out)
            if len(chunk) > take:
                self._buffer.appendleft(chunk[take:])
                chunk = chunk[:take]
            out += chunk
        self._buffered -= len(out)
        return bytes(out)

    def close(self) -> None:
        self._stream.close()


class StreamWriter:
    """A command's stdin; close() sends EOF and waits for the command's verdict.

    The stream is read all along by a thread of its own: an API server whose messages nobody
    reads (pings, the first empty stdout frame) ends the connection after a while.
    """

    def __init__(self, stream: ExecStream) -> None:
        self._stream = stream
        self._result: Result | None = None
        self._reader = threading.Thread(target=self._drain, name="pod-writer-drain", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        self._result = collect(self._stream, 4096)

    def write(self, data: bytes) -> None:
        self._stream.send_stdin(data)

    def close(self) -> Result:
        with contextlib.suppress(Exception):  # already gone: the status (if any) says why
            self._stream.close_stdin()
        self._reader.join(30)
        self._stream.close()
        return self._result or Result(ExitStatus(255, "no exit status"), b"", b"")
