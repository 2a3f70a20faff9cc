"""The watch-fed pod cache (podcache.py) against the fake API (tests/support/fakekube.py): it
follows the grants' namespaces, keeps up with changes, lists again after 410 Gone and after
errors, and the resolver asks it first without ever taking a refusal from it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from sshserver.grants.access import AccessSnapshot, AccessStore, Grant
from sshserver.grants.labelselector import LabelSelector
from sshserver.grants.target import TargetError, parse_target
from sshserver.kube.podcache import PodCache
from sshserver.kube.resolver import PodResolver
from tests.support.fakekube import DEPLOYMENTS, PODS, FakeKube, api_error, connection_refused


def pod(name: str, ns: str = "shop", labels: dict[str, str] | None = None, phase: str = "Running",
        container_running: bool = True) -> dict[str, Any]:
    state = {"running": {}} if container_running else {"waiting": {"reason": "ContainerCreating"}}
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {"app": "web"}},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "app", "image": "i", "imageID": "i", "ready": True,
                                              "restartCount": 0, "state": state}]}}


def grant(ns: str = "shop") -> Grant:
    return Grant(namespace=ns, name="g", uid="u", user="u", keys=(),
                 selector=LabelSelector.from_dict({"matchLabels": {"app": "web"}}))


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    k = FakeKube()
    yield k
    k.release()


@pytest.fixture
def cache(kube: FakeKube) -> Iterator[PodCache]:
    c = PodCache(kube, watch_timeout=1, max_silence=5.0, backoff=(0.01, 0.05))  # type: ignore[arg-type]
    yield c
    c.stop()


def synced(kube: FakeKube, cache: PodCache, ns: str = "shop") -> None:
    kube.wait_until(lambda: cache.synced(ns) and kube.actions_for("watch", PODS))


def test_follows_the_namespaces_of_the_grants(kube: FakeKube, cache: PodCache) -> None:
    kube.add(pod("web-1"), PODS)
    kube.add(pod("web-1", ns="other"), PODS)
    store = AccessStore(AccessSnapshot((grant(),)))
    cache.follow(store)
    synced(kube, cache)
    assert cache.pod("shop", "web-1") is not None
    assert cache.pod("other", "web-1") is None and not cache.synced("other")  # no grant there: not watched
    store.replace(AccessSnapshot((grant("other"),)))
    kube.wait_until(lambda: cache.synced("other"))
    assert cache.pod("other", "web-1").metadata.namespace == "other"
    assert not cache.synced("shop") and cache.pod("shop", "web-1") is None  # the grant went: so did its watch


def test_keeps_up_with_added_changed_and_deleted_pods(kube: FakeKube, cache: PodCache) -> None:
    cache.watch_namespaces(["shop"])
    synced(kube, cache)
    kube.add(pod("web-2"), PODS)
    kube.wait_until(lambda: cache.pod("shop", "web-2") is not None)
    kube.add(pod("web-2", labels={"app": "db"}), PODS)
    kube.wait_until(lambda: cache.pod("shop", "web-2").metadata.labels == {"app": "db"})
    assert [p.metadata.name for p in cache.select("shop", LabelSelector.from_dict({"matchLabels": {"app": "db"}}))] \
        == ["web-2"]
    kube.remove("shop", "web-2", PODS)
    kube.wait_until(lambda: cache.pod("shop", "web-2") is None)
    assert len(kube.actions_for("list", PODS)) == 1  # all of it from the one watch


def test_lists_again_after_410_gone(kube: FakeKube, cache: PodCache, caplog: pytest.LogCaptureFixture) -> None:
    def change_and_compact(_: object) -> None:  # between the list and the watch: a change, then compaction
        kube.add(pod("web-3"), PODS)
        kube.compact()

    kube.prepend_reactor(change_and_compact, verb="watch", times=1)
    with caplog.at_level(logging.INFO, logger="podssh.podcache"):
        cache.watch_namespaces(["shop"])
        kube.wait_until(lambda: cache.pod("shop", "web-3") is not None, timeout=5)
    assert len(kube.actions_for("list", PODS)) == 2  # the change came by the second list, after the 410
    assert any(r.getMessage() == "pod_cache_relist" for r in caplog.records)


def test_a_watch_the_server_ended_goes_on_from_its_version(kube: FakeKube, cache: PodCache) -> None:
    cache.watch_namespaces(["shop"])
    synced(kube, cache)
    kube.add(pod("web-4"), PODS)
    kube.wait_until(lambda: len(kube.actions_for("watch", PODS)) >= 2, timeout=5)  # watch_timeout is 1 s
    versions = [a.options["resource_version"] for a in kube.actions_for("watch", PODS)]
    assert int(versions[1]) > int(versions[0]) and len(kube.actions_for("list", PODS)) == 1


def test_an_unreachable_api_server_leaves_it_unsynced_until_it_is_back(kube: FakeKube, cache: PodCache,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    kube.fail_next(3, connection_refused(), verb="list")
    with caplog.at_level(logging.WARNING, logger="podssh.podcache"):
        cache.watch_namespaces(["shop"])
        kube.wait_until(lambda: len(kube.actions_for("list", PODS)) >= 2)
        assert not cache.synced("shop") and cache.pod("shop", "web-1") is None
        kube.add(pod("web-1"), PODS)
        kube.wait_until(lambda: cache.pod("shop", "web-1") is not None, timeout=5)
    assert any(r.getMessage() == "pod_cache_failed" for r in caplog.records)


def test_stop_ends_the_informer_threads(kube: FakeKube) -> None:
    import threading

    c = PodCache(kube, watch_timeout=30, backoff=(0.01, 0.05))  # type: ignore[arg-type]
    c.watch_namespaces(["shop", "other"])
    kube.wait_until(lambda: len(kube.actions_for("watch", PODS)) == 2)
    c.stop(timeout=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("pod-cache-")]


# --- the resolver with the cache ----------------------------------------------------------------


def resolver(kube: FakeKube, cache: PodCache) -> PodResolver:
    return PodResolver(kube, cache=cache)  # type: ignore[arg-type]


def test_a_cached_pod_is_resolved_without_an_api_call(kube: FakeKube, cache: PodCache) -> None:
    kube.add(pod("web-1"), PODS)
    cache.watch_namespaces(["shop"])
    synced(kube, cache)
    resolved = resolver(kube, cache).resolve(parse_target("shop/web-1"), [grant()])
    assert (resolved.pod, resolved.container) == ("web-1", "app")
    assert kube.actions_for("get", PODS) == []


def test_a_pod_the_cache_has_not_seen_yet_is_asked_of_the_api(kube: FakeKube, cache: PodCache) -> None:
    cache.watch_namespaces(["shop"])
    synced(kube, cache)
    body = pod("web-9")
    with kube._cond:  # created behind the watch's back: the API has it, the cache not yet
        kube._objects[(PODS, "shop", "web-9")] = body
    assert resolver(kube, cache).resolve(parse_target("shop/web-9"), [grant()]).pod == "web-9"
    assert [a.name for a in kube.actions_for("get", PODS)] == ["web-9"]


def test_an_unsynced_cache_falls_back_to_the_api(kube: FakeKube, cache: PodCache) -> None:
    kube.add(pod("web-1"), PODS)
    kube.fail_next(1000, api_error(403), verb="list")  # e.g. RBAC without the watch verb
    cache.watch_namespaces(["shop"])
    assert resolver(kube, cache).resolve(parse_target("shop/web-1"), [grant()]).pod == "web-1"
    assert len(kube.actions_for("get", PODS)) == 1


def test_a_refusal_is_never_the_cache_s_word(kube: FakeKube, cache: PodCache) -> None:
    """The cache says the pod is Pending (and its container not running); the API says Running."""
    kube.add(pod("web-1", phase="Pending", container_running=False), PODS)
    cache.watch_namespaces(["shop"])
    synced(kube, cache)
    with kube._cond:  # the change has not reached the watch yet
        kube._objects[(PODS, "shop", "web-1")] = pod("web-1")
    assert resolver(kube, cache).resolve(parse_target("shop/web-1"), [grant()]).pod == "web-1"
    assert len(kube.actions_for("get", PODS)) == 1


def test_refusals_through_the_cache_answer_as_without_it(kube: FakeKube, cache: PodCache) -> None:
    kube.add(pod("db-1", labels={"app": "db"}), PODS)
    cache.watch_namespaces(["shop"])
    synced(kube, cache)

    def refusal(target: str, with_cache: bool) -> str:
        with pytest.raises(TargetError) as err:
            PodResolver(kube, cache=cache if with_cache else None).resolve(parse_target(target), [grant()])  # type: ignore[arg-type]
        return str(err.value)

    for target in ("shop/db-1", "shop/nosuch", "shop/db-1:app", "shop/deploy/db"):
        assert refusal(target, True) == refusal(target, False)
    assert refusal("shop/db-1", True) == "unknown pod 'db-1' in shop, or not permitted for this key"


def test_a_workload_reads_its_selector_and_takes_the_pods_from_the_cache(kube: FakeKube, cache: PodCache) -> None:
    kube.add({"metadata": {"name": "web", "namespace": "shop"},
              "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}}}, DEPLOYMENTS)
    kube.add(pod("web-b"), PODS)
    kube.add(pod("web-a"), PODS)
    cache.watch_namespaces(["shop"])
    synced(kube, cache)
    assert resolver(kube, cache).resolve(parse_target("shop/deploy/web"), [grant()]).pod == "web-a"
    assert len(kube.actions_for("get", DEPLOYMENTS)) == 1  # the selector is read fresh
    assert [a for a in kube.actions_for("list", PODS) if a.options.get("label_selector")] == []
