"""Typed, immutable settings of one gateway process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sshserver.grants.revocation import RevokedKeysFile

GCM_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


@dataclass(frozen=True)
class GatewaySettings:
    listen_host: str = "0.0.0.0"
    listen_port: int = 2222
    banner: str | None = None
    # Authentication hardening, as sshd's MaxAuthTries, LoginGraceTime and MaxStartups.
    max_auth_tries: int = 6
    login_grace_time: float = 30.0
    max_unauthenticated: int = 256  # FULL of sshd's MaxStartups START:RATE:FULL
    startups_start: int = 64  # from here on, random early drop of new unauthenticated connections
    startups_rate: int = 30  # ... with this probability (percent), rising to 100 at FULL
    # One address cannot take every place, nor (below START) start the early drop for everyone.
    max_unauthenticated_per_source: int = 32  # below START: 20 parallel logins from one host pass
    max_connections_per_source: int = 256
    max_connections_per_key: int = 64  # per identity (key or certificate fingerprint)
    version_timeout: float = 10.0  # until the client's version line (slowloris), shorter than the grace time
    failure_delay_base: float = 0.25
    failure_delay_cap: float = 8.0
    # After authentication, as sshd's MaxSessions and more.
    max_sessions: int = 10  # session channels per connection
    max_channels: int = 256  # all channels per connection (ssh -L opens one per TCP connection)
    max_env_requests: int = 64  # per channel
    max_env_bytes: int = 64 * 1024  # names and values per channel
    max_global_requests: int = 64  # refused global requests (-R, unknown) before the connection is closed
    # PROXY protocol v1/v2: required from these networks (CIDRs), never parsed from others.
    proxy_protocol: tuple[str, ...] = ()
    proxy_timeout: float = 5.0
    # Connections from trusted proxies waiting for their header (each holds a thread until it
    # comes or proxy_timeout passes): all together, and per proxy address (admission.py).
    max_proxy_pending: int = 256
    max_proxy_pending_per_source: int = 128
    # Transport tuning (see the throughput notes in the README).
    ciphers: tuple[str, ...] = GCM_CIPHERS
    window_size: int = 8 * 1024 * 1024  # a channel's window once it runs a session
    # The sum of those large windows at once, all connections together (windowbudget.py): what
    # clients may have sent that sessions have not read yet. Past it, channels keep the small one.
    window_budget: int = 512 * 1024 * 1024
    initial_window_size: int = 64 * 1024  # until then: a channel without a request buffers little
    max_packet_size: int = 256 * 1024
    read_size: int = 256 * 1024
    # Kubernetes.
    exec_timeout: float = 30.0
    debug_start_timeout: float = 60.0  # an ephemeral debug container's pull and start (kube/ephemeral.py)
    # The API leg's keepalive (keepalive.py): a ping after this many silent seconds, and the
    # session ends when nothing came back for api_keepalive_timeout. 0 turns it off.
    api_keepalive: float = 20.0
    api_keepalive_timeout: float = 45.0
    impersonate: bool = False
    drain_timeout: float = 10.0
    shutdown_delay: float = 0.0  # keep accepting this long after SIGTERM, while endpoints update
    # OpenSSH clients send eow@openssh.com ("I can write no more of your output", e.g. after
    # `| head`) only to servers whose software version starts with "OpenSSH"; without it a
    # command writing forever would keep the client waiting forever.
    version: str = "SSH-2.0-OpenSSH_podssh"
    # SIGHUP what a session leaves running (sessions/hangup.py), as sshd's closing of the
    # terminal would. Batched per pod by the gateway's hangup queue (hangupqueue.py), so a mass
    # disconnect costs a few execs, not one per session.
    hang_up: bool = True
    record_dir: Path | None = None  # asciicast recordings of interactive sessions
    revoked_keys: RevokedKeysFile | None = None  # like sshd's RevokedKeys; re-read when it changes
