"""Process-level behaviour of `podssh serve`: host keys in a Secret, bounded memory under a slow reader."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.conftest import NS
from tests.support.cluster import Cluster
from tests.support.gateway import Gateway, SSHKey


def _host_key(gw: Gateway) -> str:
    out = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(gw.port), "127.0.0.1"],
                         capture_output=True, text=True, timeout=20).stdout
    return out.split()[-1]


def test_host_keys_live_in_a_secret_shared_by_replicas(workloads: Cluster, make_gateway) -> None:
    workloads.kubectl("-n", NS, "delete", "secret", "podssh-hostkeys", "--ignore-not-found")
    first = make_gateway("--host-key-secret", f"{NS}/podssh-hostkeys")
    second = make_gateway("--host-key-secret", f"{NS}/podssh-hostkeys")
    key = _host_key(first)
    assert key == _host_key(second)
    first.stop()
    third = make_gateway("--host-key-secret", f"{NS}/podssh-hostkeys")
    assert _host_key(third) == key
    data = workloads.get("secret", "-n", NS, "podssh-hostkeys")["data"]
    assert set(data) == {"ssh_host_ed25519_key", "ssh_host_ecdsa_key"}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_reader_does_not_make_the_gateway_buffer(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    assert gateway.proc is not None
    size = 512 * 1024 * 1024
    argv = [*gateway.ssh_argv(f"{NS}/deploy/web", keys["alice"]), f"head -c {size} /dev/zero"]
    client = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert client.stdout is not None
    first = client.stdout.read(1024)
    baseline = _rss_kib(gateway.proc.pid)
    time.sleep(3)  # the pod keeps writing; nobody reads
    stalled = _rss_kib(gateway.proc.pid)
    total = len(first)
    while chunk := client.stdout.read(1 << 20):
        total += len(chunk)
    assert client.wait(60) == 0
    assert total == size
    # Everything in flight fits in the SSH window and socket buffers: tens of MiB, not the 512 MiB sent.
    assert stalled - baseline < 64 * 1024, f"RSS grew by {(stalled - baseline) // 1024} MiB while stalled"
