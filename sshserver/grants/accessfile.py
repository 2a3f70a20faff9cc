"""Static grants from a YAML file, so the server runs without the operator."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from sshserver.grants.access import AccessSnapshot, object_ref, parse_objects, snapshot_of

log = logging.getLogger("podssh.access")


def load_access_file(path: Path) -> AccessSnapshot:
    """Reads a YAML list (or a multi-document stream, or a `kind: List`) of SSHAccess objects.

    A file that cannot be read or is not YAML raises ValueError (the gateway refuses to start, with
    one line). A bad object is not fatal, as in the cluster: it is reported with one
    `access_object_invalid` log line naming it and the reason, and grants nothing; the others are
    served. Called once, at start, on the main thread."""
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"cannot read access file {path}: {detail[:300]}") from None
    objects: list[Any] = []
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, list):
            objects.extend(doc)
        elif isinstance(doc, dict) and doc.get("kind") == "List":
            items = doc.get("items")
            objects.extend(items if isinstance(items, list) else [] if items is None else [items])
        else:
            objects.append(doc)
    parsed = parse_objects(objects)
    for i, p in enumerate(parsed):
        if p.error is not None:
            log.warning("access_object_invalid", extra={"fields": {  # plain logging: see grants/__init__
                "file": str(path), "index": i, "object": object_ref(p.body), "reason": p.error.reason,
                "message": str(p.error)}})
    return snapshot_of(parsed)
