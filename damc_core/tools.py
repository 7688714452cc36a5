"""Runs external command-line tools (ffmpeg, ffprobe, espeak-ng, sox) with checked exit codes and readable errors."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO

from damc_core.errors import InputError

INSTALL_HINTS: dict[str, str] = {
    "ffmpeg": "apt-get install ffmpeg",
    "ffprobe": "apt-get install ffmpeg",
    "espeak-ng": "apt-get install espeak-ng",
    "sox": "apt-get install sox",
}

STDERR_TAIL_LINES = 20

# How long a tool that closed its input early gets to exit on its own before it is killed.
_BROKEN_PIPE_GRACE_S = 10.0

Command = Sequence[str | os.PathLike[str]]


class ToolError(InputError, RuntimeError):
    """An external tool could not be run, timed out, or exited with a non-zero status.

    ``stderr`` holds the tail of what the tool wrote to its standard error (empty if nothing).
    """

    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class ToolNotFoundError(ToolError):
    """An external tool is not installed (not found on PATH)."""


def require_tool(name: str) -> str:
    """Return the absolute path of the executable ``name``, or raise ToolNotFoundError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        hint = INSTALL_HINTS.get(name)
        how = f"install it with `{hint}`" if hint else "install it or add it to PATH"
        raise ToolNotFoundError(f"Required tool {name!r} was not found on PATH; {how}.")
    return os.path.abspath(path)


def run_tool(
    args: Command,
    *,
    input: bytes | None = None,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool to completion and return its captured stdout/stderr (bytes).

    ``args[0]`` is looked up on PATH. ``env`` holds variables set for the tool on top of this process's
    environment. Raises ToolNotFoundError if it is missing, and ToolError (with the command line, the exit code and
    the tail of stderr) if it fails or times out.
    """
    command = _resolve(args)
    try:
        completed = subprocess.run(
            command,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            timeout=timeout,
            check=False,
            env=None if env is None else os.environ | env,
        )
    except subprocess.TimeoutExpired as error:
        raise _tool_error(args, f"timed out after {timeout:g} s", error.stderr or b"") from error
    except OSError as error:
        raise ToolError(f"Could not start `{_command_line(args)}`: {error}") from error
    if completed.returncode != 0:
        raise _tool_error(args, f"failed with exit code {completed.returncode}", completed.stderr)
    return completed


@contextlib.contextmanager
def open_tool_pipe(
    args: Command,
    *,
    stdin: bool = False,
    stdout: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a tool for streaming through its stdin and/or stdout pipes, yielding the Popen.

    On leaving the block the pipes are closed (signalling end of input), the process is waited
    for, and ToolError is raised if it exited non-zero. Output the block left unread is lost, and
    a tool still writing it typically fails with a broken pipe. If the block raises, the process
    is killed and the exception propagates; if it raised because the tool closed its end of a
    pipe early, the tool's own failure is reported instead when it has one.
    """
    command = _resolve(args)
    with tempfile.TemporaryFile() as stderr_file:
        process = _start(args, command, stdin=stdin, stdout=stdout, stderr_file=stderr_file)
        try:
            yield process
        except BrokenPipeError:
            _close_pipes(process)
            _wait_or_kill(process, _BROKEN_PIPE_GRACE_S)
            _check_exit(args, process, stderr_file)
            raise
        except BaseException:
            process.kill()
            _close_pipes(process)
            process.wait()
            raise
        _close_pipes(process)
        process.wait()
        _check_exit(args, process, stderr_file)


def _resolve(args: Command) -> list[str]:
    """Return ``args`` as strings with the program replaced by its absolute path."""
    if not args:
        raise ValueError("Cannot run a tool: the command is empty.")
    program, *rest = (os.fspath(arg) for arg in args)
    return [require_tool(program), *rest]


def _start(
    args: Command,
    command: list[str],
    *,
    stdin: bool,
    stdout: bool,
    stderr_file: IO[bytes],
) -> subprocess.Popen[bytes]:
    """Start ``command`` with the requested pipes and stderr going to ``stderr_file``."""
    try:
        return subprocess.Popen(
            command,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=stderr_file,
        )
    except OSError as error:
        raise ToolError(f"Could not start `{_command_line(args)}`: {error}") from error


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    """Close our ends of the process's pipes; a tool that already exited is not an error here."""
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            with contextlib.suppress(BrokenPipeError):
                pipe.close()


def _wait_or_kill(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """Wait up to ``grace_s`` seconds for the process to exit, then kill it."""
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _check_exit(args: Command, process: subprocess.Popen[bytes], stderr_file: IO[bytes]) -> None:
    """Raise ToolError if the finished process exited non-zero."""
    if process.returncode != 0:
        stderr_file.seek(0)
        raise _tool_error(args, f"failed with exit code {process.returncode}", stderr_file.read())


def _tool_error(args: Command, problem: str, stderr: bytes) -> ToolError:
    """Build a ToolError naming the command, what went wrong and the tail of its stderr."""
    tail = _stderr_tail(stderr)
    message = f"Command `{_command_line(args)}` {problem}."
    if tail:
        message += f"\nLast lines of its stderr:\n{tail}"
    else:
        message += " It wrote nothing to stderr."
    return ToolError(message, stderr=tail)


def _stderr_tail(stderr: bytes) -> str:
    """Decode stderr leniently and keep its last STDERR_TAIL_LINES non-blank lines."""
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return "\n".join(lines[-STDERR_TAIL_LINES:])


def _command_line(args: Command) -> str:
    """Render the command as a shell-quoted line for error messages."""
    return shlex.join(os.fspath(arg) for arg in args)
