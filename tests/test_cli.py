"""Stage scripts and commands: an expected error is one line and exit status 1; a bug keeps its traceback; SIGTERM
cleans up like Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from damc_core.cli import TERMINATED_STATUS, exit_status
from damc_core.media import MediaError


def test_an_input_error_is_one_line_and_status_1(capsys):
    def main():
        raise MediaError("clip.mp4 has no audio track.\nGive a video with its sound.")

    assert exit_status(main, "face_prep") == 1
    assert capsys.readouterr().err == "face_prep: error: clip.mp4 has no audio track. Give a video with its sound.\n"


def test_a_bug_keeps_its_traceback():
    def main():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        exit_status(main, "face_prep")


def test_the_status_of_main_is_returned():
    assert exit_status(lambda: None, "x") == 0
    assert exit_status(lambda: 3, "x") == 3


def test_sigterm_removes_the_partial_output_and_temporary_files(tmp_path):
    """A render stopped by SIGTERM left `<out>.<hex>.partial` and its temporary soundtrack folder behind."""
    script = textwrap.dedent(f"""
        import tempfile, time
        from pathlib import Path
        from damc_core.cli import run_command
        from damc_core.staging import staged_file

        def main():
            with tempfile.TemporaryDirectory(dir={str(tmp_path)!r}) as scratch, \\
                    staged_file(Path({str(tmp_path / "out.mp4")!r})) as partial:
                partial.write_text("half a video")
                Path(scratch, "audio.wav").write_text("soundtrack")
                print("ready", flush=True)
                time.sleep(60)

        run_command(main, "render")
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    assert len(list(tmp_path.iterdir())) == 2, "the partial file and the scratch folder exist while it runs"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == TERMINATED_STATUS
    assert time.monotonic() - started < 10
    assert list(tmp_path.iterdir()) == [], "nothing left behind"
