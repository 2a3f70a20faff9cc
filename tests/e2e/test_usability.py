"""Everyday use as written in the README: Host blocks from `podssh ssh-config --target` with scp
and rsync unchanged, `scp://ns%2Fpod@host//path`, and terminals that start clean (no echoed NUL
before the first output)."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from pathlib import Path

from sshserver.ssh import hostkeys
from tests.conftest import NS
from tests.support.gateway import PODSSH, Gateway, SSHKey

WEB = f"{NS}/deploy/web"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _config(gateway: Gateway, key: SSHKey, tmp_path: Path) -> Path:
    """`podssh ssh-config` for this gateway, with its host keys pinned (no trust on first use) as
    `podssh known-hosts` would pin them from the Secret."""
    known = tmp_path / "known_hosts"
    keys = hostkeys.from_directory(gateway.workdir / "hostkeys")
    known.write_text("\n".join(hostkeys.known_hosts_lines(keys, host="127.0.0.1", port=gateway.port,
                                                          alias="podssh")) + "\n")
    out = subprocess.run([PODSSH, "ssh-config", "--host", "127.0.0.1", "--port", str(gateway.port),
                          "--identity", str(key.path), "--known-hosts-file", str(known),
                          "--target", f"{NS}/deb", "--name", "e2e-deb"],
                         capture_output=True, text=True, check=True)
    config = tmp_path / "config"
    config.write_text(out.stdout + "\nHost *\n    BatchMode yes\n    LogLevel ERROR\n")
    return config


def test_scp_and_rsync_through_a_host_block_as_written(gateway: Gateway, keys: dict[str, SSHKey],
                                                       tmp_path: Path) -> None:
    config = _config(gateway, keys["dave"], tmp_path)
    gateway.ssh(f"{NS}/deb", "rm -rf /tmp/cfg-scp.bin /tmp/cfg-url.bin /tmp/cfg-rsync", keys["dave"])
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(1_500_000))

    proc = run(["ssh", "-F", str(config), "e2e-deb", "echo in-deb"])
    assert (proc.returncode, proc.stdout) == (0, b"in-deb\n"), proc.stderr

    proc = run(["scp", "-F", str(config), str(src), "e2e-deb:/tmp/cfg-scp.bin"])
    assert proc.returncode == 0, proc.stderr
    back = tmp_path / "back.bin"
    proc = run(["scp", "-F", str(config), "e2e-deb:/tmp/cfg-scp.bin", str(back)])
    assert proc.returncode == 0, proc.stderr
    assert digest(back.read_bytes()) == digest(src.read_bytes())

    # The URL form through the gateway's own block: '/' as %2F, '//' for an absolute path.
    proc = run(["scp", "-F", str(config), str(src), f"scp://{NS}%2Fdeb@podssh//tmp/cfg-url.bin"])
    assert proc.returncode == 0, proc.stderr
    remote = gateway.ssh(f"{NS}/deb", "sha256sum /tmp/cfg-url.bin", keys["dave"]).stdout.split()[0].decode()
    assert remote == digest(src.read_bytes())

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    ssh = shlex.join(["ssh", "-F", str(config)])
    proc = run(["rsync", "-a", "--stats", "-e", ssh, f"{tree}/", "e2e-deb:/tmp/cfg-rsync/"])
    assert proc.returncode == 0, proc.stderr
    assert b"Number of regular files transferred: 2" in proc.stdout
    out = tmp_path / "out"
    proc = run(["rsync", "-a", "-e", ssh, "e2e-deb:/tmp/cfg-rsync/", f"{out}/"])
    assert proc.returncode == 0, proc.stderr
    assert (out / "sub" / "b.bin").read_bytes() == (tree / "sub" / "b.bin").read_bytes()


def test_terminals_start_without_an_echoed_nul(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    """The first bytes of 10 pty sessions: the answer, never a NUL (nor its echo, `^@`)."""
    firsts = []
    for _ in range(10):
        proc = gateway.ssh(f"{NS}/deb", "stty size", keys["alice"], tty=True)
        assert proc.returncode == 0, proc.stderr
        firsts.append(proc.stdout[:64])
    bad = [f for f in firsts if b"\x00" in f or b"^@" in f]
    assert not bad, f"{len(bad)} of 10 sessions started with a NUL: {bad}"
    assert all(f.split()[:2] and f.split()[0].isdigit() for f in firsts), firsts
