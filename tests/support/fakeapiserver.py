"""A Kubernetes API server stand-in over HTTP on 127.0.0.1, for code that must be tested through
the real kubernetes client (its URLs, its (de)serialization, its errors): `podssh doctor`.

Unlike fakekube.py (an in-memory object that replaces KubeClient), this answers real HTTP:
a KubeClient (or a kubeconfig, `write_kubeconfig`) pointed at `url` makes the same requests it
would make of a cluster. Answers are set per path:

    with FakeApiServer() as api:
        api.put("/version", {"major": "1", "minor": "33", "gitVersion": "v1.33.1"})
        api.put("/api/v1/namespaces/x/secrets/s", status=403)      # a refusal, as a Status body
        api.authorize = lambda attributes: attributes["verb"] != "delete"   # SubjectAccessReviews
        ...
        assert ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews") in api.calls()

A path without an answer gets 404 with a Status naming the object (details.name), as the API
server answers for a missing object; `put(path, status=404, body=...)` can answer otherwise
(e.g. an API group it does not serve). Every request is recorded with its JSON body.
Threads: the server answers on its own threads; `put` and `requests` are behind a lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 500: "InternalError"}


def status_body(code: int, message: str, name: str = "") -> dict[str, Any]:
    details = {"name": name} if name else {}
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": REASONS.get(code, "Unknown"), "details": details, "code": code}


class FakeApiServer:
    def __init__(self) -> None:
        self._answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str, Any]] = []
        self.headers: list[list[tuple[str, str]]] = []  # each request's header lines, in order
        # Decides SubjectAccessReviews: the review's spec in, allowed out.
        self.authorize: Callable[[dict[str, Any]], bool] = lambda spec: True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def put(self, path: str, body: Any = None, status: int = 200, method: str = "GET") -> None:
        """The answer to METHOD path from now on; an error status without a body gets a Status."""
        if body is None and status >= 400:
            body = status_body(status, f"{REASONS.get(status, 'error')} (fake)", path.rsplit("/", 1)[-1])
        with self._lock:
            self._answers[(method, path)] = (status, body)

    def forget(self, path: str, method: str = "GET") -> None:
        with self._lock:
            self._answers.pop((method, path), None)

    def calls(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(m, p) for m, p, _ in self.requests]

    def bodies(self, method: str, path: str) -> list[Any]:
        with self._lock:
            return [b for m, p, b in self.requests if (m, p) == (method, path)]

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append((method, path, body))
            found = self._answers.get((method, path))
        if found is not None:
            return found
        if (method, path) == ("POST", REVIEWS):
            spec = body.get("spec") or {}
            return 201, {**body, "status": {"allowed": bool(self.authorize(spec))}}
        return 404, status_body(404, f"{path.rsplit('/', 1)[-1]} not found", path.rsplit("/", 1)[-1])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with fake._lock:
                    fake.headers.append(list(self.headers.items()))
                status, answer = fake._answer(self.command, urlsplit(self.path).path.rstrip("/") or "/", body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler

    def write_kubeconfig(self, path: Path) -> str:
        """A kubeconfig whose one context points at this server; returns its path."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        return str(path)

    def __enter__(self) -> FakeApiServer:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-apiserver", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
