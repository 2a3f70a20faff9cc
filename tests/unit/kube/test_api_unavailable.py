"""An unreachable or failing API server is the API server's fault, not the user's: the resolver
turns it into an ApiError (exit 255, one line), and start-up waits for it with a log line per try."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from sshserver.grants.target import TargetError, parse_target
from sshserver.kube.client import ApiError, retry_while_unavailable
from sshserver.kube.resolver import PodResolver


def resolver_raising(exc: BaseException) -> PodResolver:
    def read(*_: Any, **__: Any) -> Any:
        raise exc

    kube = SimpleNamespace(core=SimpleNamespace(read_namespaced_pod=read))
    return PodResolver(kube)  # type: ignore[arg-type]


GRANT = SimpleNamespace(namespace="shop")


@pytest.mark.parametrize("exc", [
    urllib3.exceptions.MaxRetryError(None, "/api", urllib3.exceptions.NewConnectionError(None, "refused")),
    urllib3.exceptions.ReadTimeoutError(None, "/api", "read timed out"),
    ConnectionRefusedError(111, "Connection refused"),
])
def test_an_unreachable_api_server_is_an_api_error(exc: BaseException) -> None:
    with pytest.raises(ApiError) as raised:
        resolver_raising(exc).resolve(parse_target("shop/web"), [GRANT])  # type: ignore[list-item]
    assert raised.value.reason == "Unreachable"
    assert str(raised.value).startswith("cannot reach the Kubernetes API server (")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("status", "reason"), [(500, "InternalServerError"), (503, "ServiceUnavailable"),
                                                (429, "TooManyRequests")])
def test_a_failing_api_server_is_an_api_error(status: int, reason: str) -> None:
    with pytest.raises(ApiError) as raised:
        resolver_raising(ApiException(status=status, reason="x")).resolve(parse_target("shop/web"), [GRANT])  # type: ignore[list-item]
    assert raised.value.reason == reason


def test_a_refusal_stays_the_users_problem() -> None:
    with pytest.raises(TargetError):
        resolver_raising(ApiException(status=403, reason="Forbidden")).resolve(parse_target("shop/web"), [GRANT])  # type: ignore[list-item]


def test_start_up_retries_with_one_line_per_attempt(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def call() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ApiError("cannot reach the Kubernetes API server (refused)", "Unreachable")
        return "listed"

    stop = threading.Event()
    stop.wait = lambda timeout=None: False  # type: ignore[method-assign]  # no real pause in a unit test
    with caplog.at_level(logging.WARNING):
        assert retry_while_unavailable("things", call, logging.getLogger("t"), stop) == "listed"
    assert len(calls) == 3
    assert [r.getMessage() for r in caplog.records].count("api_unavailable") == 2


def test_start_up_gives_up_only_when_stopped() -> None:
    stop = threading.Event()
    stop.set()

    def call() -> None:
        raise ApiError("cannot reach the Kubernetes API server (refused)", "Unreachable")

    with pytest.raises(ApiError):
        retry_while_unavailable("things", call, logging.getLogger("t"), stop)
