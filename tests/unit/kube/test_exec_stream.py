"""The exec WebSocket client against an in-process double of the API server's exec endpoint:
protocol negotiation (v5, v4 fallback), stdin EOF, resize and message sizes."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web
from kubernetes.client import Configuration

from sshserver.kube.client import KubeClient
from sshserver.kube.execstream import STATUS, STDOUT, V4, V5, ExecRequest, ExecStream
from sshserver.kube.exitstatus import parse_status
from sshserver.kube.wsdial import MAX_MESSAGE, MAX_PAYLOAD, whole_messages


@dataclass
class ExecDouble:
    """Echoes stdin to stdout; exits 3 on "quit", 0 on stdin EOF (v5)."""

    protocols: tuple[str, ...]
    messages: list[bytes] = field(default_factory=list)
    query: dict[str, list[str]] = field(default_factory=dict)
    port: int = 0

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        self.query = {k: request.query.getall(k) for k in request.query}
        ws = web.WebSocketResponse(protocols=self.protocols)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            self.messages.append(msg.data)
            channel, data = msg.data[0], msg.data[1:]
            if channel == 0:
                await ws.send_bytes(b"\x01" + data)
                if b"quit" in data:
                    status = {"status": "Failure", "reason": "NonZeroExitCode",
                              "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}
                    await ws.send_bytes(b"\x03" + json.dumps(status).encode())
                    await ws.close()
            elif channel == 255 and data == b"\x00":
                await ws.send_bytes(b'\x03{"status":"Success"}')
                await ws.close()
        return ws


@pytest.fixture
def double(request: pytest.FixtureRequest) -> Iterator[ExecDouble]:
    d = ExecDouble(request.param)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}/exec", d.handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        d.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        runner_box.append(runner)
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    started.wait(10)
    yield d
    asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def open_stream(d: ExecDouble, **kw: object) -> ExecStream:
    cfg = Configuration(host=f"http://127.0.0.1:{d.port}")
    req = ExecRequest("ns", "pod", "main", ("/bin/sh", "-c", "cat"), **kw)  # type: ignore[arg-type]
    return ExecStream.open(KubeClient(cfg), req, timeout=10)


def collect(stream: ExecStream) -> tuple[bytes, int | None]:
    out, code = b"", None
    for channel, data in stream.frames():
        if channel == STDOUT:
            out += data
        elif channel == STATUS:
            code = parse_status(data).code
    return out, code


@pytest.mark.parametrize("double", [(V5, V4)], indirect=True)
def test_v5_is_negotiated_and_stdin_eof_ends_the_command(double: ExecDouble) -> None:
    stream = open_stream(double)
    assert stream.protocol == V5 and stream.can_close_stdin
    stream.send_stdin(b"hello")
    assert stream.close_stdin()
    assert collect(stream) == (b"hello", 0)
    assert double.query["command"] == ["/bin/sh", "-c", "cat"]
    assert double.query["stdin"] == ["true"] and double.query["stderr"] == ["true"]
    assert double.messages[-1] == b"\xff\x00"


@pytest.mark.parametrize("double", [(V4,)], indirect=True)
def test_falls_back_to_v4_and_says_so(double: ExecDouble, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="podssh.exec"):
        stream = open_stream(double)
    assert stream.protocol == V4
    assert not stream.close_stdin()  # v4 has no way to send EOF
    assert any(r.getMessage() == "exec_protocol_fallback" for r in caplog.records)
    stream.send_stdin(b"quit")
    assert collect(stream) == (b"quit", 3)


@pytest.mark.parametrize("double", [(V5,)], indirect=True)
def test_messages_never_exceed_32_kib(double: ExecDouble) -> None:
    stream = open_stream(double)
    payload = bytes(range(256)) * 1000  # 256000 bytes in one write
    stream.send_stdin(payload)
    stream.close_stdin()
    out, code = collect(stream)
    assert out == payload and code == 0
    stdin_messages = [m for m in double.messages if m[0] == 0]
    assert max(len(m) for m in stdin_messages) <= MAX_MESSAGE
    assert b"".join(m[1:] for m in stdin_messages) == payload


@pytest.mark.parametrize("double", [(V5,)], indirect=True)
def test_tty_size_is_sent_before_anything_else(double: ExecDouble) -> None:
    stream = open_stream(double, tty=True, size=(132, 43))
    stream.send_stdin(b"x")
    stream.close_stdin()
    collect(stream)
    assert double.messages[0] == b'\x04{"Width": 132, "Height": 43}'
    assert double.query["tty"] == ["true"] and "stderr" not in double.query


def test_the_masker_is_aiohttps_compiled_one() -> None:
    """The upload speed rests on it (a Python XOR would be ten times slower): a change of aiohttp
    that moves or drops it must fail here, not quietly slow uploads down."""
    from sshserver.kube import wsdial

    assert wsdial.websocket_mask.__name__ == "_websocket_mask_cython"


def test_masked_frames_decode_like_any_websocket_frame() -> None:
    from websocket import ABNF

    from sshserver.kube.wsdial import masked_binary_frame

    keys = set()
    for payload in (b"", b"x" * 124, b"y" * 125, b"z" * 70000, bytes(range(256)) * 100, b"w" * 32767):
        frame = masked_binary_frame(4, payload)
        assert frame[0] == 0x82 and frame[1] & 0x80  # FIN + binary, masked
        length = frame[1] & 0x7F
        offset = 2 + {126: 2, 127: 8}.get(length, 0)
        declared = int.from_bytes(frame[2:offset], "big") if offset > 2 else length
        assert declared == len(payload) + 1 == len(frame) - offset - 4
        key = frame[offset:offset + 4]
        keys.add(key)
        assert ABNF.mask(key, frame[offset + 4:]) == b"\x04" + payload
    # RFC 6455: four random key bytes, fresh for every frame (not one byte repeated).
    assert len(keys) == 6 and any(len(set(k)) > 1 for k in keys)


def test_a_read_on_a_socket_aborted_under_it_ends_the_stream_quietly() -> None:
    """abort() from another thread closes the TLS socket under a blocked read, which ssl reports
    as ValueError; the session saw that as a crash ("internal error") before (soak finding)."""
    from sshserver.kube.wsdial import ChannelStream

    class AbortedUnderRead:
        def recv_data(self, control_frame: bool = False) -> tuple[int, bytes]:
            raise ValueError("Read on closed or unwrapped SSL socket.")

    assert list(ChannelStream(AbortedUnderRead()).messages()) == []  # type: ignore[arg-type]


def test_after_the_server_s_close_frame_the_stream_closes_without_waiting() -> None:
    """The command exited and the server closed: the answer goes out, nothing is waited for (a
    server slow to drop the connection would otherwise hold the exit status up to a second)."""
    from websocket import ABNF

    from sshserver.kube.wsdial import ChannelStream

    class Socket:
        calls: list[str] = []

        def recv_data(self, control_frame: bool) -> tuple[int, bytes]:
            return ABNF.OPCODE_CLOSE, b"\x03\xe8"

        def send_close(self) -> None:
            self.calls.append("send_close")

        def close(self, timeout: float) -> None:
            self.calls.append("close-and-wait")

        def shutdown(self) -> None:
            self.calls.append("shutdown")

    ws = Socket()
    stream = ChannelStream(ws)  # type: ignore[arg-type]
    assert list(stream.frames()) == []
    stream.close()
    assert ws.calls == ["send_close", "shutdown"]
    waiting = ChannelStream(Socket())  # type: ignore[arg-type]
    Socket.calls.clear()
    waiting.close()  # no close frame from the server yet: the closing handshake is waited for
    assert Socket.calls == ["close-and-wait", "shutdown"]


@pytest.mark.parametrize("double", [(V5,)], indirect=True)
def test_a_whole_messages_read_goes_out_as_full_messages_only(double: ExecDouble) -> None:
    """A 256 KiB read went out as eight full messages and one of 8 bytes: a message more for the
    API server, the kubelet and the runtime to handle, each time (uploads ran slower)."""
    size = whole_messages(256 * 1024)
    assert size % MAX_PAYLOAD == 0 and 256 * 1024 - MAX_PAYLOAD < size <= 256 * 1024
    assert whole_messages(100) == MAX_PAYLOAD  # never below one message
    stream = open_stream(double)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    stream.send_stdin(payload)
    stream.close_stdin()
    assert collect(stream) == (payload, 0)
    stdin_messages = [m for m in double.messages if m[0] == 0]
    assert [len(m) for m in stdin_messages] == [MAX_MESSAGE] * (size // MAX_PAYLOAD)

