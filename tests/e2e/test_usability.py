"""Everyday use as written in the README: Host blocks from `podssh ssh-config --target` with scp
and rsync unchanged, `scp://ns%2Fpod@host//path`, terminals that start clean (no echoed NUL
before the first output), and `ssh ls@gateway [NAMESPACE]`, the list of a key's targets."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from pathlib import Path

from sshserver.ssh import hostkeys
from tests.conftest import NS, NS_B
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


LS_HEADER = ["TARGET", "CONTAINERS", "ALLOWS", "UNTIL", "GRANT"]


def _table(out: bytes) -> tuple[list[str], dict[str, list[str]]]:
    """The header's words, and each row's cells by its TARGET (no cell holds a space)."""
    lines = out.decode().splitlines()
    assert lines, "no output"
    return lines[0].split(), {line.split()[0]: line.split() for line in lines[1:]}


def test_ls_lists_the_pods_a_key_may_reach_and_what_its_grant_allows(gateway: Gateway,
                                                                      keys: dict[str, SSHKey]) -> None:
    """dave's grant: app=web in NS, exec, sftp and port 8080, no expiry, no container list."""
    proc = gateway.ssh("ls", None, keys["dave"])
    assert proc.returncode == 0, proc.stderr
    header, rows = _table(proc.stdout)
    assert header == LS_HEADER
    assert rows[f"{NS}/httpd"] == [f"{NS}/httpd", "main", "exec,sftp,forward:8080", "-", f"{NS}/dave"]
    assert rows[f"{NS}/multi"] == [f"{NS}/multi", "main,side", "exec,sftp,forward:8080", "-", f"{NS}/dave"]
    assert [t for t in rows if t.startswith(f"{NS}/web-")], rows  # the Deployment's pod (app=web, tier=front)
    assert f"{NS}/other" not in rows  # app=other: not selected by the grant
    assert all(t.startswith(f"{NS}/") for t in rows), rows  # no grant of dave's in NS_B
    assert list(rows) == sorted(rows)
    # What the table says is what works: a listed target takes a command.
    assert gateway.ssh(f"{NS}/httpd", "echo reached", keys["dave"]).stdout == b"reached\n"


def test_ls_with_a_namespace_lists_that_namespace_only(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    """carol holds a grant in each namespace (shell and exec, the defaults)."""
    everywhere = gateway.ssh("ls", None, keys["carol"])
    assert everywhere.returncode == 0, everywhere.stderr
    _, rows = _table(everywhere.stdout)
    assert {f"{NS}/shared", f"{NS_B}/shared"} <= set(rows)
    proc = gateway.ssh("ls", NS_B, keys["carol"])
    assert proc.returncode == 0, proc.stderr
    header, rows = _table(proc.stdout)
    assert header == LS_HEADER
    assert rows == {f"{NS_B}/shared": [f"{NS_B}/shared", "main", "shell,exec", "-", f"{NS_B}/carol-b"]}


def test_ls_refuses_a_key_without_grant_and_what_it_cannot_do(gateway: Gateway, keys: dict[str, SSHKey],
                                                              tmp_path: Path) -> None:
    stranger = gateway.ssh("ls", None, keys["mallory"])  # mallory holds no grant
    assert stranger.returncode == 255 and stranger.stdout == b""
    assert b"Permission denied" in stranger.stderr
    elsewhere = gateway.ssh("ls", NS_B, keys["dave"])
    assert elsewhere.returncode == 255
    assert b"podssh: not permitted: this key has no access in namespace 'podssh-e2e-b'" in elsewhere.stderr
    batch = tmp_path / "batch"
    batch.write_text("ls /\n")
    sftp = run(["sftp", *gateway.client_options(keys["dave"]), "-b", str(batch), "ls@127.0.0.1"])
    assert sftp.returncode != 0
    assert b"podssh: not permitted: ls lists your targets and runs nothing" in sftp.stderr


def test_ls_under_a_terminal_ends_its_lines_with_crlf(gateway: Gateway, keys: dict[str, SSHKey]) -> None:
    proc = gateway.ssh("ls", None, keys["dave"], tty=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(b"\r\n") and b"\n" not in proc.stdout.replace(b"\r\n", b"")
    header, rows = _table(proc.stdout.replace(b"\r\n", b"\n"))
    assert header == LS_HEADER
    assert rows[f"{NS}/httpd"][2] == "exec,sftp,forward:8080"
