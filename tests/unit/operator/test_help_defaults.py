"""`podssh SUBCOMMAND --help` states every option's default once, in words a user would type:
never "(default: None)", "(default: False)", "(default: [])" nor a default said twice."""

from __future__ import annotations

import argparse
import re

import pytest
from sshoperator.cli import build_parser

from tests.support.cliparser import subcommands


def option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text of one option as --help prints it, before line wrapping."""
    return parser._get_formatter()._expand_help(action)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def test_every_serve_option_shows_its_default() -> None:
    serve = subcommands(build_parser())["serve"]
    for action in options(serve):
        text = option_help(serve, action)
        flag = action.option_strings[0]
        assert re.search(r"\bdefault\b", text), f"{flag}: no default in {text!r}"
        if isinstance(action.default, int | float | str) and not isinstance(action.default, bool):
            assert f"default: {action.default}" in text, f"{flag}: default {action.default!r} not in {text!r}"


def test_serve_help_shows_plain_defaults() -> None:
    serve = subcommands(build_parser())["serve"]
    text = " ".join(serve.format_help().split())
    assert "--max-auth-tries N authentication attempts per connection, as sshd's MaxAuthTries (default: 6)" in text
    assert "(default: 0.0.0.0:2222)" in text
    assert "(default: info)" in text


@pytest.mark.parametrize("name", list(subcommands(build_parser())))
def test_no_subcommand_prints_an_empty_or_doubled_default(name: str) -> None:
    sub = subcommands(build_parser())[name]
    for action in options(sub):
        text = option_help(sub, action)
        flag = action.option_strings[0]
        assert text.count("default:") <= 1, f"{name} {flag}: default said twice in {text!r}"
        for noise in ("(default: None)", "(default: False)", "(default: True)", "(default: [])", "(default: ()",
                      "%(default)"):
            assert noise not in text, f"{name} {flag}: {noise} in {text!r}"
        if action.default is not None and action.nargs != 0:
            assert "default" in text, f"{name} {flag}: default {action.default!r} not shown in {text!r}"


def test_every_option_has_a_help_text() -> None:
    """argparse prints no default for an option without a help text, so none may lack one."""
    parser = build_parser()
    for name, sub in subcommands(parser).items():
        for action in options(sub):
            assert action.help, f"{name} {action.option_strings[0]} has no help text"
