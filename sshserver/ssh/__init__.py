"""The SSH layer: the protocol side of a connection, on paramiko. The ServerInterface hooks
(hooks.py) decide authentication and record each channel's requests in the per-connection
state (connection.py); admission.py, throttle.py and proxyprotocol.py guard the door before
login; hostkeys.py and hostcerts.py are the gateway's own identity. Every use of paramiko's
private members lives in internals/ (the Transport builder, the parsing guards, the receive
window, eow@openssh.com, the receive buffer). Sessions are started through HookServices, so
this layer never imports them.
"""

__all__ = [
    "admission",
    "connection",
    "hooks",
    "hostcerts",
    "hostkeys",
    "proxyprotocol",
    "throttle",
]
