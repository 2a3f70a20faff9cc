"""Four fixes to paramiko's server side that an SSH gateway exposed to anyone needs.

1. Linear integer conversion. `paramiko.util.inflate_long` builds an integer 32 bits at a time
   (`out = (out << 32) + word`): quadratic in the length. `Message.get_bytes` zero-pads a string
   whose length field claims more than the packet holds (up to 1 MiB), so a userauth request
   carrying an `ssh-rsa` key blob of a few bytes whose exponent claims ~1 MiB cost ~90 s of CPU
   with the GIL held, before any signature check (and a DH `e` during key exchange the same).
   `int.from_bytes` does the same conversion in linear time; the semantics are identical
   (big-endian two's complement unless `always_positive`; sign extension to a multiple of 4
   bytes does not change the value), which tests/unit/ssh/test_paramiko_patches.py checks against
   paramiko's own function with hypothesis. `deflate_long` (the way back, 4 bytes at a time,
   run by `key.asbytes()`) is quadratic as well and replaced by `int.to_bytes` the same way.
   Every module that bound either function by name is re-pointed too.
2. Key blobs are checked before paramiko parses them. A publickey userauth request whose blob is
   larger than MAX_KEY_BLOB, whose blob (or algorithm) runs past the packet, or whose
   length-prefixed fields do not fit exactly (the padding trick above), is answered with
   USERAUTH_FAILURE at once and counted as a failed attempt by the server object
   (`malformed_key`), without paramiko ever building a key from it.
3. Receive windows are enforced. paramiko advertises a window but accepts whatever the peer
   sends; a client that ignores it could make a channel buffer without bound. Data beyond the
   window advertised to the client (plus one packet of slack) is dropped, as OpenSSH does
   ("rcvd too much data"), and counted on the channel (`podssh_window_violations`).
4. A publickey attempt whose signature fails is reported. paramiko asks the server object about
   the key before it verifies the signature and says nothing when the signature then fails, so
   an attempt with a granted public key (public: anyone may have it) and a wrong signature went
   unaudited, unthrottled and uncounted by max_auth_tries. Every refused publickey request is
   now told to the server object (`publickey_refused`) before the failure is sent.

4. Large receive windows come from a gateway-wide budget (windowbudget.py): grow_window takes the
   channel's share before growing it, and Channel._set_closed (every way a channel closes, under
   its lock) gives the share back.

These rely on paramiko internals (AuthHandler._parse_userauth_request, Channel._feed): the version
range is pinned in pyproject.toml and `install()` refuses to run against a paramiko without them.
`install()` is idempotent and called when the gateway module is imported; it changes only server
mode behaviour (client transports are left as they were) except for the linear decoding.
"""

from __future__ import annotations

import contextlib
import struct
import threading
from collections.abc import Callable
from typing import Any

import paramiko
import paramiko.auth_handler
import paramiko.channel
import paramiko.common
import paramiko.util

from sshserver.ssh.windowbudget import WindowBudget

MAX_KEY_BLOB = 16 * 1024  # OpenSSH certificates with many principals stay well under this
MAX_KEY_FIELD = 2 * 1024 + 1  # a 16384-bit RSA modulus as an mpint
CERT_SUFFIX = "-cert-v01@openssh.com"
# Fields (all length-prefixed strings) after the type name of each plain key type.
KEY_FIELDS = {
    "ssh-rsa": 2, "ssh-dss": 4, "ssh-ed25519": 1,
    "ecdsa-sha2-nistp256": 2, "ecdsa-sha2-nistp384": 2, "ecdsa-sha2-nistp521": 2,
    "sk-ssh-ed25519@openssh.com": 2, "sk-ecdsa-sha2-nistp256@openssh.com": 3,
}

_original_inflate_long = paramiko.util.inflate_long
_original_deflate_long = paramiko.util.deflate_long
_installed = False
_install_lock = threading.Lock()


def inflate_long(s: bytes | bytearray | memoryview, always_positive: bool = False) -> int:
    """paramiko.util.inflate_long in linear time: big-endian, two's complement unless always_positive."""
    return int.from_bytes(bytes(s), "big", signed=not always_positive)


def deflate_long(n: int, add_sign_padding: bool = True) -> bytes:
    """paramiko.util.deflate_long in linear time (it prepends 4 bytes at a time: quadratic, and
    `key.asbytes()` of a padded pre-auth key ran it on a ~1 MiB number): the shortest big-endian
    two's complement; without sign padding, a leading 0x00/0xFF that only carries the sign is
    left out, as paramiko's function does."""
    if not isinstance(n, int):  # paramiko's own answer (and error) for what is not an int:
        return _original_deflate_long(n, add_sign_padding)  # e.g. a K of None from a broken kex
    if n in (0, -1):
        return b"\x00" if n == 0 else b"\xff"
    size = ((n if n > 0 else ~n).bit_length() + 8) // 8
    out = n.to_bytes(size, "big", signed=True)
    if not add_sign_padding and len(out) > 1 and out[0] == (0 if n > 0 else 0xFF):
        out = out[1:]
    return out


class MalformedKeyBlob(ValueError):
    """A publickey request's key blob that podssh refuses to hand to paramiko."""


def _take_string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(data):
        raise MalformedKeyBlob("truncated length field")
    (n,) = struct.unpack_from(">I", data, pos)
    pos += 4
    if n > len(data) - pos:
        raise MalformedKeyBlob(f"a field claims {n} bytes, {len(data) - pos} left")
    return data[pos:pos + n], pos + n


def check_key_blob(blob: bytes) -> None:
    """Raises MalformedKeyBlob unless `blob` is small and its fields fit exactly."""
    if len(blob) > MAX_KEY_BLOB:
        raise MalformedKeyBlob(f"key blob of {len(blob)} bytes (limit {MAX_KEY_BLOB})")
    name, pos = _take_string(blob, 0)
    kind = name.decode("ascii", "replace")
    base = kind.removesuffix(CERT_SUFFIX)
    fields = KEY_FIELDS.get(base)
    if fields is None:
        return  # unknown type: paramiko refuses it without parsing numbers
    if kind != base:
        _nonce, pos = _take_string(blob, pos)
    for _ in range(fields):
        value, pos = _take_string(blob, pos)
        if len(value) > MAX_KEY_FIELD:
            raise MalformedKeyBlob(f"a key field of {len(value)} bytes (limit {MAX_KEY_FIELD})")
    if kind == base and pos != len(blob):
        raise MalformedKeyBlob(f"{len(blob) - pos} bytes after the key")


def publickey_blob(payload: bytes) -> tuple[str, bytes] | None:
    """(username, key blob) of a USERAUTH_REQUEST payload (after the message byte) for method
    publickey; None for other methods or when not even the method can be read (paramiko then
    refuses it without building a key). A publickey request whose algorithm or blob runs past
    the packet raises MalformedKeyBlob: paramiko would zero-pad the blob to what its length
    claims (up to 1 MiB) and build a key of it."""
    try:
        user, pos = _take_string(payload, 0)
        _service, pos = _take_string(payload, pos)
        method, pos = _take_string(payload, pos)
    except MalformedKeyBlob:
        return None
    if method != b"publickey":
        return None
    if pos >= len(payload):
        raise MalformedKeyBlob("publickey request without a key")
    _algorithm, pos = _take_string(payload, pos + 1)
    blob, pos = _take_string(payload, pos)
    return user.decode("utf-8", "replace"), blob


def _username(payload: bytes) -> str:
    try:
        return _take_string(payload, 0)[0].decode("utf-8", "replace")
    except MalformedKeyBlob:
        return ""


def _guard_userauth(original: Callable[[Any, paramiko.Message], None]) -> Callable[[Any, paramiko.Message], None]:
    def _parse_userauth_request(self: Any, m: paramiko.Message) -> None:
        if self.transport.server_mode and not self.authenticated:
            start = m.packet.tell()
            payload = m.packet.getvalue()[start:]
            found = None
            try:
                found = publickey_blob(payload)
                if found is not None:
                    check_key_blob(found[1])
            except MalformedKeyBlob as exc:
                username = found[0] if found is not None else _username(payload)
                server = self.transport.server_object
                refuse = getattr(server, "malformed_key", None)
                if refuse is not None:
                    refuse(username, str(exc))
                self._send_auth_result(username, "publickey", paramiko.AUTH_FAILED)
                return
        original(self, m)

    _parse_userauth_request.podssh_guard = True  # type: ignore[attr-defined]
    return _parse_userauth_request


def _report_refused_publickey(
        original: Callable[[Any, str, str, int], None]) -> Callable[[Any, str, str, int], None]:
    def _send_auth_result(self: Any, username: str, method: str, result: int) -> None:
        if self.transport.server_mode and method == "publickey" and result == paramiko.AUTH_FAILED:
            refused = getattr(self.transport.server_object, "publickey_refused", None)
            if refused is not None:
                refused(username)
        original(self, username, method, result)

    _send_auth_result.podssh_guard = True  # type: ignore[attr-defined]
    return _send_auth_result


def _bounded_feed(original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    def _feed(self: Any, m: Any) -> None:
        transport = self.transport
        if transport is None or not transport.server_mode:
            original(self, m)
            return
        s = m if isinstance(m, bytes) else m.get_binary()
        buffered = len(self.in_buffer) + len(self.in_stderr_buffer)
        if buffered + len(s) > self.in_window_size + self.in_max_packet_size:
            self.podssh_window_violations = getattr(self, "podssh_window_violations", 0) + 1
            return  # beyond the window we advertised: dropped, as OpenSSH does
        original(self, s)

    _feed.podssh_guard = True  # type: ignore[attr-defined]
    return _feed


def _bounded_feed_extended(original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    def _feed_extended(self: Any, m: Any) -> None:
        transport = self.transport
        if transport is None or not transport.server_mode:
            original(self, m)
            return
        code, s = m.get_int(), m.get_binary()
        if code != 1:
            return
        if self.combine_stderr:
            self._feed(s)
            return
        buffered = len(self.in_buffer) + len(self.in_stderr_buffer)
        if buffered + len(s) > self.in_window_size + self.in_max_packet_size:
            self.podssh_window_violations = getattr(self, "podssh_window_violations", 0) + 1
            return
        self.in_stderr_buffer.feed(s)

    return _feed_extended


MAX_INFO_RESPONSES = 64  # keyboard-interactive answers in one USERAUTH_INFO_RESPONSE


def _guard_info_response(original: Callable[[Any, paramiko.Message], None]) -> Callable[[Any, paramiko.Message], None]:
    """paramiko reads the response count of a USERAUTH_INFO_RESPONSE and appends that many strings,
    padding past the end of the packet with empty ones: a 5-byte message claiming ~4e9 responses
    grows a list without bound (gigabytes, with the GIL held), before authentication and whether or
    not a prompt was ever sent. A count larger than MAX_INFO_RESPONSES or than the packet can hold
    (4 bytes per string) is refused as a failed keyboard-interactive attempt."""

    def _parse_userauth_info_response(self: Any, m: paramiko.Message) -> None:
        if self.transport.server_mode:
            start = m.packet.tell()
            payload = m.packet.getvalue()
            remaining = len(payload) - start - 4
            count = struct.unpack_from(">I", payload, start)[0] if remaining >= 0 else 0
            if remaining < 0 or count > MAX_INFO_RESPONSES or count * 4 > remaining:
                server = self.transport.server_object
                result = server.check_auth_interactive_response([])
                if result == paramiko.AUTH_SUCCESSFUL:  # never from a fake answer
                    result = paramiko.AUTH_FAILED
                self._send_auth_result(self.auth_username, "keyboard-interactive", result)
                return
        original(self, m)

    _parse_userauth_info_response.podssh_guard = True  # type: ignore[attr-defined]
    return _parse_userauth_info_response


def grow_window(channel: paramiko.Channel, size: int, budget: WindowBudget | None = None) -> bool:
    """Raises the channel's receive window to `size`, telling the client by WINDOW_ADJUST; True
    when it did.

    paramiko opens every channel with the Transport's `default_window_size` and has no call to
    change it afterwards; the gateway opens channels with a small window (no request yet: little
    to buffer) and grows it here once the channel runs a session. With a `budget`, the channel
    first takes `size` bytes of it, and keeps its small window when there are not that many left
    (it still works, at a lower rate); the share goes back when the channel closes
    (_release_window). Any thread may call it.
    """
    grant = None
    if budget is not None:
        with channel.lock:
            if channel.closed or size <= channel.in_window_size:
                return False
        grant = budget.take(size)
        if grant is None:
            return False
    with channel.lock:
        if channel.closed or size <= channel.in_window_size or getattr(channel, "podssh_window_grant", None):
            if grant is not None:
                grant.release()
            return False
        channel.podssh_window_grant = grant  # type: ignore[attr-defined]
        delta = size - channel.in_window_size
        channel.in_window_size = size
        channel.in_window_threshold = size // 10
        remote = channel.remote_chanid
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_WINDOW_ADJUST)
    m.add_int(remote)
    m.add_int(delta)
    with contextlib.suppress(EOFError, OSError, paramiko.SSHException):  # the client may be gone
        channel.transport._send_user_message(m)
    return True


def _release_window(original: Callable[[Any], None]) -> Callable[[Any], None]:
    """Channel._set_closed gives the channel's window grant back. paramiko calls it, holding the
    channel's lock, on every way a channel closes: close(), the peer's CLOSE, the Transport's
    end; on the thread doing that (the budget's lock is never held while taking a channel's)."""

    def _set_closed(self: Any) -> None:
        original(self)
        grant = getattr(self, "podssh_window_grant", None)
        if grant is not None:
            self.podssh_window_grant = None
            grant.release()

    _set_closed.podssh_guard = True  # type: ignore[attr-defined]
    return _set_closed


def install() -> None:
    """Applies the fixes once; raises RuntimeError on a paramiko without the internals they need."""
    global _installed
    with _install_lock:
        if _installed:
            return
        handler, channel = paramiko.auth_handler.AuthHandler, paramiko.channel.Channel
        for owner, attr in ((handler, "_parse_userauth_request"), (handler, "_send_auth_result"),
                            (handler, "_parse_userauth_info_response"),
                            (channel, "_feed"), (channel, "_feed_extended"), (channel, "_set_window"),
                            (channel, "_set_closed"),
                            (paramiko.Transport, "_channel_handler_table"),
                            (paramiko.Transport, "_auth_trigger")):
            if getattr(owner, attr, None) is None:
                raise RuntimeError(f"paramiko {paramiko.__version__} lacks {owner.__name__}.{attr}: "
                                   "podssh needs the version range in pyproject.toml")
        import sys

        for name, module in list(sys.modules.items()):
            if name != "paramiko" and not name.startswith("paramiko."):
                continue
            if getattr(module, "inflate_long", None) is _original_inflate_long:
                module.inflate_long = inflate_long  # type: ignore[attr-defined]
            if getattr(module, "deflate_long", None) is _original_deflate_long:
                module.deflate_long = deflate_long  # type: ignore[attr-defined]
        handler._parse_userauth_request = _guard_userauth(handler._parse_userauth_request)
        handler._parse_userauth_info_response = _guard_info_response(handler._parse_userauth_info_response)
        handler._send_auth_result = _report_refused_publickey(handler._send_auth_result)
        channel._feed = _bounded_feed(channel._feed)
        channel._feed_extended = _bounded_feed_extended(channel._feed_extended)
        channel._set_closed = _release_window(channel._set_closed)
        # The Transport dispatches channel messages through a table of the original functions.
        table = paramiko.Transport._channel_handler_table
        table[paramiko.common.MSG_CHANNEL_DATA] = channel._feed
        table[paramiko.common.MSG_CHANNEL_EXTENDED_DATA] = channel._feed_extended
        _installed = True


def original_inflate_long() -> Callable[..., int]:
    """paramiko's own function, for the equivalence test."""
    return _original_inflate_long


def original_deflate_long() -> Callable[..., bytes]:
    """paramiko's own function, for the equivalence test."""
    return _original_deflate_long
