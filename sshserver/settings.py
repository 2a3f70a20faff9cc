"""Typed, immutable settings of one gateway process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .revocation import RevokedKeysFile

GCM_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


@dataclass(frozen=True)
class GatewaySettings:
    listen_host: str = "0.0.0.0"
    listen_port: int = 2222
    banner: str | None = None
    # Authentication hardening, as sshd's MaxAuthTries, LoginGraceTime and MaxStartups.
    max_auth_tries: int = 6
    login_grace_time: float = 30.0
    max_unauthenticated: int = 64
    failure_delay_base: float = 0.25
    failure_delay_cap: float = 8.0
    # Transport tuning (see the throughput notes in the README).
    ciphers: tuple[str, ...] = GCM_CIPHERS
    window_size: int = 8 * 1024 * 1024
    max_packet_size: int = 256 * 1024
    read_size: int = 256 * 1024
    # Kubernetes.
    exec_timeout: float = 30.0
    # The API leg's keepalive (keepalive.py): a ping after this many silent seconds, and the
    # session ends when nothing came back for api_keepalive_timeout. 0 turns it off.
    api_keepalive: float = 10.0
    api_keepalive_timeout: float = 30.0
    impersonate: bool = False
    drain_timeout: float = 10.0
    shutdown_delay: float = 0.0  # keep accepting this long after SIGTERM, while endpoints update
    # OpenSSH clients send eow@openssh.com ("I can write no more of your output", e.g. after
    # `| head`) only to servers whose software version starts with "OpenSSH"; without it a
    # command writing forever would keep the client waiting forever.
    version: str = "SSH-2.0-OpenSSH_podssh"
    # SIGHUP what a session leaves running (hangup.py). Off by default: after a mass disconnect
    # the cleanup execs competed with new logins (500-session benchmark), not yet resolved.
    hang_up: bool = False
    record_dir: Path | None = None  # asciicast recordings of interactive sessions
    revoked_keys: RevokedKeysFile | None = None  # like sshd's RevokedKeys; re-read when it changes
