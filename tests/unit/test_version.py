"""One version source: pyproject.toml. The CLI and the build-info metric read it from the
package metadata (or, from a source tree never installed, from pyproject.toml itself)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from sshoperator.cli import build_parser

from sshserver import version as version_module
from sshserver.observability.metrics import Metrics
from sshserver.version import UNKNOWN, version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT_VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_installed_metadata_is_the_pyproject_version() -> None:
    assert metadata.version("podssh") == PYPROJECT_VERSION == version()


def test_podssh_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"podssh {PYPROJECT_VERSION}\n"
    console = Path(sys.executable).with_name("podssh")
    out = subprocess.run([str(console), "--version"], capture_output=True, text=True, timeout=60).stdout
    assert out == f"podssh {PYPROJECT_VERSION}\n"


def test_build_info_metric_carries_it() -> None:
    m = Metrics()
    assert m.registry.get_sample_value("podssh_build_info", {"version": PYPROJECT_VERSION}) == 1


def test_source_tree_without_metadata_reads_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module.metadata, "version", missing)
    version.cache_clear()
    try:
        assert version() == PYPROJECT_VERSION
    finally:
        version.cache_clear()


def test_unreadable_or_foreign_pyproject_gives_unknown(tmp_path: Path) -> None:
    assert version_module._source_tree_version(tmp_path / "missing.toml") == UNKNOWN
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "something-else"\nversion = "9.9.9"\n')
    assert version_module._source_tree_version(other) == UNKNOWN
    other.write_text("not toml [")
    assert version_module._source_tree_version(other) == UNKNOWN


def test_no_other_copy_of_the_version_in_the_code() -> None:
    pattern = re.compile(r"__version__\s*=|['\"]" + re.escape(PYPROJECT_VERSION) + r"['\"]")
    copies = [str(p.relative_to(REPO)) for d in ("sshserver", "operator") for p in (REPO / d).rglob("*.py")
              if pattern.search(p.read_text())]
    assert copies == []
