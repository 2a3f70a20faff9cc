"""Turns the exec status frame (a metav1.Status on channel 3) into an exit code."""

from __future__ import annotations

import json
from dataclasses import dataclass

# What a shell returns for a command it cannot find or run.
NOT_FOUND = 127
# What OpenSSH reports when the connection, not the command, failed.
TRANSPORT_ERROR = 255
# What a refusal by the gateway exits with (unknown pod, not permitted, over a limit, revoked): the
# same 255 as OpenSSH's own failures, so a script can tell them from the command's own 1.
REFUSED = 255


@dataclass(frozen=True)
class ExitStatus:
    code: int
    error: str | None = None  # set when the failure was not the command's own exit


UNREADABLE = "unreadable exec status from the API server"


def parse_status(payload: bytes) -> ExitStatus:
    """Any payload gives an ExitStatus, never an exception: the frame comes from the API server,
    but a broken or hostile one (or a proxy in between) must end one session cleanly."""
    try:
        status = json.loads(payload.decode("utf-8", "replace"))
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        return ExitStatus(TRANSPORT_ERROR, UNREADABLE)
    if not isinstance(status, dict):
        return ExitStatus(TRANSPORT_ERROR, UNREADABLE)
    if status.get("status") == "Success":
        return ExitStatus(0)
    raw = status.get("message")
    message = (raw if isinstance(raw, str) else "")[:1024] or "exec failed"
    if status.get("reason") == "NonZeroExitCode":
        code = _exit_code(status.get("details"))
        return ExitStatus(code) if code is not None else ExitStatus(TRANSPORT_ERROR, message)
    lowered = message.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return ExitStatus(NOT_FOUND, message)
    return ExitStatus(TRANSPORT_ERROR, message)


def _exit_code(details: object) -> int | None:
    """The code in details.causes[reason=ExitCode].message, when it is a decimal number."""
    causes = details.get("causes") if isinstance(details, dict) else None
    if not isinstance(causes, list):
        return None
    for cause in causes:
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            text = cause.get("message")
            if isinstance(text, int) and not isinstance(text, bool):
                return text & 0xFF
            if isinstance(text, str) and text.strip().isdecimal() and len(text) <= 16:
                return int(text) & 0xFF
            return None
    return None
