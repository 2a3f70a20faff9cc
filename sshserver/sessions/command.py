"""The argv a session runs in the container: a fixed shell script, the client's strings as its
positional arguments (never pasted into shell text), as sshd would run the user's command."""

from __future__ import annotations

from collections.abc import Mapping

from sshserver.grants.access import Grant, SessionKind
from sshserver.grants.envnames import valid_env_name
from sshserver.sessions import hangup
from sshserver.sessions.trusted import TRUSTED_FUNCTIONS, first_trusted

STTY = ("/bin/stty", "/usr/bin/stty")
LOGIN_SHELL = "if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l"


def _exports(env: Mapping[str, str], first: int) -> tuple[str, list[str]]:
    """Shell text that exports env from positional parameters starting at $first, and those
    parameters. Only parameter numbers are written into the script: names and values, both
    the client's, arrive as arguments and are never parsed as shell code. A name that is not
    an identifier is dropped here too (the env hook refused it already)."""
    args: list[str] = []
    words: list[str] = []
    for name, value in sorted(env.items()):
        if not valid_env_name(name):
            continue
        n = first + len(args)
        words.append(f'"${{{n}}}=${{{n + 1}}}"')
        args += [name, value]
    if not words:
        return "", []
    return f"export {' '.join(words)}; shift {len(args)}; ", args


def build_command(kind: SessionKind | str, command: str | None, grant: Grant, env: Mapping[str, str],
                  size: tuple[int, int] | None = None, token: str | None = None,
                  trailer: str | None = None) -> tuple[str, ...]:
    """The argv for the container: a shell runs the user's command exactly as sshd would.

    With a terminal, that shell first sets its size, as sshd does before it starts the user's
    program: containerd drops a resize message that arrives before the exec'd process has
    started ("cannot resize a stopped container"), and nothing in the protocol says when it has.
    `token` marks the exec's processes for the hangup at the end (see hangup.py); `trailer`
    makes the wrapper write the command's exit status as the last line of stderr (exittrailer.py).

    The script (argv[2]) is fixed text: the client's strings (env names and values, the
    command) are positional parameters, consumed by `shift` before the command runs.
    """
    env = {k: v for k, v in env.items() if valid_env_name(k)}
    if kind == "shell" and grant.shell_command and not env and size is None:
        return grant.shell_command  # it may run where there is no /bin/sh at all
    marked = {**env, hangup.ENV: token} if token else env
    prelude, env_args = _exports(marked, 1)
    if size is not None:
        # stty by a checked path (a shellCommand grant may allow no command of the user's), in a
        # subshell so that the check's variables never touch the session's environment.
        prelude += ("(" + TRUSTED_FUNCTIONS + first_trusted("stty", STTY) +
                    f'[ -n "$stty" ] && "$stty" cols {int(size[0])} rows {int(size[1])} 2>/dev/null); ')
    if kind == "shell" and grant.shell_command:
        return ("/bin/sh", "-c", prelude + 'exec "$@"', "sh", *env_args, *grant.shell_command)
    if kind == "shell":
        return ("/bin/sh", "-c", prelude + LOGIN_SHELL, "sh", *env_args)
    if kind == "sftp":
        return ("sftp-server",)  # replaced by the path found in the container
    assert command is not None
    # The command runs in a child shell while this one keeps the exec's stdout open: containerd
    # closes stdin as soon as stdout closes (containerd issue 13934), so `cat > file` would
    # otherwise receive a truncated upload. `exit $?` passes the status through unchanged.
    if trailer is not None:
        return ("/bin/sh", "-c", prelude + '/bin/sh -c "$1"; s=$?; echo "$2:$s" >&2; exit $s', "sh",
                *env_args, command, trailer)
    return ("/bin/sh", "-c", prelude + '/bin/sh -c "$1"; exit $?', "sh", *env_args, command)


def missing_tool_hint(command: str | None) -> str | None:
    """What to do when scp -O or rsync finds no binary of its own in the container."""
    tool = (command or "").split(maxsplit=1)[0] if command else ""
    if tool == "scp":
        return "no scp in this container: use scp without -O (it speaks SFTP, which needs nothing in the image)"
    if tool == "rsync":
        return "no rsync in this container: rsync needs rsync at both ends; use scp or sftp instead"
    return None
