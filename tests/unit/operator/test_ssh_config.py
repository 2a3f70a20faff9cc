"""`podssh ssh-config`: the comment tells a way to copy files that works (scp reads
`NAMESPACE/POD@host:` as a local path), and `--target/--name` write one Host block per target
with `User` set, which is what scp, rsync and ssh themselves read (checked with `ssh -G`, and
with scp run against a stand-in for ssh that prints the arguments it was given)."""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

import pytest
from sshoperator.cli import main
from sshoperator.manifests import config_targets, ssh_config


def _resolved(config: Path, host: str) -> dict[str, str]:
    """What ssh makes of `host` under this config alone."""
    out = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, check=True)
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


def _config(tmp_path: Path, *targets: str) -> Path:
    args = ["ssh-config", "--host", "ssh.example.com", "--port", "2222", "--alias", "prod"]
    for t in targets:
        args += t.split()
    path = tmp_path / "config"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    path.write_text(out.getvalue())
    return path


def test_each_target_gets_a_host_block_with_its_user(tmp_path: Path) -> None:
    config = _config(tmp_path, "--target shop/deploy/web --name shop-web", "--target shop/db-0:pg")
    web = _resolved(config, "shop-web")
    assert (web["user"], web["hostname"], web["port"]) == ("shop/deploy/web", "ssh.example.com", "2222")
    assert web["hostkeyalias"] == "prod" and web["stricthostkeychecking"] in ("true", "yes")
    assert web["userknownhostsfile"].endswith("/.ssh/podssh_known_hosts")
    db = _resolved(config, "shop-db-0-pg")  # no --name: named after the target
    assert (db["user"], db["hostkeyalias"]) == ("shop/db-0:pg", "prod")
    gateway = _resolved(config, "prod")
    assert gateway["user"] != "shop/deploy/web"  # the gateway's own block names no target
    assert gateway["hostname"] == "ssh.example.com"


def test_scp_and_rsync_reach_the_host_block_as_written(tmp_path: Path) -> None:
    """scp and rsync hand `shop-web` to ssh as a host (no local path, no user of their own), and
    ssh then takes the user from the block; a stand-in for ssh records what it was given."""
    config = _config(tmp_path, "--target shop/deploy/web --name shop-web")
    record = tmp_path / "args"
    fake = tmp_path / "fakessh"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\nexit 1\n")
    fake.chmod(0o755)
    local = tmp_path / "f"
    local.write_text("x")
    subprocess.run(["scp", "-F", str(config), "-S", str(fake), str(local), "shop-web:/tmp/"],
                   capture_output=True, timeout=10)
    argv = record.read_text().splitlines()
    assert "shop-web" in argv and "-l" not in argv, argv
    assert not (tmp_path / "shop-web:").exists()  # not taken as a local path
    record.unlink()
    subprocess.run(["rsync", "-e", f"{fake} -F {config}", str(local), "shop-web:/tmp/"], capture_output=True,
                   timeout=10)
    argv = record.read_text().splitlines()
    assert "shop-web" in argv and "-l" not in argv, argv


def test_the_comment_gives_copy_commands_that_name_the_target_as_the_user() -> None:
    text = ssh_config(host="h", port=22)
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert not any("NAMESPACE/POD@podssh:" in line and "scp FILE NAMESPACE" in line for line in comments)
    assert any("scp -o User=NAMESPACE/POD FILE podssh:/PATH" in line for line in comments)
    assert any("scp://NAMESPACE%2FPOD@podssh//PATH" in line for line in comments)


def test_scp_urls_decode_the_slash_of_the_target(tmp_path: Path) -> None:
    """What the README documents: `scp://ns%2Fpod@host//path` gives ssh the user `ns/pod`."""
    record = tmp_path / "args"
    fake = tmp_path / "fakessh"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\nexit 1\n")
    fake.chmod(0o755)
    subprocess.run(["scp", "-F", "/dev/null", "-S", str(fake), "/etc/hostname", "scp://shop%2Fweb-1@gw:2222//tmp/x"],
                   capture_output=True, timeout=10)
    argv = record.read_text().splitlines()
    assert argv[argv.index("-l") + 1] == "shop/web-1" and argv[argv.index("-p") + 1] == "2222", argv


@pytest.mark.parametrize(("targets", "names", "message"), [
    (["shop/web"], ["a", "b"], "--name given without its --target"),
    (["web"], [], "name its namespace"),
    (["shop/Bad_Name"], [], "invalid pod name"),
    (["shop/web"], ["shop web"], "cannot be written"),
    (["shop/web"], ["shop*"], "cannot be written"),
    (["shop/web", "shop/db"], ["x", "x"], "each Host name once"),
])
def test_bad_targets_and_names_are_refused(targets: list[str], names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_targets(targets, names)


def test_a_target_named_like_the_gateway_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ssh-config", "--host", "h", "--target", "shop/web", "--name", "podssh"]) != 0
    assert "--alias" in capsys.readouterr().err
