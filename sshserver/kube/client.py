"""Access to the Kubernetes API: one shared REST client, and what a per-session WebSocket needs.

REST calls share one ApiClient (urllib3 pools are thread-safe). Streams never go through
`kubernetes.stream.stream()`, which patches the shared client; each session dials its own socket.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TypeVar
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import urllib3
from kubernetes import client, config
from kubernetes.client import Configuration
from kubernetes.client.exceptions import ApiException

from sshserver.kube.tlsdial import TlsDialer, TlsSettings
from sshserver.observability.logevents import event

T = TypeVar("T")


class ApiError(Exception):
    """The API server could not be reached, or failed, while serving a session: not the user's
    fault, so the session ends with 255 (as OpenSSH's own transport errors do). The message is
    fit for the user; `reason` is a bounded metric label (an HTTP reason phrase or Unreachable)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# What a REST call raises when the API server is unreachable or hangs (urllib3 wraps socket
# errors in its own HTTPError subclasses: MaxRetryError, ProtocolError, ReadTimeoutError).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, OSError)


def unreachable(exc: BaseException) -> ApiError:
    """One line naming the API server and the cause, without urllib3's nested repr."""
    cause = getattr(exc, "reason", None) or exc
    text = str(cause).split(": ", 1)[-1] if isinstance(cause, Exception) else str(cause)
    return ApiError(f"cannot reach the Kubernetes API server ({text[:200] or type(exc).__name__})", "Unreachable")


def retry_while_unavailable(what: str, call: Callable[[], T], log: logging.Logger,
                            stop: threading.Event | None = None, cap: float = 30.0) -> T:
    """Calls `call` until it does not raise ApiError: at start, a gateway or operator whose API
    server is not there yet waits (not ready) instead of dying, with one log line per attempt
    and a pause that doubles up to `cap`. Returns early (raising the last ApiError) only when
    `stop` is set."""
    delay, attempt = 1.0, 0
    while True:
        try:
            return call()
        except ApiError as exc:
            attempt += 1
            event(log, "api_unavailable", logging.WARNING, waiting_for=what, attempt=attempt,
                  retry_in_s=delay, error=str(exc))
            if stop is not None and stop.wait(delay):
                raise
            if stop is None:
                time.sleep(delay)
            delay = min(cap, delay * 2)


@dataclass(frozen=True)
class Impersonation:
    user: str
    groups: tuple[str, ...] = ()


class KubeClient:
    def __init__(self, configuration: Configuration) -> None:
        self.configuration = configuration
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self._dialer: TlsDialer | None = None
        self._dialer_lock = threading.Lock()

    @classmethod
    def load(cls, kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
        """Kubeconfig when given (or $KUBECONFIG / ~/.kube/config), else the in-cluster service account."""
        cfg = Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(context=context, client_configuration=cfg)
        kube = cls(cfg)
        kube.proxy_options()  # a proxy-url streams cannot use is a configuration error, said at start
        return kube

    def websocket_url(self, path: str, query: list[tuple[str, str]]) -> str:
        parts = urlsplit(self.configuration.host)
        scheme = "wss" if parts.scheme == "https" else "ws"
        base = parts.path.rstrip("/")
        return urlunsplit((scheme, parts.netloc, base + path, urlencode(query), ""))

    def websocket_headers(self, impersonate: Impersonation | None = None) -> list[str]:
        headers = []
        # kubernetes >= 36.0.1 keeps bearer tokens under "BearerToken", older under "authorization".
        token = self.configuration.get_api_key_with_prefix(
            "BearerToken"
        ) or self.configuration.get_api_key_with_prefix("authorization")
        if token:
            headers.append(f"Authorization: {token}")
        elif self.configuration.username and self.configuration.password:
            headers.append(f"Authorization: {self.configuration.get_basic_auth_token()}")
        if impersonate:
            headers.append(f"Impersonate-User: {impersonate.user}")
            headers.extend(f"Impersonate-Group: {g}" for g in impersonate.groups)
        return headers

    def request_as(self, impersonate: Impersonation, method: str, path: str, body: object, content_type: str,
                   timeout: float) -> object:
        """One REST call as someone else: the generated API methods take extra headers as a
        dict, which cannot carry Impersonate-Group once per group as the API server wants it.
        Same connection pool (client certificates, CA, proxy) and credentials as every call.
        Raises ApiException for an HTTP error, a TRANSPORT_ERRORS one when unreachable."""
        headers = urllib3.HTTPHeaderDict({"Content-Type": content_type, "Accept": "application/json"})
        for line in self.websocket_headers(impersonate):
            name, _, value = line.partition(": ")
            headers.add(name, value)
        response = self.api_client.rest_client.pool_manager.request(
            method, self.configuration.host.rstrip("/") + path, body=json.dumps(body).encode(), headers=headers,
            timeout=urllib3.Timeout(total=timeout), retries=False)
        if response.status >= 400:
            text = response.data.decode(errors="replace")
            raise ApiException(status=response.status, reason=response.reason, body=text)
        return json.loads(response.data or b"null")

    def proxy_options(self) -> dict[str, object]:
        """The kubeconfig's `proxy-url` as websocket-client options, so exec and port-forward
        streams take the same path as REST calls (which urllib3 sends through it already)."""
        url = self.configuration.proxy
        if not url:
            return {}
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "socks5", "socks5h", "socks4", "socks4a") or not parts.hostname:
            raise ValueError(f"unsupported proxy-url {url!r}: expected http://HOST:PORT or socks5://HOST:PORT")
        options: dict[str, object] = {
            "http_proxy_host": parts.hostname,
            "http_proxy_port": parts.port or (1080 if parts.scheme.startswith("socks") else 3128),
            "proxy_type": "http" if parts.scheme in ("http", "https") else parts.scheme,
        }
        if parts.username:
            options["http_proxy_auth"] = (unquote(parts.username), unquote(parts.password or ""))
        return options

    def tls_dialer(self) -> TlsDialer | None:
        """The dialer that resumes TLS sessions for the WebSocket streams (tlsdial.py); None
        when streams cannot use it: plain http, or a proxy-url (websocket-client tunnels those)."""
        parts = urlsplit(self.configuration.host)
        if parts.scheme != "https" or self.configuration.proxy or not parts.hostname:
            return None
        with self._dialer_lock:
            if self._dialer is None:
                cfg = self.configuration
                self._dialer = TlsDialer(TlsSettings(
                    host=parts.hostname, port=parts.port or 443, verify=bool(cfg.verify_ssl),
                    check_hostname=cfg.assert_hostname is not False, ca_file=cfg.ssl_ca_cert or None,
                    cert_file=cfg.cert_file or None, key_file=cfg.key_file or None,
                    server_hostname=cfg.tls_server_name or None))
            return self._dialer

    def ssl_options(self) -> dict[str, object]:
        cfg = self.configuration
        if not cfg.verify_ssl:
            opts: dict[str, object] = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
        else:
            opts = {"cert_reqs": ssl.CERT_REQUIRED}
            if cfg.ssl_ca_cert:
                opts["ca_certs"] = cfg.ssl_ca_cert
            if cfg.assert_hostname is False:
                opts["check_hostname"] = False
        if cfg.cert_file:
            opts["certfile"] = cfg.cert_file
        if cfg.key_file:
            opts["keyfile"] = cfg.key_file
        if cfg.tls_server_name:
            opts["server_hostname"] = cfg.tls_server_name
        return opts


def http_reason(code: int | None) -> str:
    """A bounded metric label for an HTTP status: its reason phrase in CamelCase."""
    try:
        return HTTPStatus(code or 0).phrase.replace(" ", "")
    except ValueError:
        return "Other"
