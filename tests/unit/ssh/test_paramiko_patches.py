"""The fixes in sshserver/ssh/internals/patches.py: linear integer decoding identical to paramiko's own,
crafted key blobs refused before paramiko parses them, and receive windows enforced."""

from __future__ import annotations

import struct
import threading
import time

import paramiko
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paramiko.common import cMSG_USERAUTH_REQUEST

from sshserver.ssh.internals import patches as paramiko_patches
from sshserver.ssh.internals.patches import MalformedKeyBlob, check_key_blob, deflate_long, inflate_long
from tests.fuzz.settings import FUZZ
from tests.support.inproc import client, grant_object, running_gateway

paramiko_patches.install()


@FUZZ
@given(st.binary(max_size=80), st.booleans())
def test_inflate_long_equals_paramikos_own(data: bytes, always_positive: bool) -> None:
    assert inflate_long(data, always_positive) == paramiko_patches.original_inflate_long()(data, always_positive)


@FUZZ
@given(st.one_of(st.integers(), st.integers(-(2**70), 2**70),
                 st.sampled_from([0, -1, 127, 128, -128, -129, 255, -256])), st.booleans())
def test_deflate_long_equals_paramikos_own(n: int, add_sign_padding: bool) -> None:
    assert deflate_long(n, add_sign_padding) == paramiko_patches.original_deflate_long()(n, add_sign_padding)


def test_every_paramiko_module_uses_the_linear_function() -> None:
    import paramiko.ecdsakey
    import paramiko.message
    import paramiko.util

    assert paramiko.util.inflate_long is inflate_long
    assert paramiko.message.util.inflate_long is inflate_long
    assert paramiko.util.deflate_long is deflate_long
    assert paramiko.ecdsakey.deflate_long is deflate_long
    start = time.monotonic()
    assert len(deflate_long(1 << (8 << 20))) > 1 << 20  # an 8-Mbit number: linear, not minutes
    assert time.monotonic() - start < 0.5
    start = time.monotonic()
    m = paramiko.Message(struct.pack(">I", 1 << 20) + b"\x01")  # padded to 1 MiB by paramiko
    assert m.get_mpint() > 0
    assert time.monotonic() - start < 0.5


def _s(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def crafted_rsa_blob() -> bytes:
    """ssh-rsa whose exponent claims ~1 MiB but carries one byte: paramiko zero-pads it."""
    return _s(b"ssh-rsa") + struct.pack(">I", (1 << 20) - 1) + b"\x01"


def test_real_keys_pass_and_crafted_blobs_are_refused() -> None:
    for key in (paramiko.RSAKey.generate(2048), paramiko.ECDSAKey.generate()):
        check_key_blob(key.asbytes())
    for bad in (crafted_rsa_blob(), _s(b"ssh-rsa") + _s(b"\x01") + _s(b"\x00" * 3000),
                _s(b"ssh-ed25519") + _s(b"k" * 32) + b"junk", b"\x00\x00", b"x" * 20000,
                _s(b"ssh-rsa-cert-v01@openssh.com") + _s(b"n") + struct.pack(">I", 999999)):
        with pytest.raises(MalformedKeyBlob):
            check_key_blob(bad)


def _send_userauth(t: paramiko.Transport, blob: bytes, raw_blob: bytes | None = None) -> float:
    """Sends a publickey query with `blob` (or `raw_blob` as the bytes where the length-prefixed
    blob would be); returns the seconds until the server's answer."""
    handler = t.auth_handler
    event = threading.Event()
    handler.auth_event, handler.auth_method = event, "publickey"
    m = paramiko.Message()
    m.add_byte(cMSG_USERAUTH_REQUEST)
    m.add_string("ns/pod")
    m.add_string("ssh-connection")
    m.add_string("publickey")
    m.add_boolean(False)
    m.add_string("rsa-sha2-256")
    if raw_blob is None:
        m.add_string(blob)
    else:
        m.add_bytes(raw_blob)
    start = time.monotonic()
    t._send_message(m)
    assert event.wait(10), "no answer to the userauth request"
    return time.monotonic() - start


def padded_publickey_request(blob_claims: int) -> bytes:
    """The review's bypass: the blob's own length field claims more than the packet holds, so
    paramiko zero-pads the whole blob (and its exponent) before any of our checks saw it."""
    inner = _s(b"ssh-rsa") + _s(b"\x01\x00\x01") + struct.pack(">I", (1 << 20) - 100) + b"\x01"
    return struct.pack(">I", blob_claims) + inner


@pytest.mark.parametrize("request_blob", [
    pytest.param({"blob": crafted_rsa_blob()}, id="exponent-padded-by-paramiko"),
    pytest.param({"blob": b"", "raw_blob": padded_publickey_request((1 << 20) - 1)}, id="blob-runs-past-the-packet"),
])
def test_crafted_key_blob_is_answered_fast_and_the_gateway_stays_responsive(request_blob: dict) -> None:
    key = paramiko.ECDSAKey.generate()
    with running_gateway([grant_object("alice", [key])]) as gw:
        t = client(gw.port, None)
        try:
            with pytest.raises(paramiko.BadAuthenticationType):
                t.auth_none("ns/pod")  # sets up the userauth service
            for _ in range(3):
                assert _send_userauth(t, **request_blob) < 0.5
            assert t.is_active() and not t.is_authenticated()
            start = time.monotonic()
            other = client(gw.port, key)
            assert other.is_authenticated() and time.monotonic() - start < 3
            other.close()
        finally:
            t.close()
        failures = gw.audit.named("auth_failure")
        assert len(failures) == 3 and all("malformed key" in f["reason"] for f in failures)


def test_data_beyond_the_advertised_window_is_dropped() -> None:
    key = paramiko.ECDSAKey.generate()
    with running_gateway([grant_object("alice", [key])], window_size=64 * 1024,
                         max_packet_size=32 * 1024) as gw:
        t = client(gw.port, key)
        try:
            chan = t.open_session()
            chan.out_window_size = 1 << 30  # a client that ignores the server's window
            for _ in range(64):
                chan.sendall(b"x" * 32 * 1024)  # 2 MiB into a channel without a request
            time.sleep(0.5)
            with gw.gateway._lock:
                conns = list(gw.gateway._connections)
            server_chans = [s.channel for conn in conns for s in conn.channels.values() if s.channel is not None]
            assert server_chans
            for c in server_chans:
                assert len(c.in_buffer) <= 64 * 1024 + 32 * 1024
                assert getattr(c, "podssh_window_violations", 0) > 0
        finally:
            t.close()



def _info_response(count: int, answers: list[bytes]) -> paramiko.Message:
    m = paramiko.Message()
    m.add_byte(bytes([paramiko.common.MSG_USERAUTH_INFO_RESPONSE]))
    m.add_int(count)
    for a in answers:
        m.add_string(a)
    return paramiko.Message(m.asbytes()[1:])


class _Handler:
    """Enough of an AuthHandler on a server transport for _parse_userauth_info_response."""

    def __init__(self) -> None:
        self.auth_username = "ns/pod"
        self.seen: list[list[str]] = []
        self.sent: list[tuple[str, int]] = []
        seen = self.seen

        class Server:
            def check_auth_interactive_response(self, responses: list[str]) -> int:
                seen.append(responses)
                return paramiko.AUTH_FAILED

        self.transport = type("T", (), {"server_mode": True, "server_object": Server()})()

    def _send_auth_result(self, username: str, method: str, result: int) -> None:
        self.sent.append((method, result))


@pytest.mark.parametrize("count,answers", [(100_000, []), (65, [b"x"] * 65), (3, [b"a"])])
def test_an_info_response_claiming_more_answers_than_it_holds_is_refused_unread(
        count: int, answers: list[bytes]) -> None:
    """paramiko appends one string per claimed answer, padding past the packet with empty ones: a
    5-byte USERAUTH_INFO_RESPONSE claiming ~3.6e9 answers grew the gateway by gigabytes before login
    (the wire fuzzer, seed 2202, session 2494). Such a count is refused without reading answers."""
    handler = _Handler()
    paramiko.auth_handler.AuthHandler._parse_userauth_info_response(handler, _info_response(count, answers))
    assert handler.seen == [[]]
    assert handler.sent == [("keyboard-interactive", paramiko.AUTH_FAILED)]


def test_a_plausible_info_response_still_reaches_the_server_object() -> None:
    handler = _Handler()
    paramiko.auth_handler.AuthHandler._parse_userauth_info_response(handler, _info_response(2, [b"a", b"b"]))
    assert handler.seen == [["a", "b"]]
    assert handler.sent == [("keyboard-interactive", paramiko.AUTH_FAILED)]


def test_the_fuzzers_info_response_leaves_the_gateway_usable() -> None:
    assert getattr(paramiko.auth_handler.AuthHandler._parse_userauth_info_response, "podssh_guard", False)
    key = paramiko.ECDSAKey.generate()
    with running_gateway([grant_object("g", [key], allow={"shell": True})],
                         failure_delay_base=0.0, failure_delay_cap=0.0) as gw:
        t = client(gw.port, None, timeout=5)
        try:
            m = paramiko.Message()
            m.add_byte(bytes([paramiko.common.MSG_USERAUTH_INFO_RESPONSE]))
            m.add_bytes(b"\xd5aDm\xd5")  # the fuzzer's message: a count of 0xd561446d, no answers
            t._send_user_message(m)
            time.sleep(0.3)
            other = client(gw.port, key, timeout=5)  # the gateway still answers at once
            try:
                assert other.is_authenticated()
            finally:
                other.close()
            assert t.is_active()
        finally:
            t.close()
