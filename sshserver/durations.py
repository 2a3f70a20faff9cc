"""Durations (`90s`, `15m`, `1h30m`) and RFC 3339 times as SSHAccess objects write them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str | int | float) -> float:
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    m = _DURATION.match(str(text).strip())
    if not m or not any(m.groups()):
        raise ValueError(f"invalid duration {text!r}: use forms like 90s, 15m, 8h, 1h30m")
    h, mi, s = (int(g or 0) for g in m.groups())
    return float(h * 3600 + mi * 60 + s)


def parse_time(text: str | datetime) -> datetime:
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid time {text!r}: use RFC 3339, e.g. 2026-01-31T18:00:00Z") from None
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} needs a time zone, e.g. a trailing Z")
    return value
