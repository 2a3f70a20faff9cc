"""The kopf side: credentials handed to kopf, and watch events forwarded to the Inventory."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import Configuration
from sshoperator.handlers import build_registry, connection_info
from sshoperator.inventory import Inventory

from sshserver.grants.access import AccessStore

from .conftest import sshaccess


def kube_with(**settings: Any) -> Any:
    cfg = Configuration()
    cfg.host = "https://api.example:6443"
    for name, value in settings.items():
        setattr(cfg, name, value)
    return type("Kube", (), {"configuration": cfg})()


@pytest.mark.parametrize(("api_key", "prefix", "scheme", "token"), [
    ({"authorization": "Bearer abc"}, {}, "Bearer", "abc"),
    ({"authorization": "abc"}, {}, "Bearer", "abc"),
    ({"BearerToken": "abc"}, {"BearerToken": "Bearer"}, "Bearer", "abc"),
    ({}, {}, None, None),
])
def test_the_token_reaches_kopf_with_its_scheme(api_key: dict[str, str], prefix: dict[str, str],
                                                scheme: str | None, token: str | None) -> None:
    info = connection_info(kube_with(api_key=api_key, api_key_prefix=prefix, verify_ssl=False))
    assert (info.server, info.scheme, info.token, info.insecure) == ("https://api.example:6443", scheme, token, True)


def test_watch_events_are_forwarded_and_a_listing_asks_for_a_resync(pubkey: str) -> None:
    store, relists = AccessStore(), []
    inventory = Inventory(store, None)
    registry = build_registry(kube_with(), inventory, lambda: relists.append(1))
    [on_event] = [h.fn for h in registry._watching.get_all_handlers()]
    on_event(type="ADDED", body=sshaccess(pubkey, "alice"))
    assert [g.name for g in store.current.grants] == ["alice"] and relists == []
    on_event(type=None, body=sshaccess(pubkey, "bob"))  # from a (re-)listing
    assert sorted(g.name for g in store.current.grants) == ["alice", "bob"] and relists == [1]
    on_event(type="DELETED", body=sshaccess(pubkey, "alice"))
    assert [g.name for g in store.current.grants] == ["bob"]
