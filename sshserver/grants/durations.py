"""Durations (`90s`, `15m`, `1h30m`) and RFC 3339 times as SSHAccess objects write them.

Both raise ValueError, and nothing else, for any input they cannot use: they read what a grantor
wrote, and one bad value must only ever invalidate its own grant."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

# At most 6 digits per unit, as the CRD's pattern: `int()` of 400 digits is fine, but the float of
# it overflows, and no session needs a limit longer than 999999 hours (114 years).
_DURATION = re.compile(r"(?:([0-9]{1,6})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,6})s)?", re.ASCII)
MAX_DURATION = 999999 * 3600 + 999999 * 60 + 999999
_MAX_TIME_TEXT = 64


def parse_duration(text: str | int | float) -> float:
    """Seconds, more than zero. Numbers (from --access files) are seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        # Compared before any float conversion: float() of a 400-digit int overflows.
        if (isinstance(text, float) and not math.isfinite(text)) or not 0 < text <= MAX_DURATION:
            raise ValueError(f"invalid duration {text!r}: more than 0 and at most {MAX_DURATION} seconds")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"invalid duration of type {type(text).__name__}: use forms like 90s, 15m, 8h, 1h30m")
    m = _DURATION.fullmatch(text)
    if not m or not any(m.groups()):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise ValueError(f"invalid duration {shown!r}: use forms like 90s, 15m, 8h, 1h30m "
                         "(at most 6 digits per unit)")
    h, mi, s = (int(g or 0) for g in m.groups())
    seconds = h * 3600 + mi * 60 + s
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return float(seconds)


def parse_time(text: str | datetime) -> datetime:
    """An aware datetime in UTC. A naive datetime (PyYAML's reading of a timestamp without a zone)
    is taken as UTC; a string needs its zone."""
    if isinstance(text, datetime):
        value = text if text.tzinfo else text.replace(tzinfo=UTC)
    elif isinstance(text, str):
        shown = text if len(text) <= 40 else text[:40] + "…"
        if len(text) > _MAX_TIME_TEXT:
            raise ValueError(f"invalid time {shown!r}: use RFC 3339, e.g. 2026-01-31T18:00:00Z")
        try:
            value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"invalid time {shown!r}: use RFC 3339, e.g. 2026-01-31T18:00:00Z") from None
        if value.tzinfo is None:
            raise ValueError(f"time {shown!r} needs a time zone, e.g. a trailing Z")
    else:
        raise ValueError(f"invalid time of type {type(text).__name__}: use RFC 3339, e.g. 2026-01-31T18:00:00Z")
    try:
        # In UTC, so that comparing two times never overflows (0001-01-01T00:00:00+01:00 would).
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"time {value.isoformat()!r} is out of range once converted to UTC") from None
