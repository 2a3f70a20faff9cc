"""The real local cluster, as the tests use it: `hack/cluster up` once per test session."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = "podssh.local/busybox:1.35"
DEBIAN = "podssh.local/debian:bookworm"
DISTROLESS = "podssh.local/distroless:1"  # one static binary, no shell (hack/lib/build-images.sh)


@dataclass(frozen=True)
class Cluster:
    env: dict[str, str]

    @property
    def kubeconfig(self) -> str:
        return self.env["KUBECONFIG"]

    @property
    def node_ip(self) -> str:
        return self.env["PODSSH_NODE_IP"]

    def kubectl(self, *args: str, input: str | bytes | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        data = input.decode() if isinstance(input, bytes) else input
        proc = subprocess.run(["kubectl", *args], env=self.env, input=data, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def apply(self, manifest: str) -> None:
        """Applies a manifest; its Namespaces first, so that its bare Pods never race the
        service-account controller ("serviceaccount default not found")."""
        docs = [d for d in yaml.safe_load_all(manifest) if d]
        namespaces = [d for d in docs if d.get("kind") == "Namespace"]
        rest = [d for d in docs if d.get("kind") != "Namespace"]
        if namespaces:
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(namespaces))
            for ns in namespaces:
                self.wait_default_serviceaccount(ns["metadata"]["name"])
        if rest:
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rest))

    def wait_default_serviceaccount(self, namespace: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"no default ServiceAccount in {namespace} after {timeout}s")
            time.sleep(0.2)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def wait_ready(self, namespace: str, selector: str, count: int = 1, timeout: float = 120) -> list[str]:
        """Waits until `count` pods matching the selector are Ready; returns their names."""
        deadline = time.monotonic() + timeout
        while True:
            pods = self.get("pods", "-n", namespace, "-l", selector)["items"]
            ready = [
                p["metadata"]["name"] for p in pods
                if p["metadata"].get("deletionTimestamp") is None
                and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            ]
            if len(ready) >= count:
                return sorted(ready)
            if time.monotonic() > deadline:
                raise AssertionError(f"pods {selector} in {namespace} not Ready after {timeout}s: {pods}")
            time.sleep(0.5)


def cluster_up() -> Cluster:
    proc = subprocess.run([str(REPO / "hack" / "cluster"), "up"], capture_output=True, text=True, timeout=3000)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/cluster up failed:\n{proc.stderr[-4000:]}")
    env = dict(os.environ)
    for line in proc.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    return Cluster(env)


def wait_http(url: str, timeout: float = 30) -> bytes:
    """GETs url until it answers (a new Service or pod takes a moment); returns the body."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def api_address(kubeconfig: str) -> tuple[str, int]:
    """The API server's (host, port) as the kubeconfig names it."""
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    host, port = cfg["clusters"][0]["cluster"]["server"].removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def kubeconfig_via(kubeconfig: str, port: int, path: Path, **cluster: str) -> str:
    """A copy of the kubeconfig whose API server is 127.0.0.1:port (a test's proxy), with extra
    cluster fields (e.g. proxy-url); returns its path."""
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    cfg["clusters"][0]["cluster"].update(cluster)
    path.write_text(yaml.safe_dump(cfg))
    return str(path)
