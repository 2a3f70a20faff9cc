"""Text from elsewhere (a cluster object, a peer's SSH version line, a user's command) made safe
to show on a terminal or in one line of output: a control character there could move the cursor,
rewrite what was printed before, or set the terminal's title."""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every character that is not printable (C0 and C1 controls, DEL, line and
    paragraph separators, ...) replaced by a space: one line, shown as it is."""
    return "".join(c if c.isprintable() else " " for c in text)
