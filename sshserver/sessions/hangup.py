"""Hangs up what a session leaves running in its container.

Closing an exec stream does not end the processes it started: the runtime keeps their stdio
open, so a shell whose client vanished, a `tail -f`, or the writer behind `| head` would run on
in the pod for good. sshd would close their terminal (SIGHUP) or their pipes (SIGPIPE); the
gateway does the nearest thing it can: when a session ends other than by its command's own
exit, it sends SIGHUP to every process of the exec's session, as a terminal hangup would.
Processes started with nohup or setsid survive, as they would under sshd.

The exec is found by a token its shell exports, `PODSSH_SESSION`: a process that holds it
belongs to the exec's session if that session's leader has no parent in the container (runc
starts each exec as a session leader whose parent is outside the pod; a process that called
setsid leads a session of its own, with a parent). Every process of that session is
signalled. One `grep` and `sh` builtins: a few milliseconds even among hundreds of processes.
"""

from __future__ import annotations

import logging
import secrets
import threading

from sshserver.kube.execstream import ExecError
from sshserver.kube.podrunner import PodRunner
from sshserver.observability.logevents import event
from sshserver.sessions.trusted import TRUSTED_FUNCTIONS, first_trusted

log = logging.getLogger("podssh.hangup")

ENV = "PODSSH_SESSION"  # also spelled out in the script

# Cleanup is not urgent: after a mass disconnect (a network blip, a gateway restart) these
# execs must not flood the API server and the kubelet.
_RUNNING = threading.BoundedSemaphore(16)

# grep without -F: busybox's -F stops at the first NUL of a line, and environ is NUL-separated.
# grep by a checked absolute path (trusted.py): under a grant whose shell is a fixed command,
# the user may have been able to upload files, but not to have the gateway run them.
_SCRIPT = TRUSTED_FUNCTIONS + first_trusted("grep", ("/bin/grep", "/usr/bin/grep")) + r"""
token=$1
[ -n "$grep" ] || { echo "no trusted grep" >&2; exit 1; }
stat() { read -r st < "/proc/$1/stat" || return 1; st=${st##*) }; }
leader=
for f in $("$grep" -l "PODSSH_SESSION=$token" /proc/[0-9]*/environ 2>/dev/null); do
  p=${f#/proc/}; p=${p%/environ}
  stat "$p" 2>/dev/null || continue
  set -- $st
  sid=$4
  stat "$sid" 2>/dev/null || continue
  set -- $st
  if [ "$2" = 0 ] && [ "$4" = "$sid" ]; then leader=$sid; break; fi
done
n=0
if [ -n "$leader" ]; then
  for f in /proc/[0-9]*/stat; do
    p=${f#/proc/}; p=${p%/stat}
    stat "$p" 2>/dev/null || continue
    set -- $st
    if [ "$4" = "$leader" ] && kill -HUP "$p" 2>/dev/null; then n=$((n + 1)); fi
  done
fi
echo "$n"
"""


def new_token() -> str:
    return secrets.token_hex(8)


def hang_up(runner: PodRunner, token: str) -> int | None:
    """SIGHUP to the processes of the exec marked by token; how many got it, None if unknown."""
    try:
        with _RUNNING:
            result = runner.run(["/bin/sh", "-c", _SCRIPT, "sh", token])
    except ExecError as exc:  # the pod is gone, or the API refuses: nothing left to signal here
        event(log, "hangup_failed", logging.INFO, error=str(exc)[:200])
        return None
    except Exception as exc:  # best effort, run while a session ends: it must never break that
        event(log, "hangup_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}"[:200])
        return None
    try:
        return int(result.stdout.strip()) if result.ok else None
    except ValueError:
        return None
