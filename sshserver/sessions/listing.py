"""`ssh ls@gateway [NAMESPACE]`: the pods and containers this key may reach, what each grant
allows and until when, as a table on stdout (targettable.py), then exit status 0.

Nothing runs in a pod and nothing is bridged: the session reads the grants in force and the
pods they select (the resolver, from the pod cache when it can), writes the table and ends. It
claims no grant (a listing counts against no maxSessions) and has no SessionRecord (no
SSHSession object, no Event on a pod). What else the client asks on such a connection has
nothing to act on: sftp, and env variables that would reach a command, are refused with one
line and exit status 255, as refusals are everywhere else (forwards never get this far: the
hooks refuse the channel). A certificate with a force-command is refused too: sshd would run
that command and nothing else, whatever the user name.

Threads: everything runs on the session's own thread (lifecycle.py); `terminate` from any
other closes the channel.
"""

from __future__ import annotations

import logging

import paramiko

from sshserver.grants.access import Grant, SessionKind, default_env
from sshserver.grants.target import LISTING_USER, TargetError, parse_listing_filter
from sshserver.observability.logevents import event
from sshserver.observability.observer import EndReason, SessionOutcome
from sshserver.sessions.lifecycle import ChannelCloser, ReportingSession, SessionRefused
from sshserver.sessions.services import SessionServices
from sshserver.sessions.targettable import nothing_found, render, rows
from sshserver.ssh.connection import ChannelState, Connection

log = logging.getLogger("podssh.session")

ONLY_LISTS = f"{LISTING_USER} lists your targets and runs nothing"


class ListingSession(ReportingSession):
    """A session channel whose user name is the reserved `ls`: the listing, or a refusal."""

    def __init__(self, services: SessionServices, conn: Connection, channel: paramiko.Channel, asked: SessionKind,
                 command: str | None, requests: ChannelState) -> None:
        super().__init__(services, conn, channel, SessionKind.LIST)
        self.asked = SessionKind(asked)  # what the client requested: shell, exec or sftp
        self.command = command
        self._requests = requests
        self.namespace: str | None = None  # the filter, once parsed
        self.shown: list[str] = []  # the grants listed (namespace/name)
        self.targets = 0  # rows written

    # --- the session thread -----------------------------------------------------------------

    def _serve(self) -> SessionOutcome:
        selected = self._prepared(lambda: [(g, self._services.resolver.running_pods(g)) for g in self._grants()])
        if isinstance(selected, SessionOutcome):
            return selected
        grants = [g for g, _ in selected]
        if (ended := self._ended_from_outside()) is not None:
            return ended
        table = rows(selected)
        self.shown, self.targets = [g.ref for g in grants], len(table)
        self._attach(ChannelCloser(self.channel))
        self._services.registry.started(self)
        event(log, "targets_listed", conn=self.conn.id, session=self.id, namespace=self.namespace,
              grants=len(grants), targets=len(table))
        try:
            self._write(render(table) if table else [nothing_found(len(grants))])
        except (OSError, EOFError, paramiko.SSHException):  # the client went away under the table
            self.terminate(EndReason.CLIENT)
        return self._ended_from_outside() or SessionOutcome(EndReason.EXIT, 0)

    def _grants(self) -> list[Grant]:
        """The grants to list, in force now and in the namespace asked for; or why not (raises)."""
        cert = self.conn.identity.certificate if self.conn.identity is not None else None
        if cert is not None and cert.force_command is not None:
            raise SessionRefused(f"not permitted: this certificate has a force-command, which {LISTING_USER} "
                                 "does not run; name a target (NAMESPACE/POD@gateway) to run it")
        if self.asked is SessionKind.SFTP:
            raise SessionRefused(f"not permitted: {ONLY_LISTS}; for sftp name a target (NAMESPACE/POD@gateway)")
        effective = sorted(k for k in self._requests.env if not default_env(k))
        if effective:
            raise SessionRefused(f"not permitted: {ONLY_LISTS}; environment variables would have no effect "
                                 f"({', '.join(effective)[:200]})")
        self.namespace = parse_listing_filter(self.command)
        grants = list(self._services.current_grants(self.conn))
        if not grants:
            raise SessionRefused("not permitted: this key's access has been revoked or has expired")
        if self.namespace is not None:
            grants = [g for g in grants if g.namespace == self.namespace]
            if not grants:
                raise TargetError(f"not permitted: this key has no access in namespace {self.namespace!r}")
        return sorted(grants, key=lambda g: g.ref)

    def _write(self, lines: list[str]) -> None:
        end = "\r\n" if self.tty else "\n"  # no terminal driver on the way: the pty's line ends are ours
        data = "".join(line + end for line in lines).encode()
        self.channel.sendall(data)
        self.bytes_out += len(data)

    def _end_record(self, outcome: SessionOutcome) -> tuple[str, dict[str, object]]:
        return "session_end", {"kind": self.kind, "asked": self.asked, "exit_status": outcome.exit_status,
                               "filter": self.namespace, "grants": self.shown, "targets": self.targets,
                               "command": (self.command or "")[:256] or None}
