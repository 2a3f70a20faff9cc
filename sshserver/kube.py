"""Access to the Kubernetes API: one shared REST client, and what a per-session WebSocket needs.

REST calls share one ApiClient (urllib3 pools are thread-safe). Streams never go through
`kubernetes.stream.stream()`, which patches the shared client; each session dials its own socket.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlencode, urlsplit, urlunsplit

from kubernetes import client, config
from kubernetes.client import Configuration


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
        return cls(cfg)

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
