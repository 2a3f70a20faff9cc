"""Static grants from a YAML file, so the server runs without the operator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .access import AccessSnapshot, GrantError, snapshot_from_objects


def load_access_file(path: Path) -> AccessSnapshot:
    """Reads a YAML list (or a multi-document stream) of SSHAccess objects; any bad object is fatal."""
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read access file {path}: {exc}") from None
    objects: list[Any] = []
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, list):
            objects.extend(doc)
        elif isinstance(doc, dict) and doc.get("kind") == "List":
            objects.extend(doc.get("items") or [])
        else:
            objects.append(doc)
    for obj in objects:
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: every entry must be an SSHAccess object")
    snapshot, errors = snapshot_from_objects(objects)
    if errors:
        name, err = next(iter(errors.items()))
        raise ValueError(f"{path}: SSHAccess {name}: {err}") from (err if isinstance(err, GrantError) else None)
    return snapshot
