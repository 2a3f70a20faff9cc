"""Turns the exec status frame (a metav1.Status on channel 3) into an exit code."""

from __future__ import annotations

import json
from dataclasses import dataclass

# What a shell returns for a command it cannot find or run.
NOT_FOUND = 127
# What OpenSSH reports when the connection, not the command, failed.
TRANSPORT_ERROR = 255


@dataclass(frozen=True)
class ExitStatus:
    code: int
    error: str | None = None  # set when the failure was not the command's own exit


def parse_status(payload: bytes) -> ExitStatus:
    try:
        status = json.loads(payload.decode("utf-8", "replace"))
    except ValueError:
        return ExitStatus(TRANSPORT_ERROR, "unreadable exec status from the API server")
    if not isinstance(status, dict):
        return ExitStatus(TRANSPORT_ERROR, "unreadable exec status from the API server")
    if status.get("status") == "Success":
        return ExitStatus(0)
    message = str(status.get("message") or "exec failed")
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return ExitStatus(int(cause.get("message")) & 0xFF)
                except (TypeError, ValueError):
                    break
        return ExitStatus(TRANSPORT_ERROR, message)
    lowered = message.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return ExitStatus(NOT_FOUND, message)
    return ExitStatus(TRANSPORT_ERROR, message)
