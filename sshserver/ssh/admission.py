"""Connection admission: who may hold a connection, before and after authentication.

One object, shared by the accept loop (Gateway.serve_forever, accept thread) and the connection
threads (login and end of a connection), under one lock. It answers:

- before the TCP connection gets a thread: the global cap of unauthenticated connections with
  random early drop as sshd's MaxStartups START:RATE:FULL (from START unauthenticated
  connections on, refuse with probability RATE% rising linearly to 100% at FULL), a cap of
  unauthenticated connections per source address (one host cannot take every slot), and a cap
  of all connections per source address;
- before the PROXY header of a trusted proxy's connection is read (the client's address is not
  known yet, so admit() cannot run): a global cap of such held connections, and a cap per proxy
  address. Each held connection has its thread and socket until the header comes or
  proxy_timeout passes, and a proxy that sends the header only with the client's first bytes
  (as AWS NLB does) lets silent clients behind it hold places: the global cap bounds their
  memory, the per-proxy cap keeps one proxy's silent clients from taking every place from the
  clients of the other proxies (load balancer nodes, zones);
- at login: a cap of connections per identity (key fingerprint), as one grant holder must not
  take the replica's threads.

Sources are the client address (the PROXY header's, when that is on), without the port.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Startups:
    """sshd's MaxStartups START:RATE:FULL."""

    start: int = 64
    rate: int = 30
    full: int = 256

    @classmethod
    def parse(cls, text: str) -> Startups:
        """`START:RATE:FULL` or just `FULL` (no early drop); ValueError with a readable message."""
        parts = text.split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) == 1:
            nums = [nums[0], 100, nums[0]]
        if len(nums) != 3:
            raise ValueError(f"expected START:RATE:FULL (e.g. 64:30:256), got {text!r}")
        start, rate, full = nums
        if not (0 < start <= full and 0 <= rate <= 100):
            raise ValueError(f"need 0 < START <= FULL and 0 <= RATE <= 100, got {text!r}")
        return cls(start, rate, full)

    def drop_probability(self, unauthenticated: int) -> float:
        """Probability of refusing a new connection while `unauthenticated` are already open."""
        if unauthenticated < self.start:
            return 0.0
        if unauthenticated >= self.full:
            return 1.0
        return (self.rate + (100 - self.rate) * (unauthenticated - self.start) / (self.full - self.start)) / 100


@dataclass(frozen=True)
class Limits:
    startups: Startups = Startups()
    per_source_unauthenticated: int = 32
    per_source: int = 256
    per_identity: int = 64
    proxy_pending: int = 256  # connections waiting for their PROXY header, all proxies together
    proxy_pending_per_source: int = 128  # ... from one proxy address: half, so two proxies always fit


class Admission:
    def __init__(self, limits: Limits, rng: random.Random | None = None) -> None:
        self.limits = limits
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._unauthenticated = 0
        self._unauth_by_source: Counter[str] = Counter()
        self._by_source: Counter[str] = Counter()
        self._by_identity: Counter[str] = Counter()
        self._held = 0  # connections from a trusted proxy whose PROXY header is not read yet
        self._held_by_proxy: Counter[str] = Counter()

    def admit(self, source: str) -> str | None:
        """Takes an unauthenticated place for `source`; returns why not, or None when admitted."""
        lim = self.limits
        with self._lock:
            if self._unauthenticated >= lim.startups.full:
                return "too many unauthenticated connections"
            if self._unauth_by_source[source] >= lim.per_source_unauthenticated:
                return "too many unauthenticated connections from this address"
            if self._by_source[source] >= lim.per_source:
                return "too many connections from this address"
            p = lim.startups.drop_probability(self._unauthenticated)
            if p and self._rng.random() < p:
                return "random early drop (too many unauthenticated connections)"
            self._unauthenticated += 1
            self._unauth_by_source[source] += 1
            self._by_source[source] += 1
        return None

    def hold(self, proxy: str | None = None) -> str | None:
        """A place for a connection from the trusted proxy at address `proxy` until its header
        names the client (then admit() decides and unhold(proxy) gives this back); returns why
        not, or None when held. Called by the accept loop. `proxy` None counts only globally."""
        lim = self.limits
        with self._lock:
            if self._held >= lim.proxy_pending:
                return "too many connections waiting for their PROXY header"
            if proxy is not None and self._held_by_proxy[proxy] >= lim.proxy_pending_per_source:
                return "too many connections waiting for their PROXY header from this proxy"
            self._held += 1
            if proxy is not None:
                self._held_by_proxy[proxy] += 1
        return None

    def unhold(self, proxy: str | None = None) -> None:
        """Gives back hold(proxy)'s place (same `proxy`): the header came, or never will."""
        with self._lock:
            self._held -= 1
            if proxy is not None:
                _drop(self._held_by_proxy, proxy)

    def identity_full(self, identity: str) -> bool:
        """Whether a login by `identity` would exceed its cap (checked before accepting a key)."""
        with self._lock:
            return self._by_identity[identity] >= self.limits.per_identity

    def authenticated(self, source: str, identity: str) -> bool:
        """Moves the connection from unauthenticated to `identity`'s; False (and nothing counted
        for the identity) when that identity is already at its cap."""
        with self._lock:
            self._unauthenticated -= 1
            _drop(self._unauth_by_source, source)
            if self._by_identity[identity] >= self.limits.per_identity:
                return False
            self._by_identity[identity] += 1
            return True

    def released(self, source: str, identity: str | None, authenticated: bool) -> None:
        """The connection ended. `identity` is the one counted by authenticated(), if any."""
        with self._lock:
            if not authenticated:
                self._unauthenticated -= 1
                _drop(self._unauth_by_source, source)
            elif identity is not None:
                _drop(self._by_identity, identity)
            _drop(self._by_source, source)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"unauthenticated": self._unauthenticated, "sources": len(self._by_source),
                    "identities": len(self._by_identity), "held": self._held,
                    "held_proxies": len(self._held_by_proxy)}


def _drop(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
