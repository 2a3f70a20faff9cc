"""Which environment variable names a client may send at all.

OpenSSH's `SetEnv`/`SendEnv` pass names verbatim (`;`, `$( )`, `${IFS}` included); only the
server can refuse them. A name is accepted only when it is a plain shell identifier, so that it
is the same string to every shell and tool it reaches. Even then it is never pasted into shell
text: see session.build_command, which passes names and values as arguments.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 256


def valid_env_name(name: str) -> bool:
    """True for `[A-Za-z_][A-Za-z0-9_]*` (whole string, no trailing newline), at most MAX_NAME long."""
    return len(name) <= MAX_NAME and _NAME.fullmatch(name) is not None
