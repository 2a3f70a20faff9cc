"""/metrics carries the standard process_* and python_* series beside podssh_*, on the gateway's
own registry (a private one, so two gateways in one process, as in the tests, never collide)."""

from __future__ import annotations

from prometheus_client import generate_latest

from sshserver.observability.metrics import Metrics


def _names(metrics: Metrics) -> set[str]:
    return {m.name for m in metrics.registry.collect()}


def test_process_and_platform_series_are_exported() -> None:
    names = _names(Metrics())
    assert {"process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds",
            "process_start_time_seconds"} <= names
    assert "python_info" in names
    assert "python_gc_collections" in names
    text = generate_latest(Metrics().registry).decode()
    assert "process_resident_memory_bytes " in text and "python_info{" in text
    assert "podssh_sessions_active{" in text  # the gateway's own, unchanged


def test_two_gateways_in_one_process_have_their_own_registries() -> None:
    a, b = Metrics(), Metrics()
    assert a.registry is not b.registry
    assert "process_open_fds" in _names(a) and "process_open_fds" in _names(b)
