"""Observability: how the gateway tells what it does. Structured JSON logs, one line per event
(logevents.py); the audit trail of logins and sessions (audit.py); Prometheus metrics
(metrics.py) and the HTTP endpoint serving them with /healthz and /readyz (monitoring.py);
the observer interface through which sessions reach the operator's Events (observer.py, with
the EndReason and SessionOutcome types); asciicast recordings of terminals (recording.py).
"""

__all__ = [
    "audit",
    "logevents",
    "metrics",
    "monitoring",
    "observer",
    "recording",
]
