"""Breaking the real local cluster on purpose: stop one component, then bring it back with
`hack/cluster up` (which starts only what is not running)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.cluster import REPO

STATE = Path(os.environ.get("PODSSH_CLUSTER_DIR", "/var/lib/podssh-cluster"))


def pid_of(component: str) -> int:
    return int((STATE / "run" / f"{component}.pid").read_text().strip())


def stop(component: str, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
    """Kills the component and waits until its process is gone: `kill -0` still succeeds while
    a process exits, and `hack/cluster up` would then take it for running."""
    pid = pid_of(component)
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{component} (pid {pid}) still alive {timeout}s after signal {sig}")
        time.sleep(0.05)


def bring_back() -> float:
    """`hack/cluster up`; returns the monotonic time at which the cluster answered again."""
    proc = subprocess.run([str(REPO / "hack" / "cluster"), "up"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"hack/cluster up failed:\n{proc.stderr[-3000:]}")
    return time.monotonic()
