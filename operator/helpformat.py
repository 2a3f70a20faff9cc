"""`--help` that shows every option's default, without the noise of argparse's own
ArgumentDefaultsHelpFormatter ("(default: None)", "(default: False)", "(default: [])") and
without doubling the defaults that a help text already states in its own words."""

from __future__ import annotations

import argparse


def _shown(default: object) -> bool:
    """Whether `%(default)s` says something a user would type. None, a flag's True or False and
    sequences (an empty list, a parsed HOST:PORT pair) do not: those options state their
    default in words, in their help text."""
    if default is None or default is argparse.SUPPRESS:
        return False
    return not isinstance(default, bool | list | tuple)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: …)" to an option's help unless the help already mentions its default.
    Called by argparse while it formats --help, once per action with a help text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.nargs == 0 or not _shown(action.default):
            return text
        return f"{text} (default: %(default)s)".lstrip()
