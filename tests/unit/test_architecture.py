"""The import contract (.importlinter) holds for the tree, and fails when an upward import or a
circle is added: a copy of the packages gets one bad import, and lint-imports must refuse it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}
    return subprocess.run([str(LINT), "--config", str(tree / ".importlinter"), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


def copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "sshserver", tree / "sshserver", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "operator", tree / "sshoperator", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tree / ".importlinter")
    return tree


def add_import(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_tree_keeps_the_contract(tmp_path: Path) -> None:
    result = lint(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize(("module", "line", "broken"), [
    # A lower layer reaching up (even only for type checking): the layers contract.
    ("sshserver.grants.keys", "from sshserver.kube import client", "layered"),
    ("sshserver.kube.resolver", "if False:\n    from sshserver.sessions import lifecycle", "layered"),
    # The data plane reaching into the operator.
    ("sshserver.observability.audit", "import sshoperator.writer", "never imports the control plane"),
    # A control-plane module other than the CLI reaching into the gateway's inside.
    ("sshoperator.controlplane", "from sshserver.gateway import core", "composition root"),
    # A circle between two sibling modules.
    ("sshserver.grants.keys", "from sshserver.grants import access", "circles"),
])
def test_a_bad_import_breaks_the_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    tree = copy_tree(tmp_path)
    add_import(tree, module, line)
    result = lint(tree)
    assert result.returncode != 0
    assert broken in result.stdout and "BROKEN" in result.stdout
