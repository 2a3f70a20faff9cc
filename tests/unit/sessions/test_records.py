from __future__ import annotations

import io
import json
from pathlib import Path

from sshserver.observability.audit import AuditTrail
from sshserver.observability.recording import Recording
from sshserver.sessions.execsession import missing_tool_hint
from sshserver.sessions.statoutput import parse_stat


def test_recording_is_valid_asciicast_and_splits_utf8_safely(tmp_path: Path) -> None:
    rec = Recording.create(tmp_path, grant="shop/alice-web", user="alice", target="shop/web-1", conn=3,
                           channel=0, cols=100, rows=30, term="xterm")
    assert rec.path.name.startswith("shop_alice-web_alice_") and rec.path.name.endswith("_3-0.cast")
    rec.output("héllo ".encode()[:2])  # "h" and half of "é"
    rec.output("héllo ".encode()[2:])
    rec.resize(120, 40)
    rec.output(b"\xff done")  # invalid UTF-8 is replaced, never fatal
    rec.close()
    header, *events = (json.loads(line) for line in rec.path.read_text().splitlines())
    assert header == {"version": 2, "width": 100, "height": 30, "timestamp": header["timestamp"],
                      "env": {"TERM": "xterm", "SHELL": "/bin/sh"}, "title": "alice shop/web-1"}
    assert "".join(e[2] for e in events if e[1] == "o") == "héllo \ufffd done"
    assert ["r", "120x40"] in [e[1:] for e in events]
    assert (rec.path.stat().st_mode & 0o777) == 0o600


def test_audit_lines_are_json_with_time_and_event() -> None:
    sink = io.StringIO()
    AuditTrail(sink).record("auth_failure", peer="127.0.0.1:5", fingerprint="SHA256:x")
    entry = json.loads(sink.getvalue())
    assert entry["event"] == "auth_failure" and entry["audit"] is True and entry["ts"].endswith("Z")


def test_stat_lines_from_busybox_and_coreutils() -> None:
    path = "/tmp/dir/a file with spaces"
    attr = parse_stat(b"81a4 1234 0 10 1700000000 1700000001 /tmp/dir/a file with spaces\n", path)
    assert attr is not None
    assert (attr.st_mode, attr.st_size, attr.st_uid, attr.st_gid) == (0o100644, 1234, 0, 10)
    assert (attr.st_atime, attr.st_mtime, attr.filename) == (1700000000, 1700000001, "a file with spaces")
    assert parse_stat(b"garbage\n", path) is None
    assert parse_stat(b"zz 1 2 3 4 5 /tmp/dir/a file with spaces\n", path) is None
    assert parse_stat(b"81a4 1 0 0 0 0 /tmp/dir/other\n", path) is None  # not the path asked for


def test_hints_for_missing_transfer_tools() -> None:
    assert "without -O" in (missing_tool_hint("scp -t /tmp") or "")
    assert "rsync at both ends" in (missing_tool_hint("rsync --server -vlogDtpre.iLsfxC . /x") or "")
    assert missing_tool_hint("nosuchcommand") is None
    assert missing_tool_hint(None) is None
