"""Words for people: counts as people write them ("1 file", "2 files"), and ``--help`` that
shows an option's default only where it tells something."""

from __future__ import annotations

import argparse

__all__ = ["counted", "DefaultsHelpFormatter"]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, made plural unless ``n`` is 1 (``plural`` where adding an s is wrong)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every CLI's ``--help``: an option's default appended where it tells something. Not where
    there is none to tell (None: the help says what happens; False: a flag that is off) nor where
    the help already names it ("default ..."), which argparse's own formatter repeats as
    "(default: None)" or "(default: False)" after it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default is None or action.default is False or action.default == [] or "default" in help_text:
            return help_text
        return super()._get_help_string(action)
