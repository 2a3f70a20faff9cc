"""The local cluster itself: real pods, real exec (v5 WebSocket through the API server), real Services."""

from __future__ import annotations

import re
import subprocess

from tests.support.cluster import BUSYBOX, DEBIAN, Cluster, wait_http

NS = "cluster-e2e"


def _setup(cluster: Cluster) -> None:
    cluster.apply(f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: bb, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: bb}}}}
  template:
    metadata: {{labels: {{app: bb}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {BUSYBOX}
        imagePullPolicy: Never
        command: ["httpd", "-f", "-p", "8080", "-h", "/var/www"]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: bb, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: bb}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {NS}}}
spec:
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: db, image: {DEBIAN}, imagePullPolicy: Never}}]
---
apiVersion: batch/v1
kind: Job
metadata: {{name: once, namespace: {NS}}}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - {{name: once, image: {BUSYBOX}, imagePullPolicy: Never, command: ["sh", "-c", "echo job-done"]}}
""")


def test_workloads_run(cluster: Cluster) -> None:
    _setup(cluster)
    cluster.kubectl("-n", NS, "rollout", "status", "deploy/bb", "--timeout=120s")
    cluster.kubectl("-n", NS, "rollout", "status", "sts/db", "--timeout=120s")
    cluster.kubectl("-n", NS, "wait", "--for=condition=complete", "job/once", "--timeout=120s")
    assert cluster.kubectl("-n", NS, "logs", "job/once").stdout == "job-done\n"


def test_kubectl_exec_output_and_exit_code(cluster: Cluster) -> None:
    _setup(cluster)
    pod = cluster.wait_ready(NS, "app=bb")[0]
    proc = cluster.kubectl("-n", NS, "exec", pod, "--", "sh", "-c", "echo hello; exit 7", check=False)
    assert proc.stdout == "hello\n"
    assert proc.returncode == 7


def test_stdin_eof_over_v5(cluster: Cluster) -> None:
    _setup(cluster)
    pod = cluster.wait_ready(NS, "app=bb")[0]
    proc = cluster.kubectl("-n", NS, "exec", "-i", pod, "--", "wc", "-l", input="a\nb\n", timeout=30)
    assert proc.stdout.strip() == "2"


def test_exec_with_a_tty(cluster: Cluster) -> None:
    _setup(cluster)
    pod = cluster.wait_ready(NS, "app=bb")[0]
    cmd = f"kubectl -n {NS} exec -it {pod} -- tty"
    proc = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=cluster.env, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    # kubectl may log its own warnings (and the terminal may echo a stray ^@) into the same
    # terminal; the command's answer, a pts device, must be there.
    assert re.search(rb"/dev/pts/\d+\r?\n", proc.stdout), proc.stdout


def test_nodeport_reachable_on_the_node_address(cluster: Cluster) -> None:
    _setup(cluster)
    cluster.wait_ready(NS, "app=bb")
    port = cluster.get("service", "-n", NS, "bb")["spec"]["ports"][0]["nodePort"]
    assert wait_http(f"http://{cluster.node_ip}:{port}/") == b"podssh test page\n"


def test_debian_image_has_what_the_tests_need(cluster: Cluster) -> None:
    _setup(cluster)
    cluster.kubectl("-n", NS, "rollout", "status", "sts/db", "--timeout=120s")
    proc = cluster.kubectl("-n", NS, "exec", "db-0", "--", "bash", "-c",
                           "test -x /usr/lib/openssh/sftp-server && tar --version | head -1 && echo ok")
    assert proc.stdout.strip().endswith("ok")
