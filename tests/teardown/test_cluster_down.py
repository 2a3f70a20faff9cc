"""`hack/cluster down` leaves nothing behind, and a warm `up` brings the cluster back.

Runs after every other test (`make test` runs this folder last): it stops the cluster.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.cluster import REPO, cluster_up

STATE = Path(os.environ.get("PODSSH_CLUSTER_DIR", "/var/lib/podssh-cluster"))
pytestmark = pytest.mark.teardown


def _processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    names = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
             "containerd", "etcd --name podssh")
    return [line for line in out.splitlines() if any(n in line for n in names) and "pytest" not in line]


def _leftovers() -> dict[str, list[str]]:
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    rules = ""
    for tool in ("iptables-save", "ip6tables-save"):
        rules += subprocess.run([tool], capture_output=True, text=True).stdout
    cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")]
    return {
        "processes": _processes(),
        "mounts": [m for m in mounts if m.startswith(str(STATE)) or "/netns/cni-" in m],
        "netns": [n for n in netns if n.startswith("cni-")],
        "links": [w for w in ("cni0", "podssh0", "veth") if f" {w}" in links],
        "iptables": sorted({w for w in rules.split() if w.startswith(("KUBE-", "CNI-"))}),
        "cgroups": cgroups,
        "state": [str(STATE)] if STATE.exists() else [],
    }


def test_down_leaves_nothing_and_up_comes_back() -> None:
    cluster = cluster_up()
    assert cluster.kubectl("get", "pods", "-A").returncode == 0
    assert _leftovers()["processes"], "the cluster should be running before down"
    subprocess.run([str(REPO / "hack" / "cluster"), "down"], check=True, timeout=120)
    assert _leftovers() == {k: [] for k in _leftovers()}
    started = time.monotonic()
    cluster_up()
    warm = time.monotonic() - started
    print(f"\nwarm hack/cluster up: {warm:.1f}s")  # README records it; no timing assertion here
    proc = subprocess.run([str(REPO / "hack" / "cluster"), "status"], capture_output=True, text=True)
    assert proc.returncode == 0 and "kubelet: running" in proc.stdout
