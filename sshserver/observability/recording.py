"""Session recordings in asciicast v2 (what asciinema and asciinema-player read): a header line,
then one `[seconds, "o"|"r", data]` line per output chunk or resize. Keystrokes are not recorded:
they would capture passwords typed at prompts."""

from __future__ import annotations

import codecs
import json
import os
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:64] or "x"


class Recording:
    def __init__(self, path: Path, cols: int, rows: int, term: str, title: str) -> None:
        self.path = path
        self._start = time.monotonic()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lock = threading.Lock()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        header = {"version": 2, "width": cols, "height": rows, "timestamp": int(time.time()),
                  "env": {"TERM": term, "SHELL": "/bin/sh"}, "title": title}
        self._file.write(json.dumps(header) + "\n")

    @classmethod
    def create(cls, directory: Path, *, grant: str, user: str, target: str, conn: int, channel: int,
               cols: int, rows: int, term: str) -> Recording:
        """Named so that `ls` finds a grant's or a user's sessions by time: ns_grant_user_UTC_id.cast."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{_safe(grant.replace('/', '_'))}_{_safe(user)}_{stamp}_{conn}-{channel}.cast"
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / name, cols, rows, term, f"{user} {target}")

    def _event(self, kind: str, data: str) -> None:
        line = json.dumps([round(time.monotonic() - self._start, 6), kind, data], ensure_ascii=False)
        with self._lock:
            if not self._file.closed:
                self._file.write(line + "\n")

    def output(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self._event("o", text)

    def resize(self, cols: int, rows: int) -> None:
        self._event("r", f"{cols}x{rows}")

    def close(self) -> None:
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._event("o", tail)
        with self._lock:
            self._file.close()
