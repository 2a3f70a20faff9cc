from __future__ import annotations

import pytest

from sshserver.grants.target import Target, TargetError, is_listing, parse_listing_filter, parse_target


@pytest.mark.parametrize(("name", "expected"), [
    ("web-7d9f5", Target(None, "web-7d9f5")),
    ("shop/web-7d9f5", Target("shop", "web-7d9f5")),
    ("shop/web-7d9f5:app", Target("shop", "web-7d9f5", container="app")),
    ("web:sidecar", Target(None, "web", container="sidecar")),
    ("shop/deploy/web", Target("shop", "web", kind="deployments")),
    ("shop/deployments/web:c", Target("shop", "web", kind="deployments", container="c")),
    ("shop/sts/db", Target("shop", "db", kind="statefulsets")),
    ("shop/ds/agent", Target("shop", "agent", kind="daemonsets")),
    ("shop/rs/web-1", Target("shop", "web-1", kind="replicasets")),
    ("shop/job/once", Target("shop", "once", kind="jobs")),
    ("shop/pod.with.dots", Target("shop", "pod.with.dots")),
])
def test_valid_targets(name: str, expected: Target) -> None:
    assert parse_target(name) == expected


@pytest.mark.parametrize(("name", "message"), [
    ("", "empty user name"),
    ("shop/", "empty pod name"),
    ("/web", "empty namespace"),
    ("shop/web:", "empty container"),
    ("Shop/web", "invalid namespace"),
    ("shop/Web", "invalid pod name"),
    ("shop/web_1", "invalid pod name"),
    ("shop/web:Side", "invalid container name"),
    ("a/b/c/d", "too many '/'"),
    ("shop/widget/web", "unknown workload kind"),
    ("x" * 600, "user name too long"),
    ("shop/" + "a" * 300, "invalid pod name"),
    ("shop/web\x00", "invalid pod name"),
    # `$` matched before a trailing newline: every part must match as a whole.
    ("shop/web\n", "invalid pod name"),
    ("shop\n/web", "invalid namespace"),
    ("shop/web:app\n", "invalid container name"),
    ("shop/deploy/web\n", "invalid workload name"),
    ("shop/w\u0660b", "invalid pod name"),
])
def test_invalid_targets_name_the_problem(name: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        parse_target(name)


def test_target_renders_back() -> None:
    assert str(parse_target("shop/deployment/web:app")) == "shop/deploy/web:app"


def test_the_bare_name_ls_is_reserved_for_the_listing_and_names_no_pod() -> None:
    assert is_listing("ls") and not any(is_listing(n) for n in ("ns/ls", "ls:main", "LS", "ls ", None, ""))
    with pytest.raises(TargetError, match="'ls' lists your targets and names none: a pod called ls is NAMESPACE/ls"):
        parse_target("ls")
    assert parse_target("shop/ls") == Target("shop", "ls")  # a pod called ls, named with its namespace
    assert parse_target("ls:main") == Target(None, "ls", container="main")


@pytest.mark.parametrize(("command", "expected"), [(None, None), ("", None), ("  ", None), ("shop", "shop"),
                                                   (" shop\n", "shop")])
def test_the_listing_filter_is_one_namespace(command: str | None, expected: str | None) -> None:
    assert parse_listing_filter(command) == expected


@pytest.mark.parametrize(("command", "message"), [
    ("shop other", "usage: ssh ls@GATEWAY \\[NAMESPACE\\] \\(one namespace, not 2 words\\)"),
    ("Shop", "invalid namespace 'Shop'"),
    ("shop;id", "invalid namespace"),
    ("a" * 64, "invalid namespace"),
])
def test_a_listing_filter_that_is_not_one_namespace_is_refused(command: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        parse_listing_filter(command)
