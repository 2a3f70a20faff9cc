"""Session setup without SSH: what the gateway does between the login and the running command,
timed against the real local cluster, before and after the pod cache and TLS resumption.

    KUBECONFIG=... .venv/bin/python benchmarks/setup_micro.py [--target podssh-bench/bench] [--runs 30]

The target is a running pod (benchmarks/bench.py leaves podssh-bench/bench up). Prints the
median (and p90) in milliseconds of:

- resolve: PodResolver.resolve() by GET (before) and from a synced PodCache (after);
- dial: ExecStream.open() of `true` until the upgrade is answered, with websocket-client's own
  TLS (a new SSLContext and a full handshake every time: before) and with the TlsDialer (one
  context, the TLS session resumed: after), and how many handshakes were resumed;
- exec: the same, until the command's exit status arrived;
- total: resolve + exec, before and after: what `ssh target true` pays on the gateway.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sshserver.grants.access import Grant  # noqa: E402
from sshserver.grants.labelselector import LabelSelector  # noqa: E402
from sshserver.grants.target import parse_target  # noqa: E402
from sshserver.kube.client import KubeClient  # noqa: E402
from sshserver.kube.execstream import STATUS, ExecRequest, ExecStream  # noqa: E402
from sshserver.kube.podcache import PodCache  # noqa: E402
from sshserver.kube.resolver import PodResolver, ResolvedTarget  # noqa: E402


def timed(fn: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def line(name: str, samples: list[float]) -> str:
    p90 = sorted(samples)[max(0, int(len(samples) * 0.9) - 1)]
    return f"{name:<34} median {statistics.median(samples):7.2f} ms   p90 {p90:7.2f} ms"


def open_exec(kube: KubeClient, r: ResolvedTarget, reused: list[bool]) -> ExecStream:
    assert r.container is not None
    stream = ExecStream.open(kube, ExecRequest(r.namespace, r.pod, r.container, ("true",), stdin=False), timeout=30)
    sock = stream._ws.sock
    reused.append(bool(getattr(sock, "session_reused", False)))
    return stream


def run_exec(kube: KubeClient, r: ResolvedTarget, reused: list[bool]) -> None:
    stream = open_exec(kube, r, reused)
    try:
        for channel, _ in stream.frames():
            if channel == STATUS:
                break
    finally:
        stream.abort()


def dial_only(kube: KubeClient, r: ResolvedTarget, reused: list[bool]) -> None:
    open_exec(kube, r, reused).abort()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG")
    parser.add_argument("--context")
    parser.add_argument("--target", default="podssh-bench/bench", help="NAMESPACE/POD[:CONTAINER] of a running pod")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    target = parse_target(args.target)
    if target.namespace is None:
        parser.error("--target needs the namespace: NAMESPACE/POD")
    grants = [Grant(namespace=target.namespace, name="micro", uid="micro", user="micro", keys=(),
                    selector=LabelSelector.from_dict({}))]

    before = KubeClient.load(args.kubeconfig, args.context)
    before.tls_dialer = lambda: None  # type: ignore[method-assign]  # websocket-client's own TLS, as before
    after = KubeClient.load(args.kubeconfig, args.context)
    if after.tls_dialer() is None:
        print("note: the API server is not reached over https without a proxy: no TLS resumption to measure")

    by_get = PodResolver(before)
    cache = PodCache(after)
    cache.watch_namespaces([target.namespace])
    deadline = time.monotonic() + 30
    while not cache.synced(target.namespace):
        if time.monotonic() > deadline:
            print("the pod cache did not sync within 30 s (does the kubeconfig's user may watch pods?)")
            return 1
        time.sleep(0.05)
    by_cache = PodResolver(after, cache=cache)
    resolved = by_get.resolve(target, grants)
    print(f"target {resolved.namespace}/{resolved.pod}:{resolved.container}, {args.runs} runs each\n")

    rows = [line("resolve, GET (before)", timed(lambda: by_get.resolve(target, grants), args.runs)),
            line("resolve, pod cache (after)", timed(lambda: by_cache.resolve(target, grants), args.runs))]
    for name, kube in (("before", before), ("after", after)):
        reused: list[bool] = []
        rows.append(line(f"dial, {name}", timed(lambda k=kube, u=reused: dial_only(k, resolved, u), args.runs)))
        rows[-1] += f"   resumed {sum(reused)}/{len(reused)}"
    for name, kube in (("before", before), ("after", after)):
        rows.append(line(f"exec `true`, {name}", timed(lambda k=kube: run_exec(k, resolved, []), args.runs)))
    rows.append(line("resolve + exec, before", timed(
        lambda: run_exec(before, by_get.resolve(target, grants), []), args.runs)))
    rows.append(line("resolve + exec, after", timed(
        lambda: run_exec(after, by_cache.resolve(target, grants), []), args.runs)))
    print("\n".join(rows))
    cache.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
