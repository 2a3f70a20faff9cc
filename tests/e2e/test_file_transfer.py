"""sftp, scp and rsync into pods: with the container's own sftp-server (Debian image) and with
SFTP served by the gateway from standard tools (busybox image)."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import NS
from tests.support.gateway import Gateway, SSHKey

PODS = {"own-sftp-server": f"{NS}/deb", "gateway-sftp": f"{NS}/deploy/web"}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "deeper" / "c.txt").write_text("gamma " * 1000)
    (root / "empty").write_bytes(b"")
    os.chmod(root / "a.txt", 0o640)
    os.utime(root / "a.txt", (1_600_000_000, 1_600_000_000))


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def run(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("flavour", list(PODS))
def test_sftp_session(gateway: Gateway, keys: dict[str, SSHKey], tmp_path: Path, flavour: str) -> None:
    target = PODS[flavour]
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(50 * 1024 * 1024))
    tree = tmp_path / "tree"
    make_tree(tree)
    out = tmp_path / "out"
    out.mkdir()
    remote = f"/tmp/sftp-{flavour}"
    gateway.ssh(target, f"rm -rf {remote}", keys["dave"])
    batch = tmp_path / "batch"
    batch.write_text(f"""
mkdir {remote}
cd {remote}
put {big} big.bin
put -rp {tree} tree
ls -l
rename big.bin big2.bin
get big2.bin {out}/big.bin
get -rp tree {out}/tree
mkdir gone
rmdir gone
rm big2.bin
ls
""")
    proc = run(["sftp", *gateway.client_options(keys["dave"]), "-b", str(batch), f"{target}@127.0.0.1"])
    assert proc.returncode == 0, proc.stderr.decode()
    listing = proc.stdout.decode()
    assert "big.bin" in listing and "tree" in listing
    assert digest(out / "big.bin") == digest(big)
    assert tree_digest(out / "tree") == tree_digest(tree)
    assert (out / "tree" / "a.txt").stat().st_mtime == 1_600_000_000  # times preserved both ways
    assert (out / "tree" / "a.txt").stat().st_mode & 0o777 == 0o640
    after = gateway.ssh(target, f"ls {remote}", keys["dave"]).stdout.decode().split()
    assert after == ["tree"]


@pytest.mark.parametrize("flavour", list(PODS))
def test_scp_default_mode(gateway: Gateway, keys: dict[str, SSHKey], tmp_path: Path, flavour: str) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(2_000_000))
    opts = [*gateway.client_options(keys["dave"]), "-o", f"User={PODS[flavour]}"]
    assert run(["scp", *opts, str(src), "127.0.0.1:/tmp/scp-test.bin"]).returncode == 0
    back = tmp_path / "back.bin"
    proc = run(["scp", *opts, "127.0.0.1:/tmp/scp-test.bin", str(back)])
    assert proc.returncode == 0, proc.stderr
    assert digest(back) == digest(src)
    # Overwriting a longer file with a shorter one leaves exactly the new content.
    short = tmp_path / "short.bin"
    short.write_bytes(os.urandom(700_001))
    assert run(["scp", *opts, str(short), "127.0.0.1:/tmp/scp-test.bin"]).returncode == 0
    assert run(["scp", *opts, "127.0.0.1:/tmp/scp-test.bin", str(back)]).returncode == 0
    assert digest(back) == digest(short)


def test_scp_legacy_mode(gateway: Gateway, keys: dict[str, SSHKey], tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(1_000_000))
    opts = [*gateway.client_options(keys["dave"]), "-O", "-o", f"User={NS}/deb"]
    assert run(["scp", *opts, str(src), "127.0.0.1:/tmp/scp-legacy.bin"]).returncode == 0
    back = tmp_path / "back.bin"
    assert run(["scp", *opts, "127.0.0.1:/tmp/scp-legacy.bin", str(back)]).returncode == 0
    assert digest(back) == digest(src)
    # busybox has no scp binary: the user is told what to do instead.
    opts = [*gateway.client_options(keys["dave"]), "-O", "-o", f"User={NS}/deploy/web"]
    proc = run(["scp", *opts, str(src), "127.0.0.1:/tmp/x"])
    assert proc.returncode != 0
    assert b"no scp in this container" in proc.stderr


def test_rsync_tree_then_nothing_to_do(gateway: Gateway, keys: dict[str, SSHKey], tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    gateway.ssh(f"{NS}/deb", "rm -rf /tmp/rsync-dst", keys["dave"])
    ssh = shlex.join(["ssh", *gateway.client_options(keys["dave"]), "-o", f"User={NS}/deb"])
    argv = ["rsync", "-av", "--stats", "-e", ssh, f"{tree}/", "127.0.0.1:/tmp/rsync-dst/"]
    first = run(argv)
    assert first.returncode == 0, first.stderr
    assert b"Number of regular files transferred: 4" in first.stdout
    second = run(argv)
    assert second.returncode == 0
    assert b"Number of regular files transferred: 0" in second.stdout
    back = tmp_path / "back"
    assert run(["rsync", "-a", "-e", ssh, "127.0.0.1:/tmp/rsync-dst/", f"{back}/"]).returncode == 0
    assert tree_digest(back) == tree_digest(tree)


def test_rsync_without_rsync_in_the_image_says_so(gateway: Gateway, keys: dict[str, SSHKey], tmp_path: Path) -> None:
    ssh = shlex.join(["ssh", *gateway.client_options(keys["dave"]), "-o", f"User={NS}/deploy/web"])
    proc = run(["rsync", "-a", "-e", ssh, f"{tmp_path}/", "127.0.0.1:/tmp/x/"])
    assert proc.returncode != 0
    assert b"no rsync in this container" in proc.stderr


def test_sftp_needs_the_grant(gateway: Gateway, keys: dict[str, SSHKey], tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.write_text("ls /\n")
    proc = run(["sftp", *gateway.client_options(keys["alice"]), "-b", str(batch), f"{NS}/deb@127.0.0.1"])
    assert proc.returncode != 0
    assert b"does not allow file transfer" in proc.stderr
