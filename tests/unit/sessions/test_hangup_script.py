"""The hangup script (sessions/hangup.py) against real processes, in a PID namespace of its own
where, as in a pod, each exec's session leader has no parent: `nsenter` forks into the
namespace from outside it, as runc does for an exec. Needs root (unshare, nsenter)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from sshserver.sessions import hangup

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"), reason="needs root and util-linux")

SHELLS = [["/bin/sh"]] + ([["busybox", "sh"]] if shutil.which("busybox") else [])


@pytest.fixture
def namespace() -> Iterator[list[str]]:
    """The argv prefix that runs a command as a fresh exec in a new PID namespace."""
    init = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sleep", "120"])
    try:
        deadline = time.monotonic() + 5
        children: list[str] = []
        while not children and time.monotonic() < deadline:
            children = subprocess.run(["pgrep", "-P", str(init.pid)], capture_output=True, text=True).stdout.split()
            time.sleep(0.02)
        if not children:
            pytest.skip("no PID namespace could be made here")
        yield ["nsenter", "-t", children[0], "--pid", "--mount", "--"]
    finally:
        init.kill()
        init.wait()


def _default_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: " ".join(s))
def test_one_run_hangs_up_every_session_it_is_given_and_counts_each(namespace: list[str], shell: list[str]) -> None:
    tokens = [hangup.new_token() for _ in range(4)]
    bodies = ["sleep 100 & sleep 100 & wait", "sleep 100 & sleep 100 & wait",
              "setsid sleep 100 & wait"]  # the third: a child that left the session, as with setsid(1)
    # As in a pod, SIGHUP starts at its default: a test run under nohup (CI, `nohup make test`)
    # would otherwise hand its ignored SIGHUP down to every process here.
    execs = [subprocess.Popen([*namespace, "setsid", "env", f"{hangup.ENV}={t}", "sh", "-c", body],
                              preexec_fn=_default_sighup)
             for t, body in zip(tokens, bodies, strict=False)]
    try:
        # Every process started (five sleeps and the namespace's own), not a fixed pause: under
        # load half a second was not always enough.
        deadline = time.monotonic() + 20
        while subprocess.run([*namespace, "pgrep", "-c", "-x", "sleep"], capture_output=True,
                             text=True).stdout.strip() != "6":
            assert time.monotonic() < deadline, "the test's processes did not start"
            time.sleep(0.05)
        out = subprocess.run([*namespace, *shell, "-c", hangup._SCRIPT, "sh", *tokens, "not;a token", ""],
                             capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert hangup.parse_counts(out.stdout, tokens) == {tokens[0]: 3, tokens[1]: 3, tokens[2]: 1, tokens[3]: 0}
        assert len(out.stdout.splitlines()) == 4  # nothing said about what is not a token
        for p in execs:  # the SIGHUP ended each exec's shell
            p.wait(10)
        # The namespace's init and the setsid child stay (the rest end, as zombies): a signalled
        # sleep may take a moment to go, so wait for it rather than look once.
        deadline = time.monotonic() + 10
        while (survivors := subprocess.run([*namespace, "pgrep", "-c", "-r", "S,R,D", "-x", "sleep"],
                                           capture_output=True, text=True).stdout.strip()) != "2":
            assert time.monotonic() < deadline, f"{survivors} sleeps left, not 2"
            time.sleep(0.05)
    finally:
        for p in execs:
            p.kill()
