"""A `podssh serve` process under test, and the real OpenSSH client pointed at it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PODSSH = str(Path(sys.executable).with_name("podssh"))


def wait_port(port: int, timeout: float = 15) -> None:
    """Until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop_client(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """Ends an `ssh` client with SIGTERM, repeated: OpenSSH 9.2's client loop checks for a signal
    before it calls poll(), so one that lands in between is noticed only on the next wake-up."""
    deadline = time.monotonic() + timeout
    while True:
        proc.terminate()
        try:
            return proc.wait(0.5)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"ssh client {proc.pid} ignored SIGTERM for {timeout}s") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class SSHKey:
    name: str
    path: Path

    @property
    def public(self) -> str:
        return self.path.with_suffix(".pub").read_text().strip()


def make_key(directory: Path, name: str, kind: str = "ed25519") -> SSHKey:
    path = directory / f"id_{name}"
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(path)], check=True)
    return SSHKey(name, path)


def grant(name: str, namespace: str, keys: Sequence[SSHKey], selector: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "podssh.dev/v1alpha1",
        "kind": "SSHAccess",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"user": name, "publicKeys": [k.public for k in keys],
                 "pods": {"selector": {"matchLabels": selector}}, **spec},
    }


@dataclass
class Gateway:
    workdir: Path
    kubeconfig: str
    grants: list[dict[str, Any]] | None  # None: watch SSHAccess objects in the cluster
    extra_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    def start(self) -> Gateway:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd = [PODSSH, "serve", "--listen", f"127.0.0.1:{self.port}", "--kubeconfig", self.kubeconfig,
               *self.extra_args]
        if self.grants is not None:
            access = self.workdir / "access.yaml"
            access.write_text(yaml.safe_dump(self.grants))
            cmd += ["--access", str(access)]
        if "--host-key-secret" not in self.extra_args:
            cmd += ["--host-key-dir", str(self.workdir / "hostkeys")]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"podssh serve exited: {self.log_path.read_text()[-2000:]}")
            if any(e.get("event") == "ready" for e in self.events()):
                return self
            time.sleep(0.05)
        raise RuntimeError("podssh serve did not become ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and (name is None or entry.get("event") == name):
                out.append(entry)
        return out

    def client_options(self, key: SSHKey) -> list[str]:
        """Options for ssh, scp, sftp and rsync's ssh alike (port as -o: scp and sftp spell -p/-P otherwise)."""
        return ["-F", "/dev/null", "-o", f"Port={self.port}", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-i", str(key.path)]

    def ssh_argv(self, target: str, key: SSHKey | None, *options: str, tty: bool = False) -> list[str]:
        # ssh takes the first value of an option: the caller's options go first.
        argv = ["ssh", *options, "-F", "/dev/null", "-p", str(self.port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "ConnectTimeout=10"]
        if key is not None:
            argv += ["-i", str(key.path)]
        if tty:
            argv.append("-tt")
        argv.append(f"{target}@127.0.0.1")
        return argv

    def ssh(self, target: str, command: str | None, key: SSHKey | None, *options: str,
            input: bytes | None = None, tty: bool = False, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        argv = self.ssh_argv(target, key, *options, tty=tty)
        if command is not None:
            argv.append(command)
        return subprocess.run(argv, input=input if input is not None else b"", capture_output=True,
                              timeout=timeout, env=env)

    def process_counts(self) -> tuple[int, int]:
        """(threads, open file descriptors) of the server process."""
        assert self.proc is not None
        pid = self.proc.pid
        return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))
