from __future__ import annotations

import threading

import pytest
from paramiko.buffered_pipe import PipeTimeout

from sshserver.ssh.internals.fastpipe import ChunkPipe


def test_reads_come_back_in_order_in_any_size() -> None:
    pipe = ChunkPipe()
    data = bytes(range(256)) * 400
    for i in range(0, len(data), 1000):
        pipe.feed(data[i:i + 1000])
    assert len(pipe) == len(data)
    out = b""
    for size in (1, 999, 1000, 1001, 50_000, 10**6):
        out += pipe.read(size)
    assert out == data and len(pipe) == 0


def test_blocking_timeout_close_and_event() -> None:
    pipe = ChunkPipe()
    event = threading.Event()
    pipe.set_event(event)
    assert not event.is_set()
    with pytest.raises(PipeTimeout):
        pipe.read(10, timeout=0.05)
    threading.Timer(0.05, pipe.feed, args=(b"late",)).start()
    assert pipe.read(10, timeout=2) == b"late"
    pipe.feed(b"abc")
    assert event.is_set() and pipe.read_ready()
    assert pipe.empty() == b"abc" and not event.is_set()
    pipe.close()
    assert pipe.read(10) == b"" and event.is_set()


def test_tiny_packets_do_not_cost_many_times_their_size() -> None:
    """A client sending a window's worth of 2-byte packets (review finding: ~22 MiB held for
    800 KB) must cost about what it sent, and read back byte-exact."""
    import tracemalloc

    from sshserver.ssh.internals.fastpipe import ChunkPipe

    pipe = ChunkPipe()
    sent = [bytes([i % 251, (i * 7) % 251]) for i in range(200_000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for piece in sent:
        pipe.feed(piece)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert held < 2 * 400_000, f"{held} bytes held for 400,000 bytes received"
    out = b""
    while len(pipe):
        out += pipe.read(65536)
    assert out == b"".join(sent)
