"""Floods against a `podssh serve --access` it starts itself on 127.0.0.1 (no cluster needed).

    .venv/bin/python benchmarks/flood.py unauth [--connections 1000] [--slowloris 20] [--duration 120]
    .venv/bin/python benchmarks/flood.py auth [--duration 60]

unauth: `--connections` unauthenticated TCP connections from 127.0.0.1, each re-opened when the
gateway drops it, plus `--slowloris` connections sending one byte every `--drip` seconds (20), while
a legitimate user logs in over and over from 127.0.0.2 (paramiko: key exchange and publickey
authentication, then disconnect: a session would need the cluster). Reports the login p50/p95,
failed logins, and the gateway's peak RSS.

auth: one key opens session channels and sends env requests without end; reports how many
channels and env requests were accepted per connection (the caps), and the gateway's peak RSS.

Bounded in count and time; only 127.0.0.1/127.0.0.2 are targeted. Prints markdown rows for
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paramiko
import yaml

REPO = Path(__file__).resolve().parents[1]
PODSSH = str(Path(sys.executable).with_name("podssh"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """`podssh serve` on 127.0.0.1 with one grant for `key`, a kubeconfig pointing to a closed port."""

    def __init__(self, workdir: Path, key: paramiko.PKey, extra: list[str]) -> None:
        self.port = _free_port()
        access = workdir / "access.yaml"
        access.write_text(yaml.safe_dump([{
            "apiVersion": "podssh.dev/v1alpha1", "kind": "SSHAccess",
            "metadata": {"name": "flood", "namespace": "ns", "uid": "flood"},
            "spec": {"user": "flood", "publicKeys": [f"{key.get_name()} {key.get_base64()}"],
                     "pods": {"selector": {"matchLabels": {"app": "web"}}}}}]))
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{_free_port()}"}}],
            "users": [{"name": "u", "user": {"token": "x"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
        self.log = open(workdir / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [PODSSH, "serve", "--listen", f"127.0.0.1:{self.port}", "--access", str(access),
             "--kubeconfig", str(kubeconfig), "--host-key-dir", str(workdir / "hostkeys"),
             "--audit-log", str(workdir / "audit.log"), *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise SystemExit(f"podssh serve exited: {(workdir / 'gateway.log').read_text()[-2000:]}")
            time.sleep(0.1)
        raise SystemExit("podssh serve did not start")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def login(port: int, key: paramiko.PKey, source: str, timeout: float = 20) -> float:
    """Seconds for key exchange + publickey authentication; raises on failure."""
    start = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    t = paramiko.Transport(sock)
    try:
        t.banner_timeout = timeout
        t.start_client(timeout=timeout)
        t.auth_publickey("ns/pod", key)
        if not t.is_authenticated():
            raise RuntimeError("not authenticated")
        return time.monotonic() - start
    finally:
        t.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def flood_unauth(args: argparse.Namespace, gw: Gateway, key: paramiko.PKey) -> list[str]:
    stop = threading.Event()
    stats = {"opened": 0, "dropped": 0}
    lock = threading.Lock()
    peak = [gw.rss_mib()]

    def hold() -> None:
        """One of --connections: connect, read the version, sit; reconnect when dropped."""
        while not stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", gw.port), timeout=5, source_address=("127.0.0.1", 0))
            except OSError:
                time.sleep(0.2)
                continue
            with lock:
                stats["opened"] += 1
            s.settimeout(1)
            try:
                while not stop.is_set():
                    try:
                        if not s.recv(256):
                            break
                    except TimeoutError:
                        continue
            except OSError:
                pass
            finally:
                s.close()
            with lock:
                stats["dropped"] += 1
            stop.wait(0.2)

    def slowloris() -> None:
        while not stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", gw.port), timeout=5, source_address=("127.0.0.1", 0))
            except OSError:
                time.sleep(0.5)
                continue
            try:
                while not stop.wait(args.drip):
                    s.send(b"S")
            except OSError:
                pass
            finally:
                s.close()

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(args.connections)]
    threads += [threading.Thread(target=slowloris, daemon=True) for _ in range(args.slowloris)]
    for t in threads:
        t.start()
    time.sleep(2)
    times: list[float] = []
    failures = 0
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline and gw.alive():
        try:
            times.append(login(gw.port, key, "127.0.0.2"))
        except Exception:
            failures += 1
        peak[0] = max(peak[0], gw.rss_mib())
        time.sleep(0.2)
    stop.set()
    alive = gw.alive()
    n = args.connections
    return [
        f"| flood: {n} unauthenticated connections from one address + {args.slowloris} slowloris "
        f"(1 byte/{args.drip:g} s): legit login p50 | {percentile(times, 50) * 1000:.0f} ms | "
        f"{len(times)} logins, {failures} failed |",
        f"| flood: same, legit login p95 | {percentile(times, 95) * 1000:.0f} ms | target < 2000 ms |",
        f"| flood: same, gateway peak RSS | {peak[0]:.1f} MiB | {stats['opened']} attacker connections "
        f"opened, {stats['dropped']} dropped by the gateway; gateway {'alive' if alive else 'DIED'} |",
    ]


def flood_auth(args: argparse.Namespace, gw: Gateway, key: paramiko.PKey) -> list[str]:
    peak = gw.rss_mib()
    deadline = time.monotonic() + args.duration
    rounds, max_channels, env_ok, env_sent = 0, 0, 0, 0
    while time.monotonic() < deadline and gw.alive():
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        t = paramiko.Transport(sock)
        try:
            t.start_client(timeout=10)
            t.auth_publickey("ns/pod", key)
            chans = []
            with contextlib.suppress(paramiko.SSHException, EOFError):
                while len(chans) < 1000 and time.monotonic() < deadline:
                    chans.append(t.open_session(timeout=5))
            max_channels = max(max_channels, len(chans))
            for ch in chans:
                for i in range(args.env_per_channel):
                    if time.monotonic() > deadline or not t.is_active():
                        break
                    env_sent += 1
                    with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                        ch.set_environment_variable("LANG", f"C.{i}")
                peak = max(peak, gw.rss_mib())
            # Count what the gateway kept: its own accounting is not visible from here, so ask for
            # replies on a fresh channel (paramiko closes a channel on a refused request).
            for ch in chans:
                ch.close()
            time.sleep(0.2)
            if t.is_active():
                with contextlib.suppress(paramiko.SSHException, EOFError):
                    probe = t.open_session(timeout=5)
                    for _ in range(args.env_per_channel):
                        if not _env_with_reply(probe, "LANG", "C"):
                            break
                        env_ok += 1
        finally:
            t.close()
        rounds += 1
    return [
        f"| flood: one key, channels without end: channels accepted per connection | {max_channels} | "
        f"cap --max-sessions (default 10); {rounds} connections |",
        f"| flood: one key, env requests without end: accepted per channel | {env_ok // max(rounds, 1)} | "
        f"{env_sent} sent; cap 64 per channel |",
        f"| flood: one key, channels and env requests: gateway peak RSS | {peak:.1f} MiB | "
        f"gateway {'alive' if gw.alive() else 'DIED'} |",
    ]


def _env_with_reply(chan: paramiko.Channel, name: str, value: str) -> bool:
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("env")
    m.add_boolean(True)
    m.add_string(name)
    m.add_string(value)
    chan._event_pending()
    chan.transport._send_user_message(m)
    try:
        chan._wait_for_event()
    except paramiko.SSHException:
        return False
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", choices=["unauth", "auth"])
    p.add_argument("--connections", type=int, default=1000, help="attacker connections (default: %(default)s)")
    p.add_argument("--slowloris", type=int, default=20, help="slowloris connections (default: %(default)s)")
    p.add_argument("--drip", type=float, default=20.0, help="seconds between slowloris bytes (default: %(default)s)")
    p.add_argument("--env-per-channel", type=int, default=200, help="env requests per channel (default: %(default)s)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds (default: %(default)s)")
    p.add_argument("serve_args", nargs="*", help="extra `podssh serve` arguments (after --)")
    args = p.parse_args()
    if not 0 <= args.connections <= 5000 or args.duration > 1800:
        p.error("bounded: at most 5000 connections and 1800 s")
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # the attackers' failures are expected
    key = paramiko.ECDSAKey.generate()
    with tempfile.TemporaryDirectory(prefix="podssh-flood-") as tmp:
        gw = Gateway(Path(tmp), key, args.serve_args)
        try:
            rows = flood_unauth(args, gw, key) if args.scenario == "unauth" else flood_auth(args, gw, key)
        finally:
            gw.stop()
    print("| benchmark | value | notes |\n|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
