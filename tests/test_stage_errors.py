"""Bad input to the stage scripts: one line on stderr, exit status 1, and nothing outside the stage's output changed."""

from __future__ import annotations

import hashlib
import re
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from damc_core.media import AUDIO_SAMPLE_RATE, write_audio
from damc_core.staging import OUTPUT_MARKER
from damc_core.tools import run_tool

FFMPEG = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
SECONDS = 3


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, repo_root) -> dict[str, Path]:
    """Broken and unusable inputs, made here: each name -> a file."""
    folder = tmp_path_factory.mktemp("inputs")
    testsrc = ["-f", "lavfi", "-i", f"testsrc=size=256x256:rate=25:duration={SECONDS}"]
    tone = ["-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=16000:duration={SECONDS}"]
    silence = ["-f", "lavfi", "-i", f"anullsrc=sample_rate=16000:channel_layout=mono:duration={SECONDS}"]
    encode = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"]
    files = {name: folder / f"{name}.mp4" for name in ("video_only", "silent", "complete")}
    run_tool([*FFMPEG, *testsrc, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(files["video_only"])])
    run_tool([*FFMPEG, *testsrc, *silence, *encode, str(files["silent"])])
    run_tool([*FFMPEG, *testsrc, *tone, *encode, "-movflags", "+faststart", str(files["complete"])])
    complete = files.pop("complete").read_bytes()
    files["truncated"] = folder / "truncated.mp4"
    files["truncated"].write_bytes(complete[: len(complete) // 4])  # moov first (faststart): states all 3 s
    files["empty"] = folder / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["text"] = folder / "notes.mp4"
    files["text"].write_text("not a video\n")
    files["silent_wav"] = folder / "silent.wav"
    write_audio(files["silent_wav"], np.zeros(AUDIO_SAMPLE_RATE, np.float32), AUDIO_SAMPLE_RATE)
    files["missing"] = folder / "absent.mp4"
    files["params"] = repo_root / "params.yaml"
    return files


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under `root` -> a digest of its bytes (folders: "dir")."""
    return {str(path.relative_to(root)): "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))}


def run_stage(script: Path, args: list[str], capsys) -> tuple[int, list[str]]:
    """Run a stage script in this process, as `python <script> <args>` would: (exit status, lines on stderr)."""
    handler = signal.getsignal(signal.SIGTERM)
    argv = sys.argv
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code if isinstance(exit_info.code, int) else 1
    finally:
        sys.argv = argv
        signal.signal(signal.SIGTERM, handler)
    return status, capsys.readouterr().err.splitlines()


def params_with(repo_root: Path, path: Path, edit) -> Path:
    """A copy of params.yaml at `path` changed by `edit` (a function of the parsed YAML, or raw text)."""
    if isinstance(edit, str):
        path.write_text(edit)
        return path
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


def _set(section: str, key: str, value):
    def edit(raw: dict) -> None:
        raw[section][key] = value
    return edit


def _drop(section: str, key: str):
    def edit(raw: dict) -> None:
        del raw[section][key]
    return edit


MEDIA_CASES = [
    ("missing", r"absent\.mp4 does not exist"),
    ("empty", r"empty\.mp4 is empty \(0 bytes\)"),
    ("text", r"notes\.mp4 is not a media file ffmpeg can read"),
    ("video_only", r"video_only\.mp4 has no audio track"),
    ("silent", r"silent\.mp4: the audio is silent"),
    ("truncated", rf"truncated\.mp4 (is truncated or damaged: it states {SECONDS}\.00 s of \w+ but only 0\.\d\d s|"
                  rf"\(a damaged or truncated file\?\): .*partial file)"),
]

PARAMS_CASES = [
    ("unknown key", _set("face_prep", "val_fracton", 0.1), r"unknown key\(s\) face_prep\.val_fracton"),
    ("wrong type", _set("face_prep", "min_frames", "many"), r"key 'face_prep\.min_frames': expected int, got str"),
    ("bad choice", _set("face_prep", "landmarks", "dlob"), r"key 'face_prep\.landmarks': must be one of"),
    ("missing key", _drop("face_prep", "jpeg_quality"), r"missing key\(s\) face_prep\.jpeg_quality"),
    ("not YAML", "face_prep: [unclosed\n", r"not valid YAML"),
    ("fraction above 1", _set("face_prep", "val_fraction", 1.5),
     r"key 'face_prep\.val_fraction': must be in \(0, 0\.5\], got 1\.5"),
    ("negative count", _set("face_prep", "min_frames", -5), r"key 'face_prep\.min_frames': must be >= 2, got -5"),
]


def face_prep_args(params: Path, video: Path, out: Path) -> list[str]:
    return ["--params", str(params), "--video", str(video), "--out-dir", str(out / "faces" / "me"),
            "--report", str(out / "report.json"), "--preview", str(out / "preview.png")]


def audio_features_args(params: Path, media: Path, out: Path) -> list[str]:
    return ["--params", str(params), "--media", str(media), "--out-dir", str(out / "features"),
            "--report", str(out / "report.json")]


@pytest.mark.parametrize(("stage", "arguments"), [("face_prep", face_prep_args),
                                                  ("audio_features", audio_features_args)])
@pytest.mark.parametrize(("name", "expected"), MEDIA_CASES, ids=[case[0] for case in MEDIA_CASES])
def test_bad_media_is_refused_in_one_line(stage, arguments, name, expected, inputs, repo_root, tmp_path, capsys):
    media = inputs["silent_wav"] if stage == "audio_features" and name == "silent" else inputs[name]
    if name == "silent" and stage == "audio_features":
        expected = r"silent\.wav: the audio is silent"
    (tmp_path / "keep.txt").write_text("a file of the user's")
    before = tree_digest(tmp_path)
    status, lines = run_stage(repo_root / "stages" / f"{stage}.py", arguments(inputs["params"], media, tmp_path),
                              capsys)
    assert status == 1
    assert len(lines) == 1 and lines[0].startswith(f"{stage}: error: "), lines
    assert re.search(expected, lines[0]), lines[0]
    assert tree_digest(tmp_path) == before, "nothing written, nothing removed"


@pytest.mark.parametrize(("name", "edit", "expected"), PARAMS_CASES, ids=[case[0] for case in PARAMS_CASES])
def test_params_errors_name_the_file_and_key_in_one_line(name, edit, expected, inputs, repo_root, tmp_path, capsys):
    params = params_with(repo_root, tmp_path / "params.yaml", edit)
    before = tree_digest(tmp_path)
    status, lines = run_stage(repo_root / "stages" / "face_prep.py",
                              face_prep_args(params, inputs["truncated"], tmp_path), capsys)
    assert status == 1
    assert len(lines) == 1 and lines[0].startswith(f"face_prep: error: {params}: "), lines
    assert re.search(expected, lines[0]), lines[0]
    assert tree_digest(tmp_path) == before


def test_face_prep_never_replaces_a_folder_it_did_not_write(inputs, repo_root, tmp_path, capsys):
    """`--out-dir data/faces` instead of `data/faces/me` must not wipe the other subjects."""
    faces = tmp_path / "faces"
    (faces / "other").mkdir(parents=True)
    (faces / "other" / OUTPUT_MARKER).write_text("face_prep\n")
    (faces / "other" / "meta.json").write_text("{}")
    before = tree_digest(tmp_path)
    args = face_prep_args(inputs["params"], inputs["silent"], tmp_path)
    args[args.index("--out-dir") + 1] = str(faces)
    status, lines = run_stage(repo_root / "stages" / "face_prep.py", args, capsys)
    assert status == 1 and len(lines) == 1
    assert f"face_prep refuses to replace {faces}: it holds files face_prep did not write" in lines[0]
    assert tree_digest(tmp_path) == before


def test_face_prep_into_the_current_folder_refuses_and_keeps_its_files(inputs, repo_root, tmp_path):
    """The real command line: `python stages/face_prep.py ... --out-dir .` in a folder holding a file."""
    (tmp_path / "thesis.tex").write_text("years of work")
    command = [sys.executable, str(repo_root / "stages" / "face_prep.py"), "--params", str(inputs["params"]),
               "--video", str(inputs["silent"]), "--out-dir", ".", "--report", "r.json", "--preview", "p.png"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"face_prep: error: face_prep refuses to write its output folder to . ({tmp_path}): that is the current "
        f"folder, one above it or the home folder, and replacing it would delete everything in it; give a folder "
        f"of its own, e.g. subject"
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["thesis.tex"]
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
