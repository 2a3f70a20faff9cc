"""The gateway's paramiko Transport: how it is built, and what we read of its private state.

Every use of a private member of `paramiko.Transport` lives here (the receive side of channels
is in patches.py, eow.py and fastpipe.py beside it), so that a paramiko upgrade is checked in
one folder; pyproject.toml pins paramiko to the versions these were checked against.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Sequence

import paramiko

from sshserver.config.settings import GatewaySettings

CERT_SUFFIX = "-cert-v01@openssh.com"
# paramiko reads its socket with a 0.1 s timeout, to notice a close and check timers: ten wake-ups
# a second for every connection, idle or not (500 idle sessions cost ~15 % of a core). After
# login nothing needs that: a close from our side shuts the socket down (`hang_up_socket`),
# which ends the read at once, and a client going away ends it by itself. The timers it checks
# are keepalives (never set on our side) and a rekey, which also starts at the client's next
# packet. 60 s rather than 5 s (with the API keepalive at 20 s rather than 10 s): 200 idle sessions
# measured 0.60 % of a core instead of 1.05 %.
LOGGED_IN_READ_TIMEOUT = 60.0


def build(client: socket.socket, settings: GatewaySettings, host_keys: Sequence[paramiko.PKey]) -> paramiko.Transport:
    """A server Transport for one accepted socket, with our algorithms, keys and timeouts."""
    s = settings
    t = paramiko.Transport(client, default_window_size=s.initial_window_size,
                           default_max_packet_size=s.max_packet_size)
    t.local_version = s.version
    opts = t.get_security_options()
    opts.ciphers = tuple(c for c in s.ciphers if c in paramiko.Transport._preferred_ciphers)
    for key in host_keys:
        t.add_server_key(key)
    certs = tuple(k.get_name() for k in host_keys if k.get_name().endswith(CERT_SUFFIX))
    if certs:  # host certificates (hostcerts.py): paramiko offers only the types listed here
        opts.key_types = certs + tuple(paramiko.Transport._preferred_keys)
    _ack_newkeys_at_once(t)
    t.banner_timeout = min(s.version_timeout, s.login_grace_time)
    t.handshake_timeout = s.login_grace_time
    t.auth_timeout = s.login_grace_time
    return t


def _ack_newkeys_at_once(transport: paramiko.Transport) -> None:
    """ACKs the client's NEWKEYS at once instead of 40 ms later. OpenSSH's client turns Nagle off
    only for interactive sessions, and sends SERVICE_REQUEST right after its NEWKEYS: with our
    side's ACK delayed (we answer NEWKEYS with nothing), the request waited for the delayed-ACK
    timer, 40 ms of every login (seen in `ssh -vvv` timestamps, against sshd as well).
    TCP_QUICKACK sends the pending ACK now (Linux; elsewhere nothing changes)."""
    quickack = getattr(socket, "TCP_QUICKACK", None)
    parse = transport._handler_table[paramiko.common.MSG_NEWKEYS]
    if quickack is None:
        return

    def parse_newkeys(m: paramiko.Message) -> None:
        parse(m)
        with contextlib.suppress(OSError, AttributeError):
            transport.sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)

    transport._handler_table[paramiko.common.MSG_NEWKEYS] = parse_newkeys


def on_login(transport: paramiko.Transport, callback: Callable[[], None]) -> None:
    """Calls `callback` on the Transport thread right after paramiko sent USERAUTH_SUCCESS,
    before it reads anything the client sends under the new login."""
    trigger = transport._auth_trigger

    def authenticated() -> None:
        callback()
        trigger()

    transport._auth_trigger = authenticated  # type: ignore[method-assign]


def read_quietly(transport: paramiko.Transport) -> None:
    """After login (Transport thread): the socket's read timeout becomes LOGGED_IN_READ_TIMEOUT."""
    transport.sock.settimeout(LOGGED_IN_READ_TIMEOUT)


def hang_up_socket(sock: socket.socket) -> None:
    """Ends a read blocked on this socket now (a close alone would leave it to its timeout)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def wake_accept(transport: paramiko.Transport) -> None:
    """Wakes whoever waits in `transport.accept()` (the supervisor), e.g. to hang up at once.
    Never blocks for long: should the Transport's lock be held by our own caller, the wake is
    left to the supervisor's timeout rather than deadlocking."""
    if transport.lock.acquire(timeout=1.0):
        try:
            transport.server_accept_cv.notify_all()
        finally:
            transport.lock.release()


def expect_answer(channel: paramiko.Channel) -> threading.Event:
    """An event set once paramiko has sent its answer (SUCCESS/FAILURE) to the channel request
    being handled now (set by eow.py's dispatcher). A session started from a request hook waits
    for it before it writes: its exit status and close could otherwise overtake the answer, and
    the client would see the channel closed before its request was granted."""
    event = threading.Event()
    channel.podssh_answered = event  # type: ignore[attr-defined]
    return event


def open_channel_ids(transport: paramiko.Transport) -> list[int]:
    """Our ids of the channels open now; a closed one stops counting at once (paramiko's
    ChannelMap, read without its lock: a snapshot of the values is enough for a cap)."""
    channels = getattr(transport, "_channels", None)
    if channels is None:
        return []
    return [c.get_id() for c in list(channels.values()) if not c.closed]
