"""podssh against `kubectl exec` (and OpenSSH's sshd as this machine's floor), in one run.

Prints a markdown table and writes benchmarks/RESULTS.md. Every figure is the median of
several runs on the real local cluster (hack/cluster), measured end to end with the real
OpenSSH client. Run it with benchmarks/run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.cluster import BUSYBOX, Cluster, cluster_up  # noqa: E402
from tests.support.gateway import Gateway, SSHKey, free_port, make_key, stop_client, wait_port  # noqa: E402
from tests.support.ptyclient import PtyClient  # noqa: E402

NS = "podssh-bench"
IDLE_PODS = tuple(f"bench-idle-{i}" for i in range(4))  # the idle-session rounds' targets
MB = 1024 * 1024
TRIES = 3  # a reference tool's measurement, before its row is marked failed
FLOOR_BEST = 588.0  # MiB/s: sshd's stdout floor on a quiet run of this machine


T = TypeVar("T")


def retried(fn: Callable[[], T], tries: int = TRIES, pause: float = 1.0) -> T:
    """One measurement of a reference tool, tried again when it fails (kubectl cp's "unexpected
    EOF"): the last failure is raised."""
    for attempt in range(1, tries + 1):
        try:
            return fn()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            if attempt == tries:
                raise
            print(f"   retrying after: {str(exc)[-200:]}", file=sys.stderr, flush=True)
            time.sleep(pause)
    raise AssertionError("unreachable")


@dataclass
class Row:
    name: str
    podssh: float | None
    reference: float | None
    unit: str
    ref_name: str
    higher_is_better: bool
    target: str = ""
    note: str = ""
    floor: float | None = None

    @property
    def ratio(self) -> float | None:
        if not self.podssh or not self.reference:
            return None
        return self.podssh / self.reference


@dataclass
class Bench:
    cluster: Cluster
    gateway: Gateway
    key: SSHKey
    pod: str
    runs: int
    size_mb: int
    work: Path
    rows: list[Row] = field(default_factory=list)

    # --- helpers ----------------------------------------------------------------------------

    def ssh(self, *args: str, target: str | None = None) -> list[str]:
        return ["ssh", *self.gateway.client_options(self.key), "-o", "Ciphers=aes128-gcm@openssh.com",
                f"{target or NS + '/' + self.pod}@127.0.0.1", *args]

    def kexec(self, *args: str, stdin: bool = False, tty: bool = False) -> list[str]:
        flags = ["-i"] * stdin + ["-t"] * tty
        return ["kubectl", "-n", NS, "exec", *flags, self.pod, "--", *args]

    def timed(self, argv: list[str], stdin_path: str | None = None, stdout=subprocess.DEVNULL) -> float:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            start = time.perf_counter()
            proc = subprocess.run(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=self.cluster.env,
                                  timeout=600)
            elapsed = time.perf_counter() - start
        finally:
            if stdin_path:
                stdin.close()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])}… failed: {proc.stderr.decode()[-300:]}")
        return elapsed

    def timed_checked(self, argv: list[str], stdin_path: str, expected: str) -> float:
        """Like timed(), and the command must have printed `expected` (all bytes arrived)."""
        out = self.work / "out.txt"
        with open(out, "wb") as fh:
            elapsed = self.timed(argv, stdin_path, stdout=fh)
        got = out.read_text().strip()
        if got != expected:
            raise RuntimeError(f"{argv[0]} delivered {got} bytes, not {expected}")
        return elapsed

    def median(self, fn: Callable[[], float], runs: int | None = None) -> float:
        return statistics.median(fn() for _ in range(runs or self.runs))

    @staticmethod
    def reference(tool: str, measure: Callable[[], T]) -> tuple[T | None, str]:
        """The reference tool's figure, or None and a note for its row when it kept failing
        (`retried` inside `measure` already tried each run again): the podssh side still counts."""
        try:
            return measure(), ""
        except Exception as exc:
            print(f"   {tool} failed: {exc}", file=sys.stderr, flush=True)
            return None, f"{tool} failed {TRIES} times: {str(exc)[-160:]}"

    # --- the benchmarks ---------------------------------------------------------------------

    def throughput(self, floor: Callable[[str], float | None]) -> None:
        n = self.size_mb
        down = f"head -c {n * MB} /dev/zero"
        p = self.median(lambda: n / self.timed(self.ssh(down)))
        k, k_note = self.reference("kubectl exec", lambda: self.median(
            lambda: n / retried(lambda: self.timed(self.kexec("sh", "-c", down)))))
        self.rows.append(Row(f"stdout throughput ({n} MiB pod → client)", p, k, "MiB/s", "kubectl exec", True,
                             "≥ 1.0x", note=k_note, floor=floor(down)))
        blob = self.work / "upload.bin"
        if not blob.exists():
            with open(blob, "wb") as fh:
                fh.truncate(n * MB)
        # `wc -c` rather than `cat > /dev/null`: a command that closes its stdout makes containerd
        # cut stdin short (containerd issue 13934), and kubectl would "finish" early with data lost.
        up = "wc -c"
        expected = f"{n * MB}"
        p = self.median(lambda: n / self.timed_checked(self.ssh(up), str(blob), expected))
        k, k_note = self.reference("kubectl exec -i", lambda: self.median(lambda: n / retried(
            lambda: self.timed_checked(self.kexec("sh", "-c", up, stdin=True), str(blob), expected))))
        self.rows.append(Row(f"stdin throughput ({n} MiB client → pod)", p, k, "MiB/s", "kubectl exec -i", True,
                             "≥ 1.0x", note=k_note, floor=floor(up, str(blob))))

    def setup_latency(self) -> None:
        """podssh and kubectl in turns (who goes first alternates): a slow moment of the machine
        hits both, not the one that happened to be measured then."""
        ours: list[float] = []
        theirs: list[float] = []
        note = ""
        for n in range(max(self.runs, 10)):
            for podssh in ((True, False) if n % 2 == 0 else (False, True)):
                if podssh:
                    ours.append(self.timed(self.ssh("true")) * 1000)
                elif not note:
                    k, note = self.reference("kubectl exec", lambda: retried(lambda: self.timed(self.kexec("true"))))
                    if k is not None:
                        theirs.append(k * 1000)
        self.rows.append(Row("session setup (`true`)", statistics.median(ours),
                             statistics.median(theirs) if theirs else None, "ms", "kubectl exec", False, "≤ 0.8x",
                             note=note or "in turns with kubectl"))
        self.setup_without_session_objects()

    def setup_without_session_objects(self) -> None:
        """The same setup on a second gateway started with --session-objects=false, the two
        measured in turns: SSHSession objects are written off the session's path."""
        plain = Gateway(self.work / "gw-plain", self.cluster.kubeconfig, None,
                        extra_args=["--session-objects=false", "--audit-log", str(self.work / "audit-plain.jsonl")],
                        env=dict(os.environ)).start()
        try:
            argv = ["ssh", *plain.client_options(self.key), "-o", "Ciphers=aes128-gcm@openssh.com",
                    f"{NS}/{self.pod}@127.0.0.1", "true"]
            deadline = time.monotonic() + 20
            while subprocess.run(argv, capture_output=True).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the second gateway does not accept the bench key")
                time.sleep(0.2)
            with_objects, without = [], []
            for _ in range(max(self.runs, 10) * 2):
                with_objects.append(self.timed(self.ssh("true")) * 1000)
                without.append(self.timed(argv) * 1000)
        finally:
            plain.stop()
        self.rows.append(Row("session setup (`true`) with SSHSession objects", statistics.median(with_objects),
                             statistics.median(without), "ms", "--session-objects=false", False, "≤ 1.1x",
                             note="the two gateways measured in turns"))

    def _echo_latencies(self, argv: list[str], count: int = 200) -> list[float]:
        client = PtyClient(argv, rows=24, cols=80)
        try:
            client.send(b"stty -echo 2>/dev/null; echo READY\n")
            client.expect(b"READY\r\n", timeout=30)
            client.send(b"stty echo; cat\n")  # cat echoes every line; the tty echoes every key
            time.sleep(1.0)
            client.output = b""
            lat = []
            for i in range(count):
                ch = bytes([97 + i % 26])
                start = time.perf_counter()
                os.write(client.fd, ch)
                buf = b""
                while ch not in buf:
                    r, _, _ = select.select([client.fd], [], [], 5)
                    if not r:
                        raise RuntimeError("no echo")
                    buf += os.read(client.fd, 4096)
                lat.append((time.perf_counter() - start) * 1000)
                time.sleep(0.01)
            return lat
        finally:
            client.kill()

    def keystroke_echo(self) -> None:
        """Rounds of 200 keystrokes each, podssh and kubectl in turns (who goes first alternates),
        so a busy moment of the machine hits both; each row is the median of the rounds' own
        percentiles (a p99 of one round of 200 is its second-worst keystroke: one round is noise)."""
        env_argv = ["env", f"KUBECONFIG={self.cluster.kubeconfig}", f"PATH={self.cluster.env['PATH']}",
                    *self.kexec("sh", stdin=True, tty=True)]
        ours: list[list[float]] = []
        theirs: list[list[float]] = []
        note = ""
        for n in range(self.runs):
            order = (True, False) if n % 2 == 0 else (False, True)
            for podssh in order:
                if podssh:
                    ours.append(self._echo_latencies(self.ssh("-tt")))
                elif not note:
                    k, note = self.reference("kubectl exec -it",
                                             lambda: retried(lambda: self._echo_latencies(env_argv)))
                    if k is not None:
                        theirs.append(k)
        rounds = f"median of {len(ours)} rounds of 200 keystrokes, in turns with kubectl"
        for q, label in ((50, "p50"), (99, "p99")):
            pv = statistics.median(statistics.quantiles(r, n=100)[q - 1] for r in ours)
            kv = statistics.median(statistics.quantiles(r, n=100)[q - 1] for r in theirs) if theirs else None
            self.rows.append(Row(f"keystroke echo with a pty, {label}", pv, kv, "ms", "kubectl exec -it", False,
                                 "≤ reference + 1 ms" if label == "p99" else "", note=note or rounds))

    def concurrency(self, counts: list[int]) -> None:
        pid = self.gateway.proc.pid
        for n in counts:
            procs: list[subprocess.Popen[bytes]] = []
            ready = 0
            rss_before = _rss_mib(pid)
            started = time.monotonic()
            for i in range(n):
                # Spread over IDLE_PODS pods: the gateway is measured, not one container's
                # runtime holding a thousand execs.
                argv = self.ssh("-tt", "echo ready; exec sleep 600", target=f"{NS}/{IDLE_PODS[i % len(IDLE_PODS)]}")
                procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL))
                if i % 25 == 24:
                    time.sleep(0.5)
            try:
                deadline = time.monotonic() + 120 + n * 0.5
                pending = list(procs)
                while pending and time.monotonic() < deadline:
                    fds = {p.stdout.fileno(): p for p in pending if p.stdout}
                    # poll, not select: a thousand clients' pipes are numbered past 1024
                    poller = select.poll()
                    for fd in fds:
                        poller.register(fd, select.POLLIN | select.POLLHUP)
                    r = [fd for fd, _ in poller.poll(1000)]
                    for fd in r:
                        p = fds[fd]
                        line = p.stdout.readline() if p.stdout else b""
                        if b"ready" in line:
                            ready += 1
                            pending.remove(p)
                        elif not line:
                            pending.remove(p)
                setup = time.monotonic() - started
                # Idle means nothing left to do: the SSHSession objects of the new sessions are
                # written at a bounded rate (20 a second), so wait until the writer has caught up.
                settle = self.settled()
                cpu0 = _cpu_seconds(pid)
                time.sleep(10)
                cpu = (_cpu_seconds(pid) - cpu0) / 10 * 100
                rss = _rss_mib(pid)
            finally:  # whatever happened, no client outlives its round
                for p in procs:
                    p.kill()
                for p in procs:
                    p.wait()
            time.sleep(3)
            self.rows.append(Row(f"{n} idle pty sessions: success", ready / n * 100, None, "%", "", True, "100%",
                                 note=f"all up in {setup:.0f}s, their SSHSession objects {settle:.0f}s later "
                                      "(measured once the writer had made no call for 5 s)"))
            self.rows.append(Row(f"{n} idle pty sessions: gateway RSS", rss, None, "MiB", "", False, "< 1 GiB",
                                 note=f"{(rss - rss_before) / n * 1024:.0f} KiB per session"))
            self.rows.append(Row(f"{n} idle pty sessions: gateway CPU while idle", cpu, None, "% of a core", "",
                                 False, "< 2 % of a core"))

    def settled(self, timeout: float = 300, quiet: float = 5.0) -> float:
        """Waits until the gateway's SSHSession writer is done: nothing pending, and no call to
        the API server for `quiet` seconds (the status patches of sessions whose counters moved
        after their object was written follow the creations); returns the seconds waited."""
        began = time.monotonic()
        calls_then: tuple[float, float] | None = None  # (calls so far, when first seen)
        while time.monotonic() - began < timeout:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30).read()
            except OSError:  # busy with the sessions a round just dropped (seconds of CPU for 1,000)
                continue
            pending = re.search(rb"^podssh_session_objects_pending (\S+)$", body, re.M)
            calls = sum(float(v) for v in re.findall(
                rb"^podssh_session_object_calls_total\{[^}]*\} (\S+)$", body, re.M))
            now = time.monotonic()
            if pending is None or float(pending.group(1)) != 0:
                calls_then = None
            elif calls_then is None or calls_then[0] != calls:
                calls_then = (calls, now)
            elif now - calls_then[1] >= quiet:
                return now - began
            time.sleep(0.5)
        raise RuntimeError(f"the SSHSession writer still had work after {timeout:.0f}s")

    def propagation(self, runs: int = 5) -> None:
        self.settled()  # the objects of the sessions the last round dropped are deleted first
        apply_ms, revoke_ms = [], []
        key = make_key(self.work, "propagation")
        for i in range(runs):
            name = f"prop-{i}"
            obj = _grant(name, key)
            self.cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
            t0 = time.perf_counter()
            while subprocess.run(self.ssh_key(key, "true"), capture_output=True, timeout=60).returncode != 0:
                time.sleep(0.01)
                if time.perf_counter() - t0 > 20:
                    raise RuntimeError("grant never propagated")
            apply_ms.append((time.perf_counter() - t0) * 1000)
            client = subprocess.Popen(self.ssh_key(key, "echo up; exec sleep 300"), stdout=subprocess.PIPE,
                                      stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert client.stdout is not None and client.stdout.readline() == b"up\n"
            t0 = time.perf_counter()
            self.cluster.kubectl("-n", NS, "delete", "sshaccess", name, "--wait=false")
            client.wait(30)
            revoke_ms.append((time.perf_counter() - t0) * 1000)
        for label, values, target in (("kubectl apply → first login", apply_ms, "p95 < 0.5 s"),
                                      ("kubectl delete → live session ended", revoke_ms, "p95 < 1 s")):
            p50 = statistics.median(values)
            p95 = sorted(values)[max(0, round(0.95 * len(values)) - 1)]
            self.rows.append(Row(f"grant propagation: {label} (p50)", p50, None, "ms", "", False))
            self.rows.append(Row(f"grant propagation: {label} (p95)", p95, None, "ms", "", False, target))

    def ssh_key(self, key: SSHKey, *args: str) -> list[str]:
        opts = self.gateway.client_options(key)
        return ["ssh", *opts, f"{NS}/{self.pod}@127.0.0.1", *args]

    def file_transfer(self) -> None:
        n = 200
        big = self.work / "sftp.bin"
        if not big.exists():
            big.write_bytes(os.urandom(n * MB))
        batch_put = self.work / "put"
        batch_put.write_text(f"put {big} /tmp/sftp.bin\n")
        batch_get = self.work / "get"
        batch_get.write_text(f"get /tmp/sftp.bin {self.work}/sftp-back.bin\n")
        sftp = ["sftp", *self.gateway.client_options(self.key), "-o", "Ciphers=aes128-gcm@openssh.com", "-b"]
        target = f"{NS}/{self.deb}@127.0.0.1"
        put = self.median(lambda: n / self.timed([*sftp, str(batch_put), target]), 3)
        get = self.median(lambda: n / self.timed([*sftp, str(batch_get), target]), 3)
        # kubectl cp ended with "unexpected EOF" once here: each copy is tried again, and a copy
        # that keeps failing marks its rows rather than losing the section.
        kput, put_note = self.reference("kubectl cp", lambda: self.median(lambda: n / retried(
            lambda: self.timed(["kubectl", "cp", str(big), f"{NS}/{self.deb}:/tmp/kcp.bin"])), 3))
        kget, get_note = self.reference("kubectl cp", lambda: self.median(lambda: n / retried(
            lambda: self.timed(["kubectl", "cp", f"{NS}/{self.deb}:/tmp/kcp.bin", str(self.work / "kcp-back.bin")])),
            3))
        self.rows.append(Row(f"sftp put {n} MiB (container's sftp-server)", put, kput, "MiB/s", "kubectl cp", True,
                             note=put_note))
        self.rows.append(Row(f"sftp get {n} MiB (container's sftp-server)", get, kget, "MiB/s", "kubectl cp", True,
                             note=get_note))
        # The same through the gateway's own SFTP (busybox: no sftp-server in the image).
        target_bb = f"{NS}/{self.pod}@127.0.0.1"
        bput = self.median(lambda: n / self.timed([*sftp, str(batch_put), target_bb]), 3)
        bget = self.median(lambda: n / self.timed([*sftp, str(batch_get), target_bb]), 3)
        self.rows.append(Row(f"sftp put {n} MiB (served by the gateway)", bput, kput, "MiB/s", "kubectl cp", True,
                             note=put_note))
        self.rows.append(Row(f"sftp get {n} MiB (served by the gateway)", bget, kget, "MiB/s", "kubectl cp", True,
                             note=get_note))

    def port_forward(self) -> None:
        n = 200
        subprocess.run(self.ssh(f"head -c {n * MB} /dev/zero > /var/www/big.bin"), check=True,
                       stdin=subprocess.DEVNULL)
        lp = free_port()
        tunnel = subprocess.Popen(["ssh", *self.gateway.client_options(self.key), "-o",
                                   "Ciphers=aes128-gcm@openssh.com", "-N", "-L", f"{lp}:localhost:8080",
                                   f"{NS}/{self.pod}@127.0.0.1"], stdin=subprocess.DEVNULL)
        kp = free_port()
        kpf = subprocess.Popen(["kubectl", "-n", NS, "port-forward", f"pod/{self.pod}", f"{kp}:8080"],
                               env=self.cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for port in (lp, kp):
                wait_port(port)
            p = self.median(lambda: n / _download(lp, "/big.bin"), 3)
            k, note = self.reference("kubectl port-forward", lambda: self.median(
                lambda: n / retried(lambda: _download(kp, "/big.bin")), 3))
        finally:
            stop_client(tunnel)
            kpf.terminate()
        self.rows.append(Row(f"ssh -L bulk download ({n} MiB)", p, k, "MiB/s", "kubectl port-forward", True,
                             note=note))


def _download(port: int, path: str) -> float:
    import urllib.request

    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120) as resp:
        while resp.read(1 << 20):
            pass
    return time.perf_counter() - start


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _grant(name: str, key: SSHKey) -> dict:
    return {"apiVersion": "podssh.dev/v1alpha1", "kind": "SSHAccess",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"user": name, "publicKeys": [key.public], "pods": {"selector": {"matchLabels": {"app": "bench"}}},
                     "allow": {"shell": True, "exec": True, "sftp": True, "portForward": [8080]}}}


class Sshd:
    """OpenSSH's sshd on loopback: what this machine can do at all, for the same transfers."""

    def __init__(self, work: Path, key: SSHKey) -> None:
        self.port = free_port()
        d = work / "sshd"
        d.mkdir(exist_ok=True)
        host = d / "host_ed25519"
        if not host.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host)], check=True)
        auth = d / "authorized_keys"
        auth.write_text(key.public + "\n")
        os.chmod(auth, 0o600)
        config = d / "sshd_config"
        config.write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {host}
AuthorizedKeysFile {auth}
PermitRootLogin yes
PasswordAuthentication no
UsePAM no
StrictModes no
PidFile {d}/sshd.pid
""")
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.key = key

    def argv(self, command: str) -> list[str]:
        return ["ssh", "-F", "/dev/null", "-p", str(self.port), "-i", str(self.key.path), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "Ciphers=aes128-gcm@openssh.com", "root@127.0.0.1", command]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def profile(bench: Bench, upload: bool, seconds: int = 15) -> str:
    """py-spy on the gateway while it streams (stdout, or stdin when upload): where the time goes."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return "(py-spy not installed)"
    out = bench.work / "profile.txt"
    if upload:
        source = bench.work / "profile-upload.bin"
        with open(source, "wb") as fh:
            fh.truncate(4096 * MB)
        with open(source, "rb") as fh:
            load = subprocess.Popen(bench.ssh("wc -c"), stdout=subprocess.DEVNULL, stdin=fh)
    else:
        load = subprocess.Popen(bench.ssh(f"head -c {4096 * MB} /dev/zero"), stdout=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
    time.sleep(1)
    rec = subprocess.run([spy, "record", "--pid", str(bench.gateway.proc.pid), "--duration", str(seconds),
                          "--format", "raw", "--output", str(out), "--nonblocking"],
                         capture_output=True, timeout=seconds + 60)
    load.kill()
    load.wait()
    if rec.returncode != 0 or not out.exists():
        return f"(py-spy failed: {rec.stderr.decode()[-200:]})"
    totals: dict[str, int] = {}
    grand = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        grand += int(count)
        leaf = frames[-1] if frames else "?"
        totals[leaf] = totals.get(leaf, 0) + int(count)
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:12]
    return "\n".join(f"| {100 * c / grand:5.1f}% | `{name[:110]}` |" for name, c in top)


# --- targets -------------------------------------------------------------------------------
#
# A row's target is text for the reader and a check for `misses`, one grammar for both:
#   "≥ 1.0x", "≤ 0.8x"          podssh / reference (the ratio column)
#   "≤ reference + 1 ms"        podssh against the reference's own figure plus a margin
#   "p95 < 0.5 s", "< 1 GiB"    podssh's figure (a leading percentile only names it), in the
#   "< 2 % of a core"           row's unit or one convertible to it (s/ms, KiB/MiB/GiB)
#   "100%"                      no comparison: at least (higher is better) or at most

_TARGET = re.compile(
    r"^(?:p\d+\s+)?(?P<op>≥|≤|<=|>=|<|>|=)?\s*(?:(?P<ref>reference|kubectl)\s*\+\s*)?"
    r"(?P<num>\d[\d,]*(?:\.\d+)?)\s*(?P<unit>x|%|ms|s|KiB|MiB|GiB)?(?:\s+of a core)?$")
_SCALES = {"ms": ("time", 0.001), "s": ("time", 1.0), "KiB": ("size", 1 / 1024), "MiB": ("size", 1.0),
           "GiB": ("size", 1024.0), "%": ("share", 1.0)}
_OPS = {"≥": ">=", ">=": ">=", "≤": "<=", "<=": "<=", "<": "<", ">": ">", "=": "="}


@dataclass(frozen=True)
class Target:
    op: str  # one of >=, <=, <, >, =
    bound: float
    unit: str  # "x": a ratio; "" or a unit: the row's figure
    plus_reference: bool = False  # the bound is a margin over the reference's figure

    def holds(self, value: float) -> bool:
        return {">=": value >= self.bound, "<=": value <= self.bound, "<": value < self.bound,
                ">": value > self.bound, "=": value == self.bound}[self.op]


def parse_target(text: str, higher_is_better: bool = True) -> Target | None:
    """The check a target's text stands for; None for no target; ValueError for text outside
    the grammar above (a target nobody can check is a mistake, not a pass)."""
    text = " ".join(text.split())
    if not text:
        return None
    m = _TARGET.match(text)
    if m is None:
        raise ValueError(f"unreadable target {text!r}")
    op = _OPS[m["op"]] if m["op"] else (">=" if higher_is_better else "<=")
    unit = m["unit"] or ""
    if unit == "x" and m["ref"]:
        raise ValueError(f"a ratio cannot be added to the reference: {text!r}")
    return Target(op, float(m["num"].replace(",", "")), unit, plus_reference=bool(m["ref"]))


def _in_unit(value: float, unit: str, row_unit: str) -> float:
    """A bound given in `unit`, in the row's unit (its first word: "% of a core" is %)."""
    row = row_unit.split()[0] if row_unit.split() else ""
    if not unit or unit == row:
        return value
    if unit in _SCALES and row in _SCALES and _SCALES[unit][0] == _SCALES[row][0]:
        return value * _SCALES[unit][1] / _SCALES[row][1]
    raise ValueError(f"target in {unit} for a row in {row_unit}")


def miss(r: Row) -> str | None:
    """Why the row misses its target (a line of "Targets missed"), or None when it meets it or
    has none."""
    if r.name.endswith(": FAILED"):
        return f"- {r.name[:-len(': FAILED')]}: not measured ({r.note or 'failed'})."
    try:
        target = parse_target(r.target, r.higher_is_better)
    except ValueError as exc:
        return f"- {r.name}: {exc}."
    if target is None:
        return None
    if target.unit == "x":
        if r.ratio is None:
            return f"- {r.name}: no ratio against {r.target} ({r.note or 'a figure is missing'})."
        if target.holds(r.ratio):
            return None
        if target.op in (">=", ">"):
            return f"- {r.name}: {r.ratio:.2f}x against {r.target}, {100 * (1 - r.ratio / target.bound):.0f}% short."
        return f"- {r.name}: {r.ratio:.2f}x against {r.target}, {100 * (r.ratio / target.bound - 1):.0f}% over."
    if r.podssh is None or (target.plus_reference and r.reference is None):
        return f"- {r.name}: not measured against {r.target} ({r.note or 'a figure is missing'})."
    try:
        bound = _in_unit(target.bound, target.unit, r.unit)
    except ValueError as exc:
        return f"- {r.name}: {exc}."
    if target.plus_reference:
        assert r.reference is not None
        bound += r.reference
    if Target(target.op, bound, r.unit).holds(r.podssh):
        return None
    against = f"{r.target} (here {bound:,.1f} {r.unit})" if target.plus_reference else r.target
    return f"- {r.name}: {r.podssh:,.1f} {r.unit} against {against}."


def misses(rows: Sequence[Row]) -> str:
    """Every row that misses its target, by how much; a row that could not be measured is one."""
    return "\n".join(line for r in rows if (line := miss(r)) is not None) or "- none"


# --- the machine ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineState:
    cpus: int
    load: tuple[float, float, float]  # 1, 5 and 15 minutes

    @classmethod
    def now(cls) -> MachineState:
        return cls(os.cpu_count() or 1, os.getloadavg())

    def __str__(self) -> str:
        return f"load average {self.load[0]:.2f} / {self.load[1]:.2f} / {self.load[2]:.2f}"


def machine_note(rows: Sequence[Row], before: MachineState, after: MachineState, best: float = FLOOR_BEST) -> str:
    """The machine's state with the run, and a warning when sshd's stdout floor says the run was
    noisy: the ratios (both sides measured alike) still hold, the absolute figures do not."""
    text = f"Machine: {before.cpus} CPUs; {before} before the run, {after} after."
    floors = [r.floor for r in rows if r.floor is not None and r.name.startswith("stdout throughput")]
    if floors and floors[0] < best / 2:
        text += (f" **Noisy run**: sshd's stdout floor was {floors[0]:,.1f} MiB/s, below half of its best known "
                 f"{best:,.0f} MiB/s on this machine; other work competed for the CPUs, so compare ratios, not "
                 "absolute figures.")
    return text


def render(rows: list[Row], profiles: dict[str, str], elapsed: float, machine: str = "") -> str:
    lines = ["| benchmark | podssh | reference | ratio | OpenSSH sshd (floor) | target | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        def fmt(v: float | None, unit: str = r.unit) -> str:
            return "-" if v is None else f"{v:,.1f} {unit}"

        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        ref = "-" if r.reference is None else f"{fmt(r.reference)} ({r.ref_name})"
        if r.reference is None and r.ref_name and r.note:
            ref = f"FAILED ({r.ref_name})"
        lines.append(f"| {r.name} | {fmt(r.podssh)} | {ref} | {ratio} | {fmt(r.floor)} | {r.target} | {r.note} |")
    return (
        "# podssh benchmarks\n\n"
        f"Measured by `benchmarks/run` on {time.strftime('%Y-%m-%d', time.gmtime())}: the real local cluster "
        f"(Kubernetes 1.33, containerd), {os.cpu_count()} CPUs, loopback, OpenSSH "
        f"{subprocess.run(['ssh', '-V'], capture_output=True, text=True).stderr.split(',')[0]}; "
        "medians of repeated runs; throughput ratio = podssh / reference (higher is better), latency ratio = "
        f"podssh / reference (lower is better). Whole run: {elapsed / 60:.1f} min.\n\n"
        + (f"{machine}\n\n" if machine else "")
        + "\n".join(lines)
        + "\n\n## Targets missed\n\n" + misses(rows) + "\n"
        + "".join(f"\n## Where the gateway spends its time: {title} (py-spy, leaf functions)\n\n"
                  f"| share | function |\n|---|---|\n{text}\n" for title, text in profiles.items())
    )


KEPT_SECTION = "## Floods and fuzzing"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--sessions", default="100,500,1000", help="concurrent idle sessions to hold, "
                        "round after round (each round's sessions are dropped at once before the next)")
    parser.add_argument("--skip", default="", help="comma-separated: throughput,latency,echo,concurrency,"
                                                  "propagation,files,forward,profile")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    started = time.monotonic()
    before = MachineState.now()
    cluster = cluster_up()
    cluster.kubectl("apply", "-f", str(REPO / "manifests" / "crd.yaml"))
    cluster.kubectl("wait", "--for=condition=established", "crd/sshaccesses.podssh.dev")
    cluster.apply(f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: bench, namespace: {NS}, labels: {{app: bench}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: Never, command: [httpd, -f, -p, "8080", -h, /var/www]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: bench-deb, namespace: {NS}, labels: {{app: bench}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: main, image: podssh.local/debian:bookworm, imagePullPolicy: Never}}]
""")
    cluster.apply("".join(f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}, labels: {{app: bench, role: idle}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    # PID 1 reaps: a round's thousand sessions, hung up, leave no zombies behind.
    command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"]
""" for name in IDLE_PODS))
    cluster.wait_ready(NS, "app=bench", count=2 + len(IDLE_PODS))
    work = Path(tempfile.mkdtemp(prefix="podssh-bench-"))
    key = make_key(work, "bench")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_grant("bench", key)))
    metrics_port = free_port()
    gateway = Gateway(work / "gw", cluster.kubeconfig, None,
                      extra_args=["--metrics", f"127.0.0.1:{metrics_port}",
                                  "--max-startups", "1024", "--max-unauthenticated-per-source", "1024",
                                  "--max-connections-per-source", "2048", "--max-connections-per-key", "2048",
                                  "--audit-log", str(work / "audit.jsonl")],
                      env=dict(os.environ)).start()
    bench = Bench(cluster, gateway, key, "bench", args.runs, args.size_mb, work)
    bench.deb = "bench-deb"  # type: ignore[attr-defined]
    bench.metrics_port = metrics_port  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while subprocess.run(bench.ssh("true"), capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("the benchmark gateway does not accept the bench key")
        time.sleep(0.2)
    sshd = Sshd(work, key)

    def floor(command: str, stdin_path: str | None = None) -> float:
        return bench.median(lambda: bench.size_mb / bench.timed(sshd.argv(command), stdin_path))

    steps: list[tuple[str, Callable[[], None]]] = [
        ("throughput", lambda: bench.throughput(floor)),
        ("latency", bench.setup_latency),
        ("echo", bench.keystroke_echo),
        ("concurrency", lambda: bench.concurrency([int(n) for n in args.sessions.split(",") if n])),
        ("propagation", bench.propagation),
        ("files", bench.file_transfer),
        ("forward", bench.port_forward),
    ]
    profiles: dict[str, str] = {}
    try:
        for name, step in steps:
            if name in skip:
                continue
            print(f">> {name}", file=sys.stderr, flush=True)
            try:
                step()
            except Exception as exc:  # one failed measurement must not lose the others
                bench.rows.append(Row(f"{name}: FAILED", None, None, "", "", True, note=str(exc)[:200]))
        if "profile" not in skip:
            print(">> profile", file=sys.stderr, flush=True)
            profiles["streaming stdout (download)"] = profile(bench, upload=False)
            profiles["streaming stdin (upload)"] = profile(bench, upload=True)
    finally:
        sshd.stop()
        gateway.stop(signal.SIGTERM)
    text = render(bench.rows, profiles, time.monotonic() - started,
                  machine_note(bench.rows, before, MachineState.now()))
    results = REPO / "benchmarks" / "RESULTS.md"
    # The flood and fuzzing section is measured by benchmarks/flood.py and tests/fuzz/wirefuzz.py
    # (no cluster needed), at other times: a run of this script keeps it as it is.
    previous = results.read_text() if results.exists() else ""
    kept = previous[previous.find(KEPT_SECTION):] if KEPT_SECTION in previous else ""
    results.write_text(text.rstrip("\n") + "\n\n" + kept if kept else text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
