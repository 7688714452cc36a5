"""The base class of every error that bad input, a bad setting or a missing asset causes (not a bug)."""

from __future__ import annotations


class InputError(Exception):
    """Something the user gave or lacks (a file, a setting, a model, a tool); the message alone says what and how to
    fix it, so commands report it in one line instead of a traceback."""
