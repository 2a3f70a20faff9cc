"""The kopf side: a private registry whose handlers only forward watch events to the Inventory.

kopf runs standalone in every replica (no peering), writes nothing itself (no finalizers, no
annotations, no posted events): all writes go through the ClusterWriter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from sshserver.kube.client import KubeClient

from . import GROUP, PLURAL, SESSION_PLURAL, VERSION
from .inventory import Inventory


def connection_info(kube: KubeClient) -> kopf.ConnectionInfo:
    cfg = kube.configuration
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").partition(" ")
    if header and not token:
        scheme, token = "Bearer", header
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        username=cfg.username or None,
        password=cfg.password or None,
    )


def build_registry(kube: KubeClient, inventory: Inventory, relisted: Callable[[], None],
                   session_deleted: Callable[[dict[str, Any]], None] | None = None) -> kopf.OperatorRegistry:
    """`session_deleted` (SessionObjects.deleted), when given, hears of every SSHSession deleted
    in the cluster; it picks this replica's own and never blocks (kopf's loop calls it)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False
        settings.peering.standalone = True
        settings.scanning.disabled = True  # cluster-wide, one known resource: no RBAC for discovery watches
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 10
        settings.networking.request_timeout = 30
        settings.process.ultimate_exiting_timeout = None  # never SIGKILL the host process
        logging.getLogger("kopf").setLevel(logging.WARNING)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(kube)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def on_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        raw = {k: v for k, v in body.items()}
        if type == "DELETED":
            inventory.delete(raw)
            return
        inventory.upsert(raw)
        if type is None:  # an object from a (re-)listing: deletions in a gap are invisible here
            relisted()

    if session_deleted is not None:
        @kopf.on.event(GROUP, VERSION, SESSION_PLURAL, registry=registry)
        def on_session_event(type: str | None, body: kopf.Body, **_: Any) -> None:
            if type == "DELETED":
                session_deleted({k: v for k, v in body.items()})

    return registry
