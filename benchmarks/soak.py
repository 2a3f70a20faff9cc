"""Soak: churn against one gateway on the real local cluster, watching for leaks.

    benchmarks/soak [--minutes 10] [--workers 4]

Workers run, at random and without pause: execs checking their output, pty shells, sftp
uploads and downloads checked byte for byte, `ssh -L` downloads, clients SIGKILLed mid-stream,
and sessions whose grant is deleted under them. A sampler reads the gateway's threads, open
file descriptors and RSS every few seconds. The report (the "## Soak" section of
benchmarks/RESULTS.md, and benchmarks/soak.svg) gives the sessions served, failures by reason,
and the slope of each series after a warm-up: flat means no leak.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.cluster import BUSYBOX, Cluster, cluster_up  # noqa: E402
from tests.support.gateway import Gateway, SSHKey, free_port, make_key, wait_port  # noqa: E402

NS = "podssh-soak"
SAMPLE_EVERY = 5.0
WARMUP = 0.2  # the first fifth of the run is left out of the slopes


def grant(name: str, key: SSHKey) -> dict:
    return {"apiVersion": "podssh.dev/v1alpha1", "kind": "SSHAccess",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"user": name, "publicKeys": [key.public], "pods": {"selector": {"matchLabels": {"app": "soak"}}},
                     "allow": {"shell": True, "exec": True, "sftp": True, "portForward": [8080]}}}


class Soak:
    def __init__(self, cluster: Cluster, gateway: Gateway, key: SSHKey, work: Path) -> None:
        self.cluster, self.gw, self.key, self.work = cluster, gateway, key, work
        self.served: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.revokes = 0

    def ssh(self, target: str, *args: str, key: SSHKey | None = None) -> list[str]:
        return ["ssh", *self.gw.client_options(key or self.key), "-l", target, "127.0.0.1", *args]

    def note(self, kind: str, failure: str | None) -> None:
        with self.lock:
            if failure:
                self.failures[f"{kind}: {failure}"] += 1
            else:
                self.served[kind] += 1

    # --- the churn ----------------------------------------------------------------------

    def exec_(self, worker: int) -> str | None:
        p = subprocess.run(self.ssh(f"{NS}/soak-deb", "echo hi; head -c 100000 /dev/zero | wc -c"),
                           capture_output=True, timeout=60)
        return None if (p.returncode, p.stdout.split()) == (0, [b"hi", b"100000"]) else f"exit {p.returncode}"

    def pty(self, worker: int) -> str | None:
        p = subprocess.run(self.ssh(f"{NS}/soak-deb", "-tt", "stty size; echo done"), capture_output=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        return None if p.returncode == 0 and b"done" in p.stdout else f"exit {p.returncode}"

    def sftp(self, worker: int) -> str | None:
        local = self.work / f"up-{worker}"
        back = self.work / f"down-{worker}"
        data = os.urandom(1024 * 1024)
        local.write_bytes(data)
        batch = f"put {local} /tmp/soak-{worker}\nget /tmp/soak-{worker} {back}\nrm /tmp/soak-{worker}\n"
        p = subprocess.run(["sftp", *self.gw.client_options(self.key), "-b", "-", f"{NS}/soak-deb@127.0.0.1"],
                           input=batch.encode(), capture_output=True, timeout=120)
        if p.returncode != 0:
            return f"exit {p.returncode}"
        return None if hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(data).digest() else "mismatch"

    def forward(self, worker: int) -> str | None:
        port = free_port()
        proc = subprocess.Popen(self.ssh(f"{NS}/soak-web", "-N", "-L", f"{port}:localhost:8080"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, timeout=20)
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/big", timeout=30) as r:
                        size = len(r.read())
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        return "no answer"
                    time.sleep(0.2)
            return None if size == 4 * 1024 * 1024 else f"{size} bytes"
        finally:
            proc.terminate()
            proc.wait(10)

    def killed(self, worker: int) -> str | None:
        proc = subprocess.Popen(self.ssh(f"{NS}/soak-deb", "cat /dev/zero"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(random.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return None

    def revoked(self, worker: int) -> str | None:
        with self.lock:
            self.revokes += 1
            name = f"temp-{worker}-{self.revokes}"
        key = make_key(self.work, name)
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(grant(name, key)))
        argv = self.ssh(f"{NS}/soak-deb", "echo in; sleep 60", key=key)
        deadline = time.monotonic() + 10
        while True:  # the grant reaches the gateway within a second or so
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stdout is not None
            if proc.stdout.readline() == b"in\n":
                break
            proc.wait(10)
            if time.monotonic() > deadline:
                self.cluster.kubectl("delete", "sshaccess", "-n", NS, name, "--wait=false")
                return "grant never worked"
        self.cluster.kubectl("delete", "sshaccess", "-n", NS, name, "--wait=false")
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return "not ended"
        return None if proc.returncode == 255 and b"revoked" in err else f"exit {proc.returncode}"

    def work_loop(self, worker: int, until: float) -> None:
        kinds = [("exec", self.exec_, 6), ("pty", self.pty, 3), ("sftp", self.sftp, 2), ("forward", self.forward, 2),
                 ("killed", self.killed, 2), ("revoked", self.revoked, 1)]
        names, fns, weights = zip(*kinds, strict=True)
        rng = random.Random(worker)
        while time.monotonic() < until:
            i = rng.choices(range(len(names)), weights)[0]
            try:
                failure = fns[i](worker)
            except Exception as exc:  # a hung client, a timeout: a failure of that kind
                failure = type(exc).__name__
            self.note(names[i], failure)


def sample(pid: int) -> tuple[int, int, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    rss = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1)) / 1024  # type: ignore[union-attr]
    return threads, len(os.listdir(f"/proc/{pid}/fd")), rss


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return 60 * sum((t - mx) * (v - my) for t, v in points) / den if den else 0.0


def svg(samples: list[tuple[float, int, int, float]], path: Path) -> None:
    """Three small line charts (threads, fds, RSS) over time: no plotting library needed."""
    width, height, pad = 600, 120, 30
    series = [("threads", 1, "#1f77b4"), ("open fds", 2, "#2ca02c"), ("RSS MiB", 3, "#d62728")]
    end = samples[-1][0] or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{len(series) * height}" '
             'font-family="sans-serif" font-size="11">']
    for row, (label, col, color) in enumerate(series):
        values = [s[col] for s in samples]
        lo, hi = 0.0, max(values) * 1.1 or 1
        top = row * height
        pts = " ".join(f"{pad + (s[0] / end) * (width - 2 * pad):.1f},"
                       f"{top + height - pad / 2 - (s[col] - lo) / (hi - lo) * (height - pad):.1f}" for s in samples)
        parts += [f'<text x="{pad}" y="{top + 12}">{label} (0 to {hi:.0f}; {end / 60:.1f} min)</text>',
                  f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>',
                  f'<line x1="{pad}" y1="{top + height - pad / 2}" x2="{width - pad}" y2="{top + height - pad / 2}" '
                  'stroke="#999"/>']
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def report(soak: Soak, samples: list[tuple[float, int, int, float]], minutes: float, workers: int) -> str:
    after = [s for s in samples if s[0] >= WARMUP * samples[-1][0]]
    th, fd, rss = (slope([(s[0], s[i]) for s in after]) for i in (1, 2, 3))
    first, last = samples[0], samples[-1]
    served = sum(soak.served.values())
    lines = [
        "## Soak", "",
        f"`benchmarks/soak --minutes {minutes:g} --workers {workers}` on {time.strftime('%Y-%m-%d')}: churn against "
        "one gateway on the local cluster (execs checking their output, pty shells, sftp put/get checked byte for "
        "byte, "
        "`ssh -L` downloads, clients SIGKILLed mid-stream, grants deleted under live sessions), sampled every "
        f"{SAMPLE_EVERY:g} s. Slopes are least-squares after the first {int(WARMUP * 100)} % of the run.", "",
        "| sessions served | " + " | ".join(f"{k}" for k in sorted(soak.served)) + " |",
        "|---|" + "---|" * len(soak.served),
        f"| {served} | " + " | ".join(str(soak.served[k]) for k in sorted(soak.served)) + " |", "",
        "| series | start | end | slope after warm-up |", "|---|---|---|---|",
        f"| gateway threads | {first[1]} | {last[1]} | {th:+.2f} / min |",
        f"| open file descriptors | {first[2]} | {last[2]} | {fd:+.2f} / min |",
        f"| RSS | {first[3]:.1f} MiB | {last[3]:.1f} MiB | {rss:+.2f} MiB / min |", "",
        "Failures: " + (", ".join(f"{k}: {v}" for k, v in sorted(soak.failures.items())) or "none") + ".", "",
        "![threads, fds and RSS over the soak](soak.svg)", "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the churn (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=4, help="concurrent clients (default: %(default)s)")
    args = parser.parse_args()
    cluster = cluster_up()
    # A previous run's namespace may still be terminating.
    cluster.kubectl("wait", "--for=delete", f"namespace/{NS}", "--timeout=120s", check=False)
    cluster.kubectl("apply", "-f", str(REPO / "manifests" / "crd.yaml"))
    cluster.kubectl("wait", "--for=condition=established", "crd/sshaccesses.podssh.dev")
    cluster.apply(f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: soak-web, namespace: {NS}, labels: {{app: soak}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh, -c, "mkdir -p /www && head -c 4194304 /dev/zero > /www/big && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Pod
metadata: {{name: soak-deb, namespace: {NS}, labels: {{app: soak}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: main, image: podssh.local/debian:bookworm, imagePullPolicy: Never}}]
""")
    cluster.wait_ready(NS, "app=soak", count=2)
    work = Path(tempfile.mkdtemp(prefix="podssh-soak-"))
    key = make_key(work, "soak")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(grant("soak", key)))
    gateway = Gateway(work / "gw", cluster.kubeconfig, None,
                      extra_args=["--max-connections-per-key", "1024", "--audit-log", str(work / "audit.jsonl")],
                      env=dict(os.environ)).start()
    soak = Soak(cluster, gateway, key, work)
    deadline = time.monotonic() + 30
    while soak.exec_(0) is not None:
        if time.monotonic() > deadline:
            raise SystemExit("soak: the gateway does not accept the soak key")
        time.sleep(0.5)
    pid = gateway.proc.pid
    started = time.monotonic()
    until = started + args.minutes * 60
    samples: list[tuple[float, int, int, float]] = [(0.0, *sample(pid))]
    threads = [threading.Thread(target=soak.work_loop, args=(w, until), daemon=True) for w in range(args.workers)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(SAMPLE_EVERY)
        samples.append((time.monotonic() - started, *sample(pid)))
        print(f"soak: {samples[-1][0]:.0f}s threads {samples[-1][1]} fds {samples[-1][2]} rss {samples[-1][3]:.1f} MiB "
              f"served {sum(soak.served.values())} failed {sum(soak.failures.values())}", file=sys.stderr, flush=True)
    time.sleep(SAMPLE_EVERY)  # quiet: what is left is what leaked
    samples.append((time.monotonic() - started, *sample(pid)))
    gateway.stop()
    cluster.kubectl("delete", "namespace", NS, "--wait=false")
    svg(samples, REPO / "benchmarks" / "soak.svg")
    section = report(soak, samples, args.minutes, args.workers)
    results = REPO / "benchmarks" / "RESULTS.md"
    text = results.read_text() if results.exists() else "# podssh benchmarks\n"
    if "## Soak" in text:
        start = text.index("## Soak")
        nxt = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[nxt + 1:] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    results.write_text(text.rstrip("\n") + "\n")
    print(section)
    return 0 if not soak.failures else 1


if __name__ == "__main__":
    sys.exit(main())
