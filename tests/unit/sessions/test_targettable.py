"""The table of `ssh ls@gateway` (targettable.py): rows per pod and grant, containers as the
grant's allowlist leaves them, sorted, in aligned columns."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kubernetes.client import V1Container, V1ObjectMeta, V1Pod, V1PodSpec

from sshserver.grants.access import Allow, Grant
from sshserver.grants.labelselector import LabelSelector
from sshserver.sessions.targettable import nothing_found, render, rows

DEFAULT = Allow()


def grant(name: str, ns: str = "shop", containers: frozenset[str] | None = None, allow: Allow = DEFAULT,
          expires_at: datetime | None = None) -> Grant:
    return Grant(namespace=ns, name=name, uid=name, user="u", keys=(),
                 selector=LabelSelector.from_dict({"matchLabels": {"app": "web"}}), containers=containers,
                 allow=allow, expires_at=expires_at)


def pod(name: str, ns: str = "shop", containers: tuple[str, ...] = ("app", "side")) -> V1Pod:
    return V1Pod(metadata=V1ObjectMeta(name=name, namespace=ns),
                 spec=V1PodSpec(containers=[V1Container(name=c) for c in containers]))


def test_rows_per_pod_and_grant_sorted_with_the_containers_each_grant_allows() -> None:
    paris = timezone(timedelta(hours=2))
    wide = grant("wide")
    narrow = grant("narrow", containers=frozenset({"side"}), allow=Allow(shell=False, sftp=True),
                   expires_at=datetime(2030, 5, 1, 12, 0, tzinfo=paris))
    only_other = grant("other-only", containers=frozenset({"nope"}))  # names none of the containers
    ports = grant("ports", containers=frozenset({"nope"}), allow=Allow(shell=False, exec=False,
                                                                        port_forward=frozenset({9090, 80})))
    table = rows([(wide, [pod("web-2"), pod("web-1")]), (narrow, [pod("web-1")]), (only_other, [pod("web-1")]),
                  (ports, [pod("web-1")])])
    assert [r.cells for r in table] == [
        ("shop/web-1", "side", "exec,sftp", "2030-05-01T10:00:00Z", "shop/narrow"),
        ("shop/web-1", "-", "forward:80,9090", "-", "shop/ports"),  # a port still reaches the pod
        ("shop/web-1", "app,side", "shell,exec", "-", "shop/wide"),
        ("shop/web-2", "app,side", "shell,exec", "-", "shop/wide"),
    ]
    assert render(table[2:]) == [
        "TARGET      CONTAINERS  ALLOWS      UNTIL  GRANT",
        "shop/web-1  app,side    shell,exec  -      shop/wide",
        "shop/web-2  app,side    shell,exec  -      shop/wide",
    ]


def test_nothing_found_counts_the_grants() -> None:
    assert nothing_found(1) == "no running pods match your grants (1 grant in force)"
    assert nothing_found(3) == "no running pods match your grants (3 grants in force)"
