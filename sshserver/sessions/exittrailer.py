"""The command's own word on how it ended, because the API server's can be wrong.

When the connection between the API server and the kubelet breaks under a running exec (the
kubelet restarts, the node goes away), the API server's stream translator reports `Success`:
its SPDY executor sees the streams end without an error (measured here: a `sleep 600` whose
kubelet was killed "exited 0"; kubectl has the same problem, kubectl#1208). A session that lost
its stream must never report 0, so a command's wrapper shell also writes its exit status as the
last line of stderr, behind a random per-session token:

    /bin/sh -c "$1"; s=$?; echo "$2:$s" >&2; exit $s        ($2 = the token)

The gateway strips that line from what the user sees and believes a `Success` only when the
line came. Only for commands without a terminal (with one, stderr is merged into the terminal
and the line would be transformed by it); `echo` is a builtin of every shell.

Threads: one TrailerFilter per session, used by the session's output thread only.
"""

from __future__ import annotations

import re
import secrets

MAX_CODE_DIGITS = 3


def new_token() -> str:
    return "podssh-exit-" + secrets.token_hex(8)


class TrailerFilter:
    """Removes `token:N\\n` lines from a stderr stream and remembers the last N.

    Bytes that could be the beginning of such a line at the end of a chunk are held back until
    the next chunk (or `flush`) shows whether they are: at most len(token) + 5 bytes, so stderr
    is delayed by nothing but a partial marker."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._line = re.compile(re.escape(self._token) + rb":([0-9]{1,%d})\n" % MAX_CODE_DIGITS)
        self._held = b""
        self.code: int | None = None

    def feed(self, data: bytes) -> bytes:
        """What of `data` (and of what was held) may go to the user now."""
        buf = self._held + data
        if self._token[:1] not in buf:  # the common case: nothing to look at
            self._held = b""
            return buf
        buf = self._line.sub(self._take, buf)
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep:] if keep else b""
        return buf[: len(buf) - keep]

    def flush(self) -> bytes:
        """At the end of the stream: whatever was held back was the user's after all."""
        held, self._held = self._held, b""
        return held

    def _take(self, match: re.Match[bytes]) -> bytes:
        self.code = int(match.group(1))
        return b""

    def _partial_suffix(self, buf: bytes) -> int:
        """Length of the longest end of buf that a marker line could still grow from."""
        token = self._token
        longest = min(len(buf), len(token) + 1 + MAX_CODE_DIGITS)
        for size in range(longest, 0, -1):
            tail = buf[-size:]
            if size <= len(token):
                if token.startswith(tail):
                    return size
            elif tail.startswith(token + b":") and all(48 <= b <= 57 for b in tail[len(token) + 1:]):
                return size  # the token, its colon and the digits so far (perhaps none yet)
        return 0
