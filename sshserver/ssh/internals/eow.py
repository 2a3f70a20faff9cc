"""OpenSSH's `eow@openssh.com` channel request, which paramiko drops as unknown.

The client sends it when it can no longer write what it receives (`ssh pod cmd | head -1`:
`head` exited). sshd then closes the command's stdout so that its next write raises SIGPIPE;
without that, `cat /dev/zero` in the pod would run, and the client wait, forever.
"""

from __future__ import annotations

from collections.abc import Callable

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

EOW = "eow@openssh.com"


def install(transport: paramiko.Transport, on_eow: Callable[[paramiko.Channel], None]) -> None:
    """Routes eow requests of this transport's channels to on_eow (in the Transport thread);
    every other channel request goes to paramiko as before, and once paramiko has answered it,
    the channel's `podssh_answered` event (transport.expect_answer) is set."""
    handle = paramiko.Channel._handle_request

    def dispatch(channel: paramiko.Channel, m: paramiko.Message) -> None:
        start = m.packet.tell()
        if m.get_string() == EOW.encode():
            on_eow(channel)  # want_reply is FALSE by the extension's definition: no answer
            return
        m.packet.seek(start)
        try:
            handle(channel, m)
        finally:
            answered = getattr(channel, "podssh_answered", None)
            if answered is not None:
                answered.set()

    # An instance attribute shadows the class's table for this transport only.
    transport._channel_handler_table = {**transport._channel_handler_table, MSG_CHANNEL_REQUEST: dispatch}
