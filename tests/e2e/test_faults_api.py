"""The API server out of reach (a cut TCP path between the gateway and kube-apiserver): the
user reads one line naming it and gets 255, the metric says Unreachable, and a gateway
started without the API server waits, alive but not ready, and serves once it answers."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import NS
from tests.support.cluster import Cluster, api_address, kubeconfig_via
from tests.support.gateway import PODSSH, Gateway, SSHKey, free_port, grant, make_key
from tests.support.tcpproxy import ConnectProxy, CuttableProxy
from tests.support.waiting import wait_for

WEB = f"{NS}/deploy/web"


@pytest.fixture
def api_path(workloads: Cluster, tmp_path: Path) -> Iterator[tuple[CuttableProxy, str]]:
    """A kubeconfig whose API server address is a proxy the test can cut."""
    proxy = CuttableProxy(api_address(workloads.kubeconfig))
    yield proxy, kubeconfig_via(workloads.kubeconfig, proxy.port, tmp_path / "proxied.kubeconfig")
    proxy.close()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def api_errors(port: int, reason: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "podssh_kubernetes_api_errors_total" and s.labels.get("reason") == reason)


def test_a_login_without_the_api_server_says_so_in_one_line_and_exits_255(
        make_gateway, keys: dict[str, SSHKey], api_path: tuple[CuttableProxy, str]) -> None:
    proxy, kubeconfig = api_path
    port = free_port()
    gw = make_gateway("--metrics", f"127.0.0.1:{port}", kubeconfig=kubeconfig)
    assert gw.ssh(WEB, "true", keys["alice"]).returncode == 0
    proxy.cut()
    for target in (WEB, f"{NS}/deb"):  # a workload and a pod: both look the pod up first
        proc = gw.ssh(target, "echo never", keys["alice"], timeout=60)
        lines = proc.stderr.decode().splitlines()
        assert proc.returncode == 255, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("podssh: cannot reach the Kubernetes API server ("), lines
        assert b"never" not in proc.stdout
    assert api_errors(port, "Unreachable") >= 2
    assert not gw.events("session_crashed"), "an unreachable API server is not a crash"
    proxy.restore()
    wait_for(lambda: gw.ssh(WEB, "true", keys["alice"]).returncode == 0, timeout=10, step=0.5,
             what="a login once the API server is back")


def test_serve_started_without_the_api_server_waits_not_ready_and_recovers(
        crd: Cluster, api_path: tuple[CuttableProxy, str], tmp_path: Path) -> None:
    proxy, kubeconfig = api_path
    proxy.cut()
    key = make_key(tmp_path, "late")
    crd.kubectl("apply", "-f", "-", input=json.dumps(grant("late-api", NS, [key], {"app": "web"})))
    metrics = free_port()
    gw = Gateway(tmp_path / "gw", kubeconfig, None, extra_args=["--metrics", f"127.0.0.1:{metrics}"])
    gw.workdir.mkdir(parents=True)
    gw.port = free_port()
    log = open(gw.log_path, "ab")  # noqa: SIM115 - closed below
    gw.proc = subprocess.Popen([PODSSH, "serve", "--listen", f"127.0.0.1:{gw.port}", "--kubeconfig", kubeconfig,
                                "--metrics", f"127.0.0.1:{metrics}", "--host-key-dir", str(tmp_path / "hk")],
                               stdout=log, stderr=subprocess.STDOUT)
    gw._log = log
    try:
        wait_for(lambda: len(gw.events("api_unavailable")) >= 2, timeout=30, what="two retries logged")
        assert gw.proc.poll() is None, "serve must wait for the API server, not exit"
        assert http_status(f"http://127.0.0.1:{metrics}/healthz") == 200
        assert http_status(f"http://127.0.0.1:{metrics}/readyz") == 503
        text = gw.log_path.read_text()
        assert "Traceback" not in text
        assert all(e.get("waiting_for") == "SSHAccess objects" for e in gw.events("api_unavailable"))
        proxy.restore()
        wait_for(lambda: gw.events("ready"), timeout=40, step=0.2, what="ready once the API server answers")
        assert http_status(f"http://127.0.0.1:{metrics}/readyz") == 200
        assert gw.ssh(WEB, "true", key).returncode == 0
    finally:
        gw.stop()
        crd.kubectl("-n", NS, "delete", "sshaccess", "late-api", "--ignore-not-found")


def test_a_partitioned_api_server_ends_the_session_within_the_keepalive_bound(
        make_gateway, keys: dict[str, SSHKey], api_path: tuple[CuttableProxy, str]) -> None:
    proxy, kubeconfig = api_path
    gw = make_gateway("--api-keepalive", "1", "--api-keepalive-timeout", "4", kubeconfig=kubeconfig)
    client = subprocess.Popen([*gw.ssh_argv(WEB, keys["alice"]), "echo started; sleep 600"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdout is not None and client.stdout.readline() == b"started\n"
        # Idle but healthy: pongs keep it alive well past the timeout.
        with pytest.raises(subprocess.TimeoutExpired):
            client.wait(8)
        proxy.freeze()
        t0 = time.monotonic()
        _, err = client.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 255, err
    lines = err.decode().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("podssh: the Kubernetes API server stopped answering"), lines
    assert took < 4 + 3, f"ended {took:.1f}s after the partition"
    # A login during the partition fails with one clear line, and all works once it heals.
    proc = gw.ssh(WEB, "true", keys["alice"], timeout=60)
    assert proc.returncode == 255 and proc.stderr.decode().startswith("podssh: cannot reach the Kubernetes API server")
    proxy.restore()
    wait_for(lambda: gw.ssh(WEB, "true", keys["alice"]).returncode == 0, timeout=15, step=0.5,
             what="a login once the partition healed")


def test_exec_and_port_forward_streams_honour_the_kubeconfig_proxy_url(
        make_gateway, keys: dict[str, SSHKey], workloads: Cluster, tmp_path: Path) -> None:
    """The kubeconfig names an address where nothing listens, reachable only through its
    proxy-url: REST calls and the exec/portforward WebSockets must all take the proxy."""
    proxy = ConnectProxy(api_address(workloads.kubeconfig))
    try:
        path = kubeconfig_via(workloads.kubeconfig, free_port(), tmp_path / "proxied.kubeconfig",  # closed
                              **{"proxy-url": f"http://127.0.0.1:{proxy.port}"})
        gw = make_gateway(kubeconfig=path)
        proc = gw.ssh(WEB, "echo through-the-proxy", keys["alice"])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == b"through-the-proxy\n"
        assert all(r.startswith("CONNECT 127.0.0.1:") for r in proxy.requests), proxy.requests
        before = len(proxy.requests)
        proc = gw.ssh(WEB, "echo again", keys["alice"])
        assert proc.returncode == 0 and len(proxy.requests) > before, "each exec stream is a tunnel of its own"
    finally:
        proxy.close()


def test_a_proxy_url_streams_cannot_use_is_refused_at_start(workloads: Cluster, tmp_path: Path) -> None:
    cfg = yaml.safe_load(Path(workloads.kubeconfig).read_text())
    cfg["clusters"][0]["cluster"]["proxy-url"] = "ftp://127.0.0.1:21"
    path = tmp_path / "bad-proxy.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([PODSSH, "serve", "--listen", "127.0.0.1:0", "--kubeconfig", str(path),
                           "--host-key-dir", str(tmp_path / "hk")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("podssh: cannot load Kubernetes configuration:"), lines
    assert "proxy" in lines[0].lower()
