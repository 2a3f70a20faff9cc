"""Shell functions (builtins only) that decide whether the gateway may run a program in a
container: only when the exec's user cannot have put it there.

A grant holder may be able to write files (sftp) without being allowed to run commands, so
the gateway never runs a program of its own choosing by PATH, and only runs one whose file and
directories that user could not have written: for a non-root user, none of them is writable
or owned by that user (an owner can chmod a read-only file back, e.g. with SFTP's SETSTAT);
for root (who can write anything anyway), all are owned by root.

`trusted PATH` is true for such an executable regular file. Define with TRUSTED_FUNCTIONS at
the top of a script; it sets `uid`, and uses `d` as a scratch variable.
"""

TRUSTED_FUNCTIONS = r"""
uid=
while read -r k r e _; do if [ "$k" = Uid: ]; then uid=$e; break; fi; done < /proc/self/status 2>/dev/null
safe() { if [ "$uid" = 0 ]; then [ -O "$1" ]; else [ -n "$uid" ] && [ ! -w "$1" ] && [ ! -O "$1" ]; fi; }
trusted() {
  [ -f "$1" ] && [ -x "$1" ] && safe "$1" || return 1
  d=${1%/*}
  while [ -n "$d" ]; do safe "$d" || return 1; d=${d%/*}; done
  safe /
}
"""


def first_trusted(variable: str, candidates: tuple[str, ...]) -> str:
    """Shell text that sets `variable` to the first trusted candidate (fixed paths, not client
    data), or to the empty string."""
    assert variable.isidentifier() and all(c.startswith("/") and "'" not in c for c in candidates)
    listed = " ".join(f"'{c}'" for c in candidates)
    return f'{variable}=; for c in {listed}; do if trusted "$c"; then {variable}=$c; break; fi; done\n'
