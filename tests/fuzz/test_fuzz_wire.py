"""A short run of the wire-level fuzzer (tests/fuzz/wirefuzz.py) in the normal test run; `make
fuzz-wire` runs it long. Sessions: $PODSSH_WIRE_SESSIONS (default 300)."""

from __future__ import annotations

import os
import random

from tests.fuzz import wirefuzz


def test_mutated_ssh_messages_never_crash_the_gateway() -> None:
    sessions = int(os.environ.get("PODSSH_WIRE_SESSIONS", "300"))
    seed = random.randrange(1 << 30)
    report = wirefuzz.run(sessions, seed, workers=8)
    assert not report.crashes, f"seed {seed}: {report.crashes}"
    assert report.login_ok, f"seed {seed}: a legitimate login failed after fuzzing"
    assert report.ok, f"seed {seed}: threads/fds {report.baseline} -> {report.after}"
