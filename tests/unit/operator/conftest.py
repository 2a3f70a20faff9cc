"""Fixtures of the control plane's unit tests: SSH public keys, SSHAccess bodies, the fake API
(tests/support/fakekube.py) and ClusterWriters on it that are stopped after each test."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sshoperator.writer import ClusterWriter

from tests.support.fakekube import FakeKube


def _keygen(directory: Path, name: str) -> str:
    path = directory / f"id_{name}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="session")
def pubkey(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _keygen(tmp_path_factory.mktemp("keys"), "alice")


@pytest.fixture(scope="session")
def other_pubkey(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _keygen(tmp_path_factory.mktemp("keys"), "other")


def stamp(moment: datetime) -> str:
    """An RFC 3339 time with microseconds, so that a grant can expire within a fast test."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sshaccess(pubkey: str, name: str = "alice", uid: str | None = None, **spec: Any) -> dict[str, Any]:
    """An SSHAccess body in namespace `shop` as the API server returns it; `spec` overrides fields."""
    return {
        "apiVersion": "podssh.dev/v1alpha1", "kind": "SSHAccess",
        "metadata": {"namespace": "shop", "name": name, "uid": uid or f"u-{name}", "generation": 1},
        "spec": {"user": name, "publicKeys": [pubkey], "pods": {"selector": {"matchLabels": {"app": "web"}}},
                 **spec},
    }


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    yield fake
    fake.release()  # a call left hanging must not outlive the test


@pytest.fixture
def make_writer(kube: FakeKube) -> Iterator[Callable[..., ClusterWriter]]:
    """Started ClusterWriters on the fake API with millisecond retries; all stopped at teardown."""
    writers: list[ClusterWriter] = []

    def make(**options: Any) -> ClusterWriter:
        options = {"retry_base": 0.01, "retry_cap": 0.05, "request_timeout": 1.0, **options}
        writer = ClusterWriter(kube, **options)  # type: ignore[arg-type]
        writer.start()
        writers.append(writer)
        return writer

    yield make
    kube.release()
    for writer in writers:
        writer.stop()
