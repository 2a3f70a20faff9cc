"""Real keys, certificates and KRLs made by OpenSSH's ssh-keygen, for certificate and revocation tests."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True, timeout=60)


def make_key(directory: Path, name: str, kind: str = "ed25519", bits: int | None = None) -> Path:
    """A passphrase-less key pair; returns the private key's path (the public one is PATH.pub)."""
    path = directory / name
    if not path.exists():
        keygen("-t", kind, *(["-b", str(bits)] if bits else []), "-N", "", "-C", name, "-f", str(path))
    return path


def sign(ca: Path, key: Path, *options: str, principals: str = "alice", key_id: str = "kid", serial: int = 1,
         algorithm: str | None = None) -> Path:
    """Signs KEY.pub with CA; returns the path of the certificate (KEY-cert.pub)."""
    keygen("-s", str(ca), *(["-t", algorithm] if algorithm else []), "-I", key_id, "-n", principals,
           "-z", str(serial), *[x for o in options for x in ("-O", o)], f"{key}.pub")
    return Path(f"{key}-cert.pub")


def blob(path: Path) -> bytes:
    """The wire blob of a public key or certificate file."""
    return base64.b64decode(path.read_text().split()[1])


def krl(path: Path, spec: str, *, ca: Path | None = None, update: bool = False) -> Path:
    """`ssh-keygen -k`: a KRL from a specification file (or public keys), optionally for a CA."""
    spec_file = path.with_suffix(".spec")
    spec_file.write_text(spec)
    keygen("-k", *(["-u"] if update else []), *(["-s", f"{ca}.pub"] if ca else []), "-f", str(path),
           str(spec_file))
    return path
