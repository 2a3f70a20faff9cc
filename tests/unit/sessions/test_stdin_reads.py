"""How sessions read what the client sends: in reads that go out as full WebSocket messages
(see wsdial.whole_messages)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from sshserver.config.settings import GatewaySettings
from sshserver.kube.wsdial import whole_messages
from sshserver.sessions.execsession import ExecSession
from sshserver.sessions.forward import ForwardSession


@pytest.mark.parametrize("pump", ["exec", "forward"])
def test_sessions_read_the_client_in_whole_messages(pump: str) -> None:
    sizes: list[int] = []

    class Channel:
        closed = True

        def recv(self, size: int) -> bytes:
            sizes.append(size)
            return b""

    waited: list[bool] = []
    session = SimpleNamespace(channel=Channel(), _services=SimpleNamespace(settings=GatewaySettings()),
                              terminate=lambda *_: None, tty=False, _done=threading.Event(),
                              _await_channel_close=lambda closed: waited.append(True))
    session._done.set()
    if pump == "exec":
        ExecSession._pump_stdin(session, None)  # type: ignore[arg-type]
    else:
        ForwardSession._pump(session, SimpleNamespace(abort=lambda: None))  # type: ignore[arg-type]
    assert sizes == [whole_messages(GatewaySettings().read_size)]
