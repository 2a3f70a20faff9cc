"""An in-process gateway for unit tests and the wire fuzzer: real paramiko transports on loopback,
grants from a static snapshot, and a stand-in Kubernetes API on loopback that answers every
request 404 (a session that gets as far as the API ends with "unknown pod"; nothing else needs
the cluster)."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paramiko
from kubernetes.client import Configuration

from sshserver.config.settings import GatewaySettings
from sshserver.gateway.core import Gateway
from sshserver.grants.access import AccessStore, snapshot_from_objects
from sshserver.kube.client import KubeClient
from sshserver.observability.audit import AuditTrail


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MemoryAudit(AuditTrail):
    """The audit trail kept as a list of records."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.records: deque[dict[str, Any]] = deque(maxlen=20000)  # bounded for long fuzz runs
        self._records_lock = threading.Lock()

    def record(self, name: str, **fields: Any) -> None:
        with self._records_lock:
            self.records.append({"event": name, **json.loads(json.dumps(fields, default=str))})

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._records_lock:
            return [r for r in self.records if r["event"] == name]


def grant_object(name: str, keys: list[paramiko.PKey], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "podssh.dev/v1alpha1", "kind": "SSHAccess",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {"user": name, "publicKeys": [f"{k.get_name()} {k.get_base64()}" for k in keys],
                 "pods": {"selector": {"matchLabels": {"app": "web"}}}, **spec},
    }


@dataclasses.dataclass
class InProcessGateway:
    gateway: Gateway
    audit: MemoryAudit
    thread: threading.Thread

    @property
    def port(self) -> int:
        assert self.gateway.address is not None
        return self.gateway.address[1]


HOST_KEY = paramiko.ECDSAKey.generate()


class _NotFound(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                           "message": "not found", "code": 404}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def fake_api() -> Iterator[str]:
    """A Kubernetes API stand-in on 127.0.0.1 that answers 404 to everything."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def running_gateway(grants: list[dict[str, Any]], **overrides: Any) -> Iterator[InProcessGateway]:
    """A Gateway listening on 127.0.0.1 (random port) until the block ends."""
    _, errors = snapshot_from_objects(grants)
    assert not errors, errors
    with fake_api() as api:
        yield from _running(grants, api, overrides)


def _running(grants: list[dict[str, Any]], api: str, overrides: dict[str, Any]) -> Iterator[InProcessGateway]:
    """`overrides` are GatewaySettings fields, and `pod_cache` (what the resolver reads first)."""
    pod_cache = overrides.pop("pod_cache", None)
    snapshot, _ = snapshot_from_objects(grants)
    cfg = Configuration()
    cfg.host = api
    settings = GatewaySettings(**{"listen_host": "127.0.0.1", "listen_port": 0, "drain_timeout": 1.0,
                                  **overrides})
    audit = MemoryAudit()
    gw = Gateway(settings, AccessStore(snapshot), KubeClient(cfg), [HOST_KEY], audit=audit, pod_cache=pod_cache)
    gw.bind()
    thread = threading.Thread(target=gw.serve_forever, name="accept", daemon=True)
    thread.start()
    try:
        yield InProcessGateway(gw, audit, thread)
    finally:
        gw.shutdown(drain_timeout=0.5)
        thread.join(5)


def client(port: int, key: paramiko.PKey | None, username: str = "ns/pod",
           timeout: float = 10, source: str = "127.0.0.1") -> paramiko.Transport:
    """A paramiko client transport from address `source`, authenticated with `key` when given."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    t = paramiko.Transport(sock)
    t.banner_timeout = timeout
    t.start_client(timeout=timeout)
    if key is not None:
        t.auth_publickey(username, key)
    return t


class OpenServer(paramiko.ServerInterface):
    """A bare paramiko server that lets anyone in by password and opens every channel: for
    tests of what runs on top of a Transport (window budget, SFTP), not of our hooks."""

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED


@contextmanager
def linked_transports(host_key: paramiko.PKey, setup: Callable[[paramiko.Transport], None] | None = None,
                      **server_options: Any) -> Iterator[tuple[paramiko.Transport, paramiko.Transport]]:
    """(client, server) Transports over a socketpair, the client logged in to an OpenServer;
    `setup` configures the server Transport (e.g. subsystem handlers) before it starts."""
    a, b = socket.socketpair()
    server = paramiko.Transport(a, **server_options)
    server.add_server_key(host_key)
    if setup is not None:
        setup(server)
    server.start_server(threading.Event(), server=OpenServer())  # negotiates in its own thread
    client_transport = paramiko.Transport(b)
    try:
        client_transport.connect(username="u", password="p")
        yield client_transport, server
    finally:
        client_transport.close()
        server.close()
