"""Malformed exit statuses give a result, never an exception; audit records stay one line each
whatever a client puts in them (issue 11, lows)."""

from __future__ import annotations

import io
import json

import pytest

from sshserver.kube.exitstatus import TRANSPORT_ERROR, parse_status
from sshserver.observability.audit import AuditTrail

FAILURE = {"status": "Failure", "reason": "NonZeroExitCode", "message": "command terminated with non-zero exit code"}


@pytest.mark.parametrize("details", [
    "causes", ["causes"], 7, None, {"causes": "ExitCode"}, {"causes": {"reason": "ExitCode"}},
    {"causes": [None, 3, "x", ["reason"]]}, {"causes": [{"reason": "ExitCode", "message": None}]},
    {"causes": [{"reason": "ExitCode", "message": {"x": 1}}]},
    {"causes": [{"reason": "ExitCode", "message": "9" * 5000}]},
    {"causes": [{"reason": "ExitCode", "message": "1e3"}]}, {"causes": [{"reason": "ExitCode", "message": True}]},
])
def test_malformed_causes_are_a_transport_error_not_an_exception(details: object) -> None:
    result = parse_status(json.dumps({**FAILURE, "details": details}).encode())
    assert result.code == TRANSPORT_ERROR and result.error


@pytest.mark.parametrize("payload", [b"[" * 100_000, b'{"status": "Failure", "message": ["x"]}', b"\xff\xfe", b"null",
                                     b'{"status": "Failure", "message": 12}', b"1" * 10_000])
def test_any_payload_gives_a_status(payload: bytes) -> None:
    result = parse_status(payload)
    assert result.code == TRANSPORT_ERROR and isinstance(result.error, str)


def test_well_formed_codes_still_count() -> None:
    ok = {**FAILURE, "details": {"causes": [{"reason": "Other"}, {"reason": "ExitCode", "message": "42"}]}}
    assert parse_status(json.dumps(ok).encode()).code == 42
    assert parse_status(json.dumps({**ok, "details": {"causes": [{"reason": "ExitCode", "message": 300}]}}).encode()
                        ).code == 300 & 0xFF


def test_audit_records_stay_one_line_with_unicode_line_ends() -> None:
    sink = io.StringIO()
    target = "ns/pod\u2028{\"event\": \"forged\"}\u0085x\u2029y\r\nz\x1c\x1d\x1e"
    AuditTrail(sink).record("auth_failure", target=target)
    text = sink.getvalue()
    assert text.isascii() and len(text.splitlines()) == 1 and text.endswith("\n")
    assert json.loads(text)["target"] == target


def test_operational_log_lines_stay_whole_with_unicode_line_ends() -> None:
    """Client text (a version line, a subsystem name) reaches the operational log too."""
    import logging

    from sshserver.observability.logevents import JsonFormatter

    record = logging.LogRecord("podssh.gateway", logging.INFO, __file__, 1, "handshake_failed", None, None)
    record.fields = {"error": "Incompatible version (1.5\u2028{\"event\": \"forged\"}\u0085)"}  # type: ignore[attr-defined]
    line = JsonFormatter().format(record)
    assert line.isascii() and len(line.splitlines()) == 1
