"""What `stat -c STAT_FORMAT` prints, parsed byte-exact whatever the file names hold.

stat prints each file as `FIELDS PATH\\n`, with PATH as it was given, raw (GNU coreutils and
busybox alike). A name may hold newlines, so lines say nothing about where a record ends: a user
who can create a file named `a\\n81a4 0 0 0 0 0 /etc/x` would make a line-based listing show an
entry that does not exist, or hide real ones. What no file name can hold is `/` (nor NUL).

A listing is one `find DIR -mindepth 1 -maxdepth 1 -exec stat -c STAT_FORMAT {} +`: every path
it prints is PREFIX + NAME, with PREFIX known (DIR as find was given it, plus `/`) and starting
with `/`. After a record's prefix, its name therefore runs to the last newline before the next
`/`, which is the first byte of the next record's prefix (the fields between hold neither `/`
nor newlines); the last name runs to the final newline. No escaping to undo, no extra process,
nothing that busybox's find or stat lacks.

A single stat's path is the one the gateway passed: the record must end with exactly it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import paramiko

STAT_FORMAT = "%f %s %u %g %X %Y %n"  # raw mode (hex), size, uid, gid, atime, mtime, name
_FIELDS = 6  # numbers before the name
_U32, _U64 = (1 << 32) - 1, (1 << 64) - 1


class MalformedListing(ValueError):
    """stat's output does not have the shape it always has (a forged or broken tool)."""


def fs_bytes(text: str) -> bytes:
    """A path as the container's file system holds it (names were decoded with surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def fs_text(raw: bytes) -> str:
    """A name for paramiko, which wants str; fs_bytes gives back the same bytes."""
    return raw.decode("utf-8", "surrogateescape")


def listing_directory(where: str) -> str:
    """The directory as find gets it, so that the prefix of every path it prints is known:
    no repeated `/`, no `.` component, no trailing `/` (each means the same directory on Linux;
    `..` is kept, it may follow a symlink)."""
    parts = [p for p in where.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


def listing_prefix(directory: str) -> bytes:
    """What find prints before each name below `directory` (a listing_directory)."""
    return fs_bytes(directory if directory == "/" else directory + "/")


def _number(text: str, base: int = 10) -> int | None:
    """A plain non-negative or negative number as stat prints it; None for anything else
    (no `_`, no `+`, no spaces: int() would accept those)."""
    digits = text[1:] if text.startswith("-") else text
    ok = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
    if not digits or len(digits) > 24 or any(c not in ok for c in digits):
        return None
    return int(text, base)


def parse_fields(fields: bytes, name: str) -> paramiko.SFTPAttributes | None:
    """The numbers before a record's path; None unless every one fits SFTP v3 (times are
    unsigned 32-bit there: earlier or later ones are clamped, as OpenSSH's sftp-server does)."""
    try:
        parts = fields.decode("ascii").split(" ")
    except UnicodeDecodeError:
        return None
    if len(parts) != _FIELDS:
        return None
    mode, size, uid, gid, atime, mtime = _number(parts[0], 16), *(_number(p) for p in parts[1:])
    if mode is None or size is None or uid is None or gid is None or atime is None or mtime is None:
        return None
    if not (0 <= mode <= _U32 and 0 <= size <= _U64 and 0 <= uid <= _U32 and 0 <= gid <= _U32):
        return None
    attr = paramiko.SFTPAttributes()
    attr.st_mode, attr.st_size, attr.st_uid, attr.st_gid = mode, size, uid, gid
    attr.st_atime, attr.st_mtime = min(max(atime, 0), _U32), min(max(mtime, 0), _U32)
    attr.filename = name
    return attr


def parse_stat(out: bytes, path: str) -> paramiko.SFTPAttributes | None:
    """The output of `stat -c STAT_FORMAT -- path`: exactly `FIELDS path\\n`, else None."""
    suffix = b" " + fs_bytes(path) + b"\n"
    if not out.endswith(suffix):
        return None
    return parse_fields(out[:-len(suffix)], posixpath.basename(path) or path)


def parse_listing(out: bytes, prefix: bytes, complete: bool = True) -> Iterator[paramiko.SFTPAttributes]:
    """The entries of a listing (see the module docstring), in stat's order. A record whose
    numbers do not fit is skipped; output of any other shape raises MalformedListing (after the
    entries before it). When the output was cut at a limit (`complete` False), its last record
    may be a piece of one and is left out."""
    if not prefix.startswith(b"/"):
        raise ValueError("a listing prefix starts with /")
    pos, end = 0, len(out)
    while pos < end:
        slash = out.find(b"/", pos)
        if slash < 0:
            if complete:
                raise MalformedListing("a record without a path")
            return  # the fields of a record cut at the limit
        if out[slash - 1:slash] != b" " or b"\n" in out[pos:slash]:
            raise MalformedListing("a record whose fields hold a newline or are not followed by a space")
        if not out.startswith(prefix, slash):
            if not complete and end - slash < len(prefix):
                return
            raise MalformedListing("a path outside the listed directory")
        start = slash + len(prefix)
        following = out.find(b"/", start)
        if following < 0:  # the last record: its name runs to the final newline
            if not complete or not out.endswith(b"\n"):
                return
            stop = end - 1
        else:
            stop = out.rfind(b"\n", start, following)
            if stop < 0:
                raise MalformedListing("a name holding /")
        name = out[start:stop]
        if not name or name in (b".", b"..") or b"\0" in name:
            raise MalformedListing("an empty, dot or NUL name")
        attr = parse_fields(out[pos:slash - 1], fs_text(name))
        if attr is not None:
            yield attr
        pos = stop + 1
