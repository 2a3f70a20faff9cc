"""The audit trail: one JSON object per line for every connection, login and session, written to
its own stream (stdout by default) apart from the operational log. Never a secret in it."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO


class AuditTrail:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    @classmethod
    def open(cls, target: str) -> AuditTrail:
        """`-` for stdout, else a file appended to."""
        if target == "-":
            return cls(sys.stdout)
        return cls(open(target, "a", buffering=1, encoding="utf-8"))

    def record(self, name: str, **fields: Any) -> None:
        now = time.time()
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
                 "audit": True, "event": name, **fields}
        # ASCII only: U+2028, U+0085 and friends are line ends to some line readers, and a
        # client-chosen string (a target name, a command) must not split a record in two.
        line = json.dumps(entry, default=str, ensure_ascii=True) + "\n"
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (OSError, ValueError):  # a closed or full sink must not break sessions
                pass
