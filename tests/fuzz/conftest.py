"""Counts the inputs each fuzz harness ran and prints one line per harness at the end, so that
`make fuzz` shows how far every parser was pushed (hypothesis alone reports only failures)."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import pytest

_COUNTS: Counter[str] = Counter()


def _counting(name: str, inner: Any) -> Any:
    @functools.wraps(inner)
    def run(*args: Any, **kwargs: Any) -> Any:
        _COUNTS[name] += 1
        return inner(*args, **kwargs)

    run._podssh_counted = True  # type: ignore[attr-defined]
    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Wraps the function hypothesis calls once per input (`.hypothesis.inner_test`, which
    hypothesis documents as reassignable). Called once, after collection, on the main thread."""
    for item in items:
        handle = getattr(getattr(item, "obj", None), "hypothesis", None)
        if handle is None or "/fuzz/" not in str(item.path).replace("\\", "/"):
            continue
        if not getattr(handle.inner_test, "_podssh_counted", False):
            name = f"{item.path.name}::{item.originalname}"  # type: ignore[attr-defined]
            handle.inner_test = _counting(name, handle.inner_test)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _COUNTS:
        return
    terminalreporter.section("fuzz inputs per harness")
    for name, count in sorted(_COUNTS.items()):
        terminalreporter.write_line(f"{count:>10}  {name}")
    terminalreporter.write_line(f"{sum(_COUNTS.values()):>10}  total")
