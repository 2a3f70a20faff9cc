"""README.md's table of `podssh serve` flags against the parser: a flag added to the CLI without
a row, a row left behind by a removed flag, or a default that drifted fails here."""

from __future__ import annotations

import argparse
import re

from sshoperator.cli import build_parser

from tests.support.cliparser import subcommands
from tests.support.cluster import REPO

HEADING = "### `podssh serve` flags"


def table_rows() -> list[list[str]]:
    """The cells of each body row of the table under HEADING (`\\|` inside a cell is a `|`)."""
    text = (REPO / "README.md").read_text()
    assert HEADING in text, f"README.md has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1]
    section = re.split(r"\n#{1,3} ", section, maxsplit=1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if set("".join(cells)) <= set("-: "):
            continue  # the separator row
        rows.append(cells)
    assert rows and rows[0] == ["flag", "default", "what it does"], f"unexpected header {rows[:1]}"
    return rows[1:]


def readme_flags() -> dict[str, tuple[str, str]]:
    """Flag → (what follows it in the first cell, the default cell)."""
    out = {}
    for cells in table_rows():
        assert len(cells) == 3, f"row with {len(cells)} cells: {cells}"
        first = cells[0].strip("`")
        flag, _, metavar = first.partition(" ")
        assert flag.startswith("--"), f"first cell is not a flag: {cells[0]!r}"
        assert flag not in out, f"{flag} has two rows"
        assert cells[2], f"{flag}: says nothing about what it does"
        out[flag] = (metavar, cells[1])
    return out


def serve_actions() -> dict[str, argparse.Action]:
    serve = subcommands(build_parser())["serve"]
    return {s: a for a in serve._actions if not isinstance(a, argparse._HelpAction) for s in a.option_strings}


def test_every_serve_flag_has_a_row_and_every_row_a_flag() -> None:
    parser_flags, documented = set(serve_actions()), set(readme_flags())
    missing, stale = sorted(parser_flags - documented), sorted(documented - parser_flags)
    assert not missing, f"serve flags missing from README.md's table: {missing}"
    assert not stale, f"README.md's table lists flags serve lacks: {stale}"


def test_the_table_shows_each_flags_metavar_and_default() -> None:
    documented = readme_flags()
    for flag, action in serve_actions().items():
        metavar, default = documented[flag]
        if isinstance(action.metavar, str):
            expected = f"[{action.metavar}]" if action.nargs == "?" else action.metavar
            assert metavar == expected, f"{flag}: README writes {metavar!r}, --help {expected!r}"
        value = action.default
        if isinstance(value, bool) or value is None or value == ():
            continue  # said in words
        if isinstance(value, int | float):
            number = re.search(r"[\d.]+", default)
            assert number and float(number.group()) == value, f"{flag}: README default {default!r}, parser {value!r}"
        else:
            shown = ":".join(map(str, value)) if isinstance(value, tuple) else str(value)
            assert f"`{shown}`" in default, f"{flag}: README default {default!r}, parser {shown!r}"


def test_a_missing_row_is_reported(monkeypatch) -> None:
    """The check above is not vacuous: a parser with one more flag fails it."""
    real = build_parser

    def with_extra_flag() -> argparse.ArgumentParser:
        parser = real()
        subcommands(parser)["serve"].add_argument("--brand-new-flag", default=1)
        return parser

    monkeypatch.setattr(f"{__name__}.build_parser", with_extra_flag)
    try:
        test_every_serve_flag_has_a_row_and_every_row_a_flag()
    except AssertionError as exc:
        assert "--brand-new-flag" in str(exc)
    else:
        raise AssertionError("a serve flag without a README row went unnoticed")
