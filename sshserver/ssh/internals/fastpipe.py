"""A receive buffer for paramiko channels that does not copy or shift on every read.

paramiko's BufferedPipe keeps incoming data in one array and deletes each read from its
front: with an 8 MiB window that is a memmove of megabytes per read, the largest cost of a
fast upload. This one keeps the chunks as they arrived and hands them out whole.
"""

from __future__ import annotations

import time
from collections import deque

import paramiko
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

SMALL = 4096  # chunks below this are merged as they arrive (a copy of at most 8 KiB)


class ChunkPipe(BufferedPipe):
    def __init__(self) -> None:
        super().__init__()
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def set_event(self, event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def feed(self, data: bytes) -> None:
        with self._lock:
            if self._event is not None:
                self._event.set()
            if data:
                chunks = self._chunks
                if len(data) < SMALL and chunks and len(chunks[-1]) < SMALL:
                    # Tiny packets stored one by one cost ~20x their size in object headers:
                    # a window's worth of 2-byte packets would hold 20x the window in memory.
                    chunks[-1] += data
                else:
                    chunks.append(bytes(data))
                self._size += len(data)
            self._cv.notify_all()

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            if not self._size:
                if self._closed:
                    return b""
                if timeout == 0.0:
                    raise PipeTimeout()
                while not self._size and not self._closed:
                    then = time.time()
                    self._cv.wait(timeout)
                    if timeout is not None:
                        timeout -= time.time() - then
                        if timeout <= 0.0:
                            raise PipeTimeout()
                if not self._size:
                    return b""
            pieces, want = [], nbytes
            while self._chunks and want > 0:
                chunk = self._chunks[0]
                if len(chunk) <= want:
                    pieces.append(self._chunks.popleft())
                    want -= len(chunk)
                else:
                    pieces.append(chunk[:want])
                    self._chunks[0] = chunk[want:]
                    want = 0
            out = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            self._size -= len(out)
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
            return out

    def empty(self) -> bytes:
        with self._lock:
            out = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            if self._event is not None and not self._closed:
                self._event.clear()
            return out

    def __len__(self) -> int:
        with self._lock:
            return self._size


def install(channel: paramiko.Channel) -> None:
    """Swaps the channel's receive buffer; call it in the Transport thread (a hook), so that no
    data arrives while the buffers change hands."""
    old = channel.in_buffer
    if isinstance(old, ChunkPipe):
        return
    new = ChunkPipe()
    pending = old.empty()
    if pending:
        new.feed(pending)
    channel.in_buffer = new
