#!/usr/bin/env python3
"""Packs a root filesystem directory into a single-layer OCI image archive.

No registry is reachable from the machines the cluster runs on, so the images
the cluster needs are built from local files and imported into containerd with
`ctr images import`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path


def _layer(rootfs: Path, out: Path) -> tuple[str, str, int]:
    """Writes a gzip layer; returns (compressed digest, diff id, size)."""
    raw = hashlib.sha256()
    with tempfile.TemporaryFile() as plain:
        with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(rootfs.rglob("*")):
                rel = entry.relative_to(rootfs).as_posix()
                info = tar.gettarinfo(str(entry), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if info.isreg():
                    with open(entry, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        plain.seek(0)
        with open(out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
            for chunk in iter(lambda: plain.read(1 << 20), b""):
                raw.update(chunk)
                gz.write(chunk)
    data = out.read_bytes()
    return "sha256:" + hashlib.sha256(data).hexdigest(), "sha256:" + raw.hexdigest(), len(data)


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return "sha256:" + digest, len(data)


def build(rootfs: Path, ref: str, cmd: list[str], out: Path, env: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        layer_path = Path(tmp) / "layer.tar.gz"
        layer_digest, diff_id, layer_size = _layer(rootfs, layer_path)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": cmd, "Env": env, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            # Builders (buildah) check that history and layers agree.
            "created": "1970-01-01T00:00:00Z",
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/lib/oci_image.py"}],
        }
        with tarfile.open(out, "w") as tar:
            info = tarfile.TarInfo(f"blobs/sha256/{layer_digest.split(':')[1]}")
            info.size = layer_size
            with open(layer_path, "rb") as fh:
                tar.addfile(info, fh)
            cfg_digest, cfg_size = _blob(tar, json.dumps(config).encode())
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": cfg_digest, "size": cfg_size},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": layer_digest, "size": layer_size}],
            }
            man_digest, man_size = _blob(tar, json.dumps(manifest).encode())
            index = {
                "schemaVersion": 2,
                "manifests": [{
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": man_digest, "size": man_size,
                    "annotations": {"io.containerd.image.name": ref,
                                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]},
                }],
            }
            for name, payload in (("index.json", index), ("oci-layout", {"imageLayoutVersion": "1.0.0"})):
                data = json.dumps(payload).encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("ref")
    parser.add_argument("out", type=Path)
    parser.add_argument("--cmd", required=True, help="JSON list: the image's default command")
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()
    env = args.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    tmp_out = args.out.with_suffix(".partial")
    build(args.rootfs, args.ref, json.loads(args.cmd), tmp_out, env)
    os.replace(tmp_out, args.out)


if __name__ == "__main__":
    main()
