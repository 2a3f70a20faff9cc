"""Hangs up what sessions leave running in a container.

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
signalled.

One exec hangs up any number of sessions of the same container (hangupqueue.py batches them):
the tokens are positional arguments, never shell text, and the script answers one line per
token, `TOKEN COUNT`. One `grep` over every process finds the few that carry any of the
tokens, one more per token among those, and one pass over the process table signals them all:
a few milliseconds even among hundreds of processes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence

from sshserver.kube.execstream import ExecError
from sshserver.kube.podrunner import PodRunner
from sshserver.observability.logevents import event
from sshserver.sessions.trusted import TRUSTED_FUNCTIONS, first_trusted

log = logging.getLogger("podssh.hangup")

ENV = "PODSSH_SESSION"  # also spelled out in the script

# grep without -F: busybox's -F stops at the first NUL of a line, and environ is NUL-separated.
# grep by a checked absolute path (trusted.py): under a grant whose shell is a fixed command,
# the user may have been able to upload files, but not to have the gateway run them.
_SCRIPT = TRUSTED_FUNCTIONS + first_trusted("grep", ("/bin/grep", "/usr/bin/grep")) + r"""
[ -n "$grep" ] || { echo "no trusted grep" >&2; exit 1; }
stat() { read -r st < "/proc/$1/stat" || return 1; st=${st##*) }; }
tokens= patterns=
for token do  # ours, but checked all the same: they become grep patterns and words below
  case $token in ''|*[!0-9a-f]*) continue ;; esac
  tokens="$tokens $token"
  patterns="$patterns -e PODSSH_SESSION=$token"
done
[ -n "$tokens" ] || exit 0
marked=$("$grep" -l $patterns /proc/[0-9]*/environ 2>/dev/null)
leaders=" "  # " TOKEN:LEADER" for every token whose exec session still has processes
if [ -n "$marked" ]; then
  for token in $tokens; do
    for f in $("$grep" -l "PODSSH_SESSION=$token" $marked 2>/dev/null); do
      p=${f#/proc/}; p=${p%/environ}
      stat "$p" 2>/dev/null || continue
      set -- $st
      sid=$4
      stat "$sid" 2>/dev/null || continue
      set -- $st
      if [ "$2" = 0 ] && [ "$4" = "$sid" ]; then leaders="$leaders$token:$sid "; break; fi
    done
  done
fi
hung=" "  # the session id of every process signalled, once per process
if [ "$leaders" != " " ]; then
  for f in /proc/[0-9]*/stat; do
    p=${f#/proc/}; p=${p%/stat}
    stat "$p" 2>/dev/null || continue
    set -- $st
    case $leaders in *":$4 "*) if kill -HUP "$p" 2>/dev/null; then hung="$hung$4 "; fi ;; esac
  done
fi
for token in $tokens; do
  n=0
  case $leaders in
    *" $token:"*)
      leader=${leaders#*" $token:"}; leader=${leader%% *}
      for s in $hung; do if [ "$s" = "$leader" ]; then n=$((n + 1)); fi; done ;;
  esac
  echo "$token $n"
done
"""


def new_token() -> str:
    return secrets.token_hex(8)


def hang_up(runner: PodRunner, tokens: Sequence[str]) -> dict[str, int | None]:
    """SIGHUP to the processes of the execs marked by tokens, in one exec: how many got it, per
    token; None for a token whose count is unknown (the exec failed, or did not answer for it)."""
    unknown: dict[str, int | None] = dict.fromkeys(tokens)
    if not tokens:
        return unknown
    try:
        result = runner.run(["/bin/sh", "-c", _SCRIPT, "sh", *tokens])
    except ExecError as exc:  # the pod is gone, or the API refuses: nothing left to signal here
        event(log, "hangup_failed", logging.INFO, tokens=len(tokens), error=str(exc)[:200])
        return unknown
    except Exception as exc:  # best effort, run after sessions ended: it must never break anything
        event(log, "hangup_failed", logging.WARNING, tokens=len(tokens), error=f"{type(exc).__name__}: {exc}"[:200])
        return unknown
    if not result.ok:
        event(log, "hangup_failed", logging.INFO, tokens=len(tokens), exit_status=result.status.code,
              error=result.stderr.decode(errors="replace")[:200])
        return unknown
    return {**unknown, **parse_counts(result.stdout, unknown.keys())}


def parse_counts(stdout: bytes, tokens: Iterable[str]) -> dict[str, int]:
    """The script's `TOKEN COUNT` lines, for the tokens asked about only."""
    asked = set(tokens)
    counts: dict[str, int] = {}
    for line in stdout.decode("ascii", errors="replace").splitlines():
        token, _, count = line.partition(" ")
        if token in asked and count.isdigit():
            counts[token] = int(count)
    return counts
