"""Tests for damc_core.tools: running external tools with checked exit codes and readable errors."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from damc_core.tools import ToolError, ToolNotFoundError, open_tool_pipe, require_tool, run_tool

PYTHON = sys.executable


def python_command(code: str) -> list[str]:
    """A command line running ``code`` in a fresh Python interpreter."""
    return [PYTHON, "-c", code]


def test_require_tool_returns_absolute_executable_path() -> None:
    path = require_tool("ffmpeg")

    assert os.path.isabs(path)
    assert os.access(path, os.X_OK)


@pytest.mark.parametrize(
    ("tool", "hint"),
    [("sox", "apt-get install sox"), ("espeak-ng", "apt-get install espeak-ng"), ("ffprobe", "apt-get install ffmpeg")],
)
def test_missing_tool_names_tool_and_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tool: str, hint: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(ToolNotFoundError) as caught:
        run_tool([tool, "--version"])

    assert repr(tool) in str(caught.value)
    assert hint in str(caught.value)


def test_missing_tool_without_hint_is_still_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(ToolNotFoundError, match="'no-such-tool' was not found on PATH"):
        require_tool("no-such-tool")


def test_run_tool_captures_stdout_and_passes_input() -> None:
    result = run_tool(python_command("import sys; sys.stdout.write(sys.stdin.read().upper())"), input=b"frames")

    assert result.returncode == 0
    assert result.stdout == b"FRAMES"


def test_failing_command_reports_command_exit_code_and_stderr() -> None:
    code = "import sys; sys.stderr.write('cannot open clip.mp4\\n'); sys.exit(3)"

    with pytest.raises(ToolError) as caught:
        run_tool(python_command(code))

    message = str(caught.value)
    assert "exit code 3" in message
    assert "cannot open clip.mp4" in message
    assert PYTHON in message
    assert caught.value.stderr == "cannot open clip.mp4"


def test_error_keeps_only_the_tail_of_long_stderr() -> None:
    code = "import sys\nfor i in range(100): print(f'line {i}', file=sys.stderr)\nsys.exit(1)"

    with pytest.raises(ToolError) as caught:
        run_tool(python_command(code))

    assert caught.value.stderr.splitlines() == [f"line {i}" for i in range(80, 100)]
    assert "line 79\n" not in str(caught.value)


def test_stderr_that_is_not_utf8_is_still_reported() -> None:
    code = "import sys; sys.stderr.buffer.write(b'bad byte \\xff here'); sys.exit(1)"

    with pytest.raises(ToolError, match="bad byte \ufffd here"):
        run_tool(python_command(code))


def test_real_ffmpeg_failure_is_reported_with_its_message(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"

    with pytest.raises(ToolError) as caught:
        run_tool(["ffmpeg", "-nostdin", "-hide_banner", "-i", missing])

    assert "No such file or directory" in str(caught.value)
    assert str(missing) in str(caught.value)


def test_timeout_raises_tool_error() -> None:
    with pytest.raises(ToolError, match="timed out after 0.2 s"):
        run_tool(python_command("import time; time.sleep(30)"), timeout=0.2)


def test_open_tool_pipe_streams_through_stdin_and_stdout() -> None:
    command = python_command("import sys; sys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])")

    with open_tool_pipe(command, stdin=True) as process:
        process.stdin.write(b"abc")
        process.stdin.close()
        output = process.stdout.read()

    assert output == b"cba"
    assert process.returncode == 0


def test_open_tool_pipe_raises_on_non_zero_exit() -> None:
    code = "import sys; print('partial'); sys.stderr.write('decoder exploded'); sys.exit(5)"

    with pytest.raises(ToolError) as caught, open_tool_pipe(python_command(code)) as process:
        assert process.stdout.read() == b"partial\n"

    assert "exit code 5" in str(caught.value)
    assert "decoder exploded" in str(caught.value)


def test_open_tool_pipe_reports_tool_failure_instead_of_broken_pipe() -> None:
    code = "import sys; sys.stderr.write('unsupported pixel format'); sys.exit(2)"

    with (
        pytest.raises(ToolError, match="unsupported pixel format"),
        open_tool_pipe(python_command(code), stdin=True, stdout=False) as process,
    ):
        for _ in range(1000):
            process.stdin.write(b"\0" * 65536)


def test_open_tool_pipe_kills_process_and_reraises_body_error() -> None:
    start = time.monotonic()

    with (
        pytest.raises(KeyError, match="from the body"),
        open_tool_pipe(python_command("import time; time.sleep(30)")) as process,
    ):
        raise KeyError("from the body")

    assert process.returncode is not None
    assert process.returncode != 0
    assert time.monotonic() - start < 5
