"""Metrics, audit trail and recordings, after real sessions on the real cluster."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import NS
from tests.support.gateway import SSHKey, free_port
from tests.support.ptyclient import PtyClient
from tests.support.waiting import wait_for

WEB = f"{NS}/deploy/web"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def observed(make_gateway, tmp_path: Path):
    port = free_port()
    gw = make_gateway("--metrics", f"127.0.0.1:{port}", "--audit-log", str(tmp_path / "audit.jsonl"),
                      "--record-dir", str(tmp_path / "recordings"))
    return gw, port, tmp_path


def test_counters_move_by_the_right_amounts(observed, keys: dict[str, SSHKey]) -> None:
    gw, port, _ = observed
    before = scrape(port)
    payload = b"x" * 100_000
    for _ in range(3):
        proc = gw.ssh(WEB, "cat >/dev/null; head -c 50000 /dev/zero", keys["alice"], input=payload)
        assert proc.returncode == 0 and len(proc.stdout) == 50_000
    assert gw.ssh(WEB, "exit 3", keys["alice"]).returncode == 3
    assert gw.ssh(f"{NS}/other", "true", keys["alice"]).returncode == 255  # refused: not covered
    assert gw.ssh(WEB, "true", keys["mallory"]).returncode == 255

    def settled() -> dict | None:
        """A connection is counted closed only after its sessions have recorded their end."""
        samples = scrape(port)
        return samples if value(samples, "podssh_connections_open") == 0 else None

    after = wait_for(settled, what="all connections closed")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("podssh_sessions_ended_total", reason="exit") == 4
    assert delta("podssh_sessions_ended_total", reason="refused") == 1
    assert delta("podssh_transferred_bytes_total", direction="to_pod") == 300_000
    assert delta("podssh_transferred_bytes_total", direction="from_pod") == 150_000
    assert delta("podssh_auth_attempts_total", method="publickey", result="success") == 5
    assert delta("podssh_auth_attempts_total", method="publickey", result="failure") >= 1
    assert delta("podssh_connections_total", result="accepted") == 6
    assert delta("podssh_exec_setup_seconds_count") == 4
    assert delta("podssh_session_duration_seconds_count", kind="exec") == 4
    assert value(after, "podssh_sessions_active", kind="exec") == 0
    assert value(after, "podssh_connections_open") == 0
    assert value(after, "podssh_access_grants") == 5
    assert value(after, "podssh_build_info", version=metadata.version("podssh")) == 1


def test_promtool_finds_no_problems(observed, keys: dict[str, SSHKey]) -> None:
    gw, port, _ = observed
    assert gw.ssh(WEB, "true", keys["alice"]).returncode == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read()
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == b"" and proc.stderr.strip() == b""


def test_health_endpoints(observed) -> None:
    _, port, _ = observed
    for path, body in (("/healthz", b"ok\n"), ("/readyz", b"ready\n")):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            assert resp.status == 200 and resp.read() == body


def test_prometheus_sees_a_live_session(observed, keys: dict[str, SSHKey], tmp_path: Path) -> None:
    gw, port, _ = observed
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
- job_name: podssh
  static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
""")
    prom = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = subprocess.Popen([*gw.ssh_argv(WEB, keys["alice"]), "echo started; sleep 120"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert client.stdout is not None and client.stdout.readline() == b"started\n"
        query = urllib.parse.urlencode({"query": 'podssh_sessions_active{kind="exec"}'})
        deadline = time.monotonic() + 30
        result = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?{query}", timeout=5) as r:
                    data = json.loads(r.read())["data"]["result"]
                if data and float(data[0]["value"][1]) == 1.0:
                    result = data[0]
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert result is not None, "Prometheus never saw the live session"
        assert result["metric"]["job"] == "podssh"
    finally:
        client.kill()
        prom.terminate()
        prom.wait(10)


def audit_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_audit_trail_field_by_field(observed, keys: dict[str, SSHKey]) -> None:
    gw, _, tmp = observed
    assert gw.ssh(WEB, "echo hi", keys["alice"], input=b"12345").returncode == 0
    assert gw.ssh(WEB, "true", keys["mallory"]).returncode == 255
    wait_for(lambda: sum(e["event"] == "connection_close" for e in audit_lines(tmp / "audit.jsonl")) >= 2,
             what="both connections in the audit trail")
    lines = audit_lines(tmp / "audit.jsonl")
    assert all(e["audit"] is True and e["ts"].endswith("Z") for e in lines)
    fp_alice = subprocess.run(["ssh-keygen", "-lf", str(keys["alice"].path.with_suffix(".pub"))],
                              capture_output=True, text=True).stdout.split()[1]
    fp_mallory = subprocess.run(["ssh-keygen", "-lf", str(keys["mallory"].path.with_suffix(".pub"))],
                                capture_output=True, text=True).stdout.split()[1]
    ok = next(e for e in lines if e["event"] == "auth_success")
    assert ok["method"] == "publickey" and ok["fingerprint"] == fp_alice and ok["target"] == WEB
    assert ok["grants"] == [f"{NS}/alice"] and ok["users"] == ["alice"]
    assert ok["peer"].startswith("127.0.0.1:")
    start = next(e for e in lines if e["event"] == "session_start")
    assert start["conn"] == ok["conn"]
    assert (start["kind"], start["namespace"], start["container"]) == ("exec", NS, "web")
    assert start["pod"].startswith("web-") and start["command"] == "echo hi" and start["pty"] is False
    assert start["grant"] == f"{NS}/alice" and start["user"] == "alice"
    end = next(e for e in lines if e["event"] == "session_end")
    assert (end["reason"], end["exit_status"], end["bytes_out"], end["bytes_in"]) == ("exit", 0, 3, 5)
    assert end["pod"] == start["pod"] and end["duration_s"] >= 0
    bad = [e for e in lines if e["event"] == "auth_failure" and e.get("fingerprint") == fp_mallory]
    assert bad and bad[0]["method"] == "publickey" and bad[0]["target"] == WEB
    closes = [e for e in lines if e["event"] == "connection_close"]
    assert len(closes) == 2
    text = (tmp / "audit.jsonl").read_text()
    assert "PRIVATE KEY" not in text


def _lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]+", text) if line]


def test_recording_replays_to_the_same_text(observed, keys: dict[str, SSHKey]) -> None:
    gw, _, tmp = observed
    client = PtyClient(gw.ssh_argv(f"{NS}/deb", keys["alice"], tty=True), rows=30, cols=100)
    try:
        client.send(b"printf 'r%sd-%s\\n' ecorde \xc3\xa9t\xc3\xa9; exit 4\n")
        client.expect(b"recorded-\xc3\xa9t\xc3\xa9")
        assert client.wait() == 4
    finally:
        client.kill()
    wait_for(lambda: any(e["event"] == "session_end" for e in audit_lines(tmp / "audit.jsonl")),
             what="the session's end in the audit trail")
    casts = list((tmp / "recordings").glob("*.cast"))
    assert len(casts) == 1
    assert casts[0].name.startswith(f"{NS}_alice_alice_")
    header, *events = (json.loads(line) for line in casts[0].read_text().splitlines())
    assert header["version"] == 2 and (header["width"], header["height"]) == (100, 30)
    output = "".join(e[2] for e in events if e[1] == "o")
    assert "recorded-été" in output
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    # asciinema wants a terminal of its own; its output goes to a file, untouched.
    replayed = tmp / "replayed.txt"
    player = PtyClient(["sh", "-c", f"asciinema cat {casts[0]} > {replayed}"])
    assert player.wait(30) == 0
    # The same text, line for line (the player may end lines its own way).
    assert _lines(replayed.read_text()) == _lines(output)
    end = next(e for e in audit_lines(tmp / "audit.jsonl") if e["event"] == "session_end")
    assert end["recording"] == str(casts[0])
