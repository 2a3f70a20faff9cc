"""A TCP proxy that a test can cut (connections reset) or freeze (packets silently dropped, as
by an iptables DROP: sockets stay open, nothing gets through) and restore: a network fault
between two local processes."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


def pipe(src: socket.socket, dst: socket.socket, flowing: threading.Event | None = None) -> None:
    """Copies src to dst until either ends, then shuts both down; holds data while `flowing`
    is clear (a frozen path)."""
    try:
        while data := src.recv(65536):
            if flowing is not None:
                flowing.wait()
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class _Server:
    """A listener on 127.0.0.1 with an accept thread; subclasses serve each connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._serve(client, addr)

    def _serve(self, client: socket.socket, addr: tuple[str, int]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


class _Link:
    """One proxied connection: its two sockets, when it was opened, whether data flows."""

    def __init__(self, client: socket.socket, upstream: socket.socket, flowing: bool) -> None:
        self.sockets = (client, upstream)
        self.opened = time.monotonic()
        self.flowing = threading.Event()
        if flowing:
            self.flowing.set()


class CuttableProxy(_Server):
    """cut/freeze act on every connection, or with `opened_before` only on the older ones
    (a watch opened at start, not a session's stream opened later)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._open = threading.Event()
        self._open.set()
        self._frozen = False  # new connections start frozen too
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        super().__init__(target)

    def _serve(self, client: socket.socket, addr: tuple[str, int]) -> None:
        if not self._open.is_set():
            client.close()
            return
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            link = _Link(client, upstream, flowing=not self._frozen)
            self._links.add(link)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b, link.flowing), daemon=True).start()

    def _matching(self, opened_before: float | None) -> list[_Link]:
        with self._lock:
            return [lk for lk in self._links if opened_before is None or lk.opened < opened_before]

    def cut(self, opened_before: float | None = None) -> None:
        """Drops connections (all: and refuses new ones until restore())."""
        if opened_before is None:
            self._open.clear()
        for link in self._matching(opened_before):
            with self._lock:
                self._links.discard(link)
            link.flowing.set()
            for s in link.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()

    def freeze(self, opened_before: float | None = None) -> None:
        """Nothing gets through either way; connections stay open (a partition, not a reset)."""
        if opened_before is None:
            self._frozen = True
        for link in self._matching(opened_before):
            link.flowing.clear()

    def restore(self) -> None:
        self._open.set()
        self._frozen = False
        for link in self._matching(None):
            link.flowing.set()

    def close(self) -> None:
        super().close()
        self.cut()


def proxy_header(version: int, source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A PROXY protocol header (v1 text or v2 binary) for TCP over IPv4 or IPv6."""
    import ipaddress
    import struct

    six = ":" in source[0]
    if version == 1:
        proto = "TCP6" if six else "TCP4"
        return f"PROXY {proto} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()
    src, dst = ipaddress.ip_address(source[0]).packed, ipaddress.ip_address(destination[0]).packed
    payload = src + dst + struct.pack(">HH", source[1], destination[1])
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x21 if six else 0x11]) + struct.pack(">H", len(payload)) + payload


class ProxyProtocolRelay(_Server):
    """A TCP relay that starts every upstream connection with a PROXY header, as a load balancer
    does: the header names `claim` (address, port) as the client, or the real client when None."""

    def __init__(self, target: tuple[str, int], version: int, claim: tuple[str, int] | None = None) -> None:
        self._version, self._claim = version, claim
        super().__init__(target)

    def _serve(self, client: socket.socket, addr: tuple[str, int]) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=5)
            upstream.settimeout(None)
            upstream.sendall(proxy_header(self._version, self._claim or addr[:2], ("127.0.0.1", self.port)))
        except OSError:
            client.close()
            return
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()


class ConnectProxy(_Server):
    """An HTTP CONNECT proxy (as a kubeconfig's `proxy-url` names) that sends every tunnel to
    `target`, whatever host the client asked for, and records what was asked."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.requests: list[str] = []
        super().__init__(target)

    def _serve(self, client: socket.socket, addr: tuple[str, int]) -> None:
        threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 8192:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        request = head.split(b"\r\n", 1)[0].decode(errors="replace")
        self.requests.append(request)
        if not request.startswith("CONNECT "):
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            client.close()
            return
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            client.close()
            return
        upstream.settimeout(None)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()
