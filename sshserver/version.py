"""The podssh version: one source, pyproject.toml's `version`, read from the installed package's
metadata (`podssh --version` and the podssh_build_info metric both ask here). Run from a source
tree that was never installed, it reads pyproject.toml beside the package instead."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "podssh"
UNKNOWN = "0+unknown"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@cache
def version() -> str:
    """Called once per process (cached), on whichever thread asks first."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return _source_tree_version(PYPROJECT)


def _source_tree_version(pyproject: Path) -> str:
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return UNKNOWN
    return project.get("version", UNKNOWN) if project.get("name") == DISTRIBUTION else UNKNOWN
