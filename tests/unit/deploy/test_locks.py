"""The hashed locks (`make lock`) against pyproject.toml: the image installs requirements.lock and
`make venv` installs requirements-test.lock, both with pip's --require-hashes, so a dependency
missing from a lock, pinned outside its range or without a hash breaks those installs; these
tests say which one, without a network."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.cluster import REPO

RUNTIME_LOCK = REPO / "requirements.lock"
TEST_LOCK = REPO / "requirements-test.lock"


@dataclass(frozen=True)
class Pin:
    """One entry of a lock: `name==version [; marker]` and its --hash options."""

    name: str
    version: Version
    hashes: tuple[str, ...]
    line: str


def entries(lock: Path) -> list[str]:
    """The lock's entries, each with its backslash continuations joined and comments dropped."""
    out: list[str] = []
    current = ""
    for raw in lock.read_text().splitlines():
        text = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not text and not current:
            continue
        if text.endswith("\\"):
            current += text[:-1] + " "
            continue
        current += text
        if current.strip():
            out.append(" ".join(current.split()))
        current = ""
    assert not current, f"{lock.name} ends inside a continued line"
    return out


def parse_pin(entry: str) -> Pin:
    words = entry.split(" --")
    requirement = Requirement(words[0])
    options = [w.strip() for w in words[1:]]
    hashes = tuple(o.removeprefix("hash=") for o in options if o.startswith("hash="))
    assert len(hashes) == len(options), f"options other than --hash in {entry!r}"
    specs = list(requirement.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"not pinned with == to one version: {words[0]!r}"
    return Pin(canonicalize_name(requirement.name), Version(specs[0].version), hashes, words[0])


def pins(lock: Path) -> dict[str, Pin]:
    found: dict[str, Pin] = {}
    for entry in entries(lock):
        pin = parse_pin(entry)
        assert pin.name not in found, f"{pin.name} appears twice in {lock.name}"
        found[pin.name] = pin
    return found


def declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(d) for d in deps]


@pytest.mark.parametrize(("lock", "requirements"), [
    (RUNTIME_LOCK, declared()),
    (TEST_LOCK, declared() + declared("test")),
], ids=["runtime", "test"])
def test_every_declared_dependency_is_pinned_within_its_range(lock: Path, requirements: list[Requirement]) -> None:
    locked = pins(lock)
    for req in requirements:
        pin = locked.get(canonicalize_name(req.name))
        assert pin is not None, f"{req} is not in {lock.name}: run make lock"
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"{lock.name} pins {pin.name}=={pin.version}, outside pyproject.toml's {req}: run make lock")


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, TEST_LOCK], ids=["runtime", "test"])
def test_every_entry_carries_a_hash(lock: Path) -> None:
    locked = pins(lock)
    assert locked, f"{lock.name} has no entries"
    for pin in locked.values():
        assert pin.hashes, f"{pin.line} in {lock.name} has no --hash"
        for h in pin.hashes:
            algorithm, _, digest = h.partition(":")
            assert algorithm == "sha256" and len(digest) == 64, f"{pin.name}: malformed hash {h!r}"


def test_the_test_lock_keeps_the_runtime_pins() -> None:
    """What the tests run against is what the image ships."""
    runtime, test = pins(RUNTIME_LOCK), pins(TEST_LOCK)
    for name, pin in runtime.items():
        assert name in test, f"{name} is in requirements.lock only"
        assert test[name].version == pin.version, (
            f"{name}: {pin.version} in requirements.lock, {test[name].version} in requirements-test.lock")


def test_the_installs_use_the_locks_with_hash_checking() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "pip install --require-hashes -r /src/requirements.lock" in dockerfile
    assert "pip install --no-deps /src" in dockerfile
    makefile = (REPO / "Makefile").read_text()
    assert "$(STAMP): pyproject.toml requirements-test.lock" in makefile
    assert "pip install -q --require-hashes -r requirements-test.lock" in makefile
    assert "pip install -q --no-deps -e ." in makefile


def test_the_parser_rejects_what_pip_would(tmp_path: Path) -> None:
    """The checks above would pass vacuously if the parser skipped malformed lines."""
    unhashed = tmp_path / "a.lock"
    unhashed.write_text("# comment\nfoo==1.0 \\\n    # via bar\n")
    assert pins(unhashed)["foo"].hashes == ()
    ranged = tmp_path / "b.lock"
    ranged.write_text("foo>=1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(AssertionError, match="not pinned"):
        pins(ranged)
