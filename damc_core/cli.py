"""Runs a stage script or command: an InputError becomes one line on stderr and exit status 1, SIGTERM cleans up."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import NoReturn

from damc_core.errors import InputError

TERMINATED_STATUS = 128 + signal.SIGTERM
"""Exit status of a command stopped by SIGTERM, as a shell reports it."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (continuation lines joined with spaces)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def run_command(main: Callable[[], int | None], name: str | None = None) -> NoReturn:
    """Run `main` and exit with its status (see exit_status). SIGTERM raises SystemExit in the main thread, so
    context managers and `finally` blocks remove partial outputs and temporary files, as they do on Ctrl-C."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(exit_status(main, name or Path(sys.argv[0]).stem))


def exit_status(main: Callable[[], int | None], name: str) -> int:
    """`main`'s status (None counts as 0). An InputError prints `<name>: error: <message>` on one line of stderr and
    gives 1; any other exception is a bug and propagates with its traceback."""
    try:
        return main() or 0
    except InputError as error:
        print(f"{name}: error: {one_line(error)}", file=sys.stderr)
        return 1


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(TERMINATED_STATUS)
