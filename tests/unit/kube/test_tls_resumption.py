"""The WebSocket dial resumes the TLS session of the previous one (tlsdial.py): against a tiny TLS
server (Python's ssl, a self-signed certificate), and through ExecStream.open against a TLS
WebSocket double of the exec endpoint, the first handshake is full and the second resumed."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client import Configuration

from sshserver.kube.client import KubeClient
from sshserver.kube.execstream import V5, ExecRequest, ExecStream
from sshserver.kube.tlsdial import TlsDialer, TlsSettings


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


def server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    return ctx


@pytest.fixture
def tls_server(cert: tuple[Path, Path]) -> Iterator[int]:
    """Accepts TLS connections, says "hi" on each (a TLS 1.3 ticket goes first), and closes."""
    ctx = server_context(cert)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(5)
            try:
                with ctx.wrap_socket(raw, server_side=True) as tls:
                    tls.sendall(b"hi")
                    tls.recv(1)  # until the client closes
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


def test_the_second_dial_resumes_the_first_session(tls_server: int, cert: tuple[Path, Path]) -> None:
    dialer = TlsDialer(TlsSettings(host="127.0.0.1", port=tls_server, ca_file=str(cert[0])))
    reused = []
    for _ in range(3):
        with dialer.connect(timeout=5) as sock:
            assert sock.recv(2) == b"hi"  # the certificate was verified against the CA file
            dialer.remember(sock)
            reused.append(sock.session_reused)
    assert reused == [False, True, True]


def test_a_changed_ca_file_builds_a_new_context_without_the_old_session(tls_server: int, cert: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert[0].read_bytes())
    dialer = TlsDialer(TlsSettings(host="127.0.0.1", port=tls_server, ca_file=str(ca)))
    with dialer.connect(timeout=5) as sock:
        sock.recv(2)
        dialer.remember(sock)
    first = dialer.context()
    ca.write_bytes(cert[0].read_bytes() + b"\n")  # rotated (same CA here, another file)
    with dialer.connect(timeout=5) as sock:
        sock.recv(2)
        assert not sock.session_reused
    assert dialer.context() is not first


def test_a_certificate_the_ca_does_not_vouch_for_is_refused(tls_server: int) -> None:
    dialer = TlsDialer(TlsSettings(host="127.0.0.1", port=tls_server))  # system CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        dialer.connect(timeout=5)


@pytest.fixture
def wss_exec(cert: tuple[Path, Path]) -> Iterator[int]:
    """An exec endpoint over TLS that answers every command with exit status 0."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(V5,))
        await ws.prepare(request)
        await ws.send_bytes(b'\x03{"status":"Success"}')
        await ws.close()
        return ws

    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: list[tuple[web.AppRunner, int]] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}/exec", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert))
        await site.start()
        box.append((runner, site._server.sockets[0].getsockname()[1]))  # type: ignore[union-attr]
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10)
    yield box[0][1]
    asyncio.run_coroutine_threadsafe(box[0][0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_exec_streams_resume_the_tls_session(wss_exec: int, cert: tuple[Path, Path]) -> None:
    cfg = Configuration(host=f"https://127.0.0.1:{wss_exec}")
    cfg.ssl_ca_cert = str(cert[0])
    kube = KubeClient(cfg)
    reused = []
    for _ in range(3):
        stream = ExecStream.open(kube, ExecRequest("ns", "pod", "main", ("true",), stdin=False), timeout=10)
        reused.append(stream._ws.sock.session_reused)
        assert stream.protocol == V5 and [c for c, _ in stream.frames()] == [3]
        stream.abort()  # the double has closed already
    assert reused == [False, True, True]
