"""Prometheus metrics of one gateway process. Labels are bounded sets only: never a user,
pod, address or session id."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from sshserver.grants.access import SessionKind
from sshserver.version import version

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)
SETUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SESSION_KINDS = tuple(kind.value for kind in SessionKind)  # the `kind` label: a closed set
CALL_RESULTS = ("ok", "refused", "failed")
END_REASONS = ("exit", "client", "error", "refused", "revoked", "expired", "idle", "limit", "shutdown")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if r is not REGISTRY:  # the default registry has them already
            # The standard series every Prometheus client exports (process_* for memory, CPU,
            # file descriptors and start time; python_info; python_gc_*): dashboards and alerts
            # written for any Python service work on the gateway too.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        Info("podssh_build", "Version of the running podssh.", registry=r).info({"version": version()})
        self.connections = Gauge("podssh_connections_open", "Open SSH connections.", registry=r)
        self.connections_total = Counter(
            "podssh_connections_total", "TCP connections by result.", ["result"], registry=r)
        self.handshake_failures = Counter(
            "podssh_handshake_failures_total", "Connections that failed before authentication began.", registry=r)
        self.auth_attempts = Counter(
            "podssh_auth_attempts_total", "Authentication attempts by method and result.",
            ["method", "result"], registry=r)
        self.sessions_active = Gauge("podssh_sessions_active", "Live sessions by kind.", ["kind"], registry=r)
        self.session_duration = Histogram(
            "podssh_session_duration_seconds", "Duration of finished sessions.", ["kind"],
            buckets=DURATION_BUCKETS, registry=r)
        self.bytes = Counter(
            "podssh_transferred_bytes_total", "Session payload bytes by direction.", ["direction"], registry=r)
        self.exec_setup = Histogram(
            "podssh_exec_setup_seconds", "Time to open a pod exec stream.", buckets=SETUP_BUCKETS, registry=r)
        self.api_errors = Counter(
            "podssh_kubernetes_api_errors_total", "Failed Kubernetes API calls by reason.", ["reason"], registry=r)
        self.sessions_started = Counter(
            "podssh_sessions_started_total", "Started sessions, by kind and whether in a debug container.",
            ["kind", "debug"], registry=r)
        self.sessions_ended = Counter(
            "podssh_sessions_ended_total", "Finished sessions by reason.", ["reason"], registry=r)
        self.grants = Gauge("podssh_access_grants", "Grants in the access snapshot in force.", registry=r)
        self.window_budget_used = Gauge(
            "podssh_window_budget_used_bytes",
            "Bytes of large channel receive windows granted, out of --window-budget.", registry=r)
        self.hangups_dropped = Counter(
            "podssh_hangups_dropped_total",
            "Dropped sessions whose processes were not hung up: the hangup queue was full.", registry=r)
        self.session_object_calls = Counter(
            "podssh_session_object_calls_total",
            "API calls of the SSHSession writer by result: ok; refused (that object is dropped); failed "
            "(the writer pauses and retries).", ["result"], registry=r)
        self.session_objects_pending = Gauge(
            "podssh_session_objects_pending",
            "Sessions whose SSHSession object is not yet as it should be (to create or to delete).", registry=r)
        self.snapshot_age = Gauge(
            "podssh_access_snapshot_age_seconds", "Seconds since the access snapshot was built.", registry=r)
        for kind in SESSION_KINDS:  # export zeros, so rates exist before the first session
            self.sessions_active.labels(kind)
            self.session_duration.labels(kind)
            for debug in ("false", "true"):
                self.sessions_started.labels(kind, debug)
        for reason in END_REASONS:
            self.sessions_ended.labels(reason)
        for direction in ("to_pod", "from_pod"):
            self.bytes.labels(direction)
        for result in ("accepted", "refused"):
            self.connections_total.labels(result)
        for result in CALL_RESULTS:
            self.session_object_calls.labels(result)

    def track_session_objects(self, pending: Callable[[], int]) -> Callable[[str], None]:
        """Exports the SSHSession writer's backlog; returns the hook it calls after each API call
        with its result (one of CALL_RESULTS)."""
        self.session_objects_pending.set_function(lambda: float(pending()))
        return lambda result: self.session_object_calls.labels(result).inc()

    def track_snapshot(self, built_at: Callable[[], float], size: Callable[[], int]) -> None:
        self.snapshot_age.set_function(lambda: max(0.0, time.time() - built_at()))
        self.grants.set_function(lambda: float(size()))
