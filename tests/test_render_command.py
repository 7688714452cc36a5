"""`python -m damc_core.render`: replaying the training frames, driving a tiny trained head with a wav or with text
into an mp4 with its audio, and the errors it reports."""

from __future__ import annotations

import functools
import json
import math
import re
import shutil

import numpy as np
import pytest
import soundfile
import torch
from nerf_fixtures import coarse_config, fusion_config, make_subject, run_folders, speech_like
from scipy.spatial.transform import Rotation

from damc_core.audio.extract import CONTENT_NAME, MEL_NAME
from damc_core.audio.features import load_features
from damc_core.config import load_params
from damc_core.media import AUDIO_SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS, count_video_frames, probe, write_audio
from damc_core.nerf import model as nerf_model
from damc_core.nerf.data import dynamic_features
from damc_core.nerf.occupancy import occupancy_grid
from damc_core.nerf.train import load_inputs, train_coarse
from damc_core.render import driving_features, load_trained_head, main, replay_order, smooth_poses
from damc_core.tools import run_tool
from damc_core.training import setup_distributed

EVAL_GRID = 16
"""Occupancy-grid resolution of the evaluations while training the head here; rendering uses the real grid."""


@pytest.fixture(scope="module", autouse=True)
def single_threaded():
    """One torch thread: the models are tiny, and threads only add synchronisation (very slow on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return make_subject(tmp_path_factory.mktemp("subject"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, subject):
    """A tiny nerf_coarse export of the synthetic subject."""
    inputs = load_inputs(subject.subject_dir, subject.features_dir, subject.encoder_dir)
    folders = run_folders(tmp_path_factory.mktemp("coarse"), "run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nerf_model, "occupancy_grid", functools.partial(occupancy_grid, resolution=EVAL_GRID))
        train_coarse(coarse_config(steps=6), fusion_config(), inputs, folders, setup_distributed())
    return folders.out_dir


@pytest.fixture(scope="module")
def params_path(repo_root):
    return repo_root / "params.yaml"


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
    """One second of speech-like audio."""
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    write_audio(path, speech_like(AUDIO_SAMPLE_RATE, seed=7), AUDIO_SAMPLE_RATE)
    return path


def render(model_dir, params_path, *args):
    return main(["--model", str(model_dir), "--params", str(params_path), *map(str, args)])


# --- replaying the training frames --------------------------------------------------------------------------------


def test_replay_order_goes_back_and_forth():
    assert replay_order(3, 7).tolist() == [0, 1, 2, 1, 0, 1, 2]
    assert replay_order(2, 5).tolist() == [0, 1, 0, 1, 0]
    assert replay_order(4, 3).tolist() == [0, 1, 2]
    assert replay_order(1, 4).tolist() == [0, 0, 0, 0]
    assert replay_order(5, 0).tolist() == []
    with pytest.raises(ValueError, match="no frames"):
        replay_order(0, 3)


def poses(count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    matrices = np.tile(np.eye(4), (count, 1, 1))
    matrices[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.15, (count, 3))).as_matrix()
    matrices[:, :3, 3] = rng.normal(0, 1, (count, 3)) + [0, 0, 18]
    return matrices


def test_smooth_poses_of_window_one_are_the_poses():
    original = poses(6)
    smoothed = smooth_poses(original, 1)
    assert np.array_equal(smoothed, original) and smoothed is not original
    assert np.array_equal(smooth_poses(original[:1], 5), original[:1])


def test_smooth_poses_keep_rotations_orthonormal():
    original = poses(12)
    smoothed = smooth_poses(original, 5)
    rotations = smoothed[:, :3, :3]
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.tile(np.eye(3), (12, 1, 1)), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-9)
    np.testing.assert_allclose(smoothed[:, 3], original[:, 3])
    np.testing.assert_allclose(smoothed[5, :3, 3], original[3:8, :3, 3].mean(axis=0))
    assert np.abs(np.diff(smoothed[:, :3, 3], axis=0)).mean() < np.abs(np.diff(original[:, :3, 3], axis=0)).mean()


# --- driving the head ---------------------------------------------------------------------------------------------


def test_driving_features_of_the_subjects_audio_are_its_training_features(model_dir, subject, params_path):
    """The render command recomputes E_c with the encoder named in the head's meta (here the stand-in) and E_d with
    the head's own encoder: on the training audio that gives the training features."""
    trained = load_trained_head(model_dir)
    audio, _ = soundfile.read(subject.subject_dir / "aud.wav", dtype="float32")
    features = driving_features(trained, audio, load_params(params_path).audio_features)
    content, _ = load_features(subject.features_dir / CONTENT_NAME)
    mel, _ = load_features(subject.features_dir / MEL_NAME)
    assert len(features) == subject.frames
    torch.testing.assert_close(features.content, torch.from_numpy(content).reshape(subject.frames, -1))
    torch.testing.assert_close(features.dynamic, dynamic_features(trained.encoder, mel))


def test_render_writes_an_mp4_with_one_frame_per_640_samples_and_the_audio(model_dir, params_path, speech_wav,
                                                                           tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert render(model_dir, params_path, "--audio", speech_wav, "-o", out) == 0
    frames = math.ceil(AUDIO_SAMPLE_RATE / SAMPLES_PER_FRAME)
    assert f"({frames} frames, 1.00 s)" in capsys.readouterr().out
    info = probe(out)
    assert info.video is not None and info.audio is not None
    assert (info.video.width, info.video.height) == (32, 32) and info.video.fps == VIDEO_FPS
    assert count_video_frames(out) == frames
    assert abs(info.audio.duration_s - 1.0) < 0.1


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not on PATH: --text needs it")
def test_render_speaks_text_with_espeak(model_dir, params_path, tmp_path, capsys):
    assert load_params(params_path).tts.backend == "espeak", "the repository's params.yaml speaks with espeak-ng"
    out = tmp_path / "text.mp4"
    assert render(model_dir, params_path, "--text", "Hello there.", "-o", out) == 0
    reported = re.search(r"\((\d+) frames, ([\d.]+) s\)", capsys.readouterr().out)
    frames = int(reported.group(1))
    assert frames > 10 and count_video_frames(out) == frames
    info = probe(out)
    assert info.audio is not None and abs(info.audio.duration_s - frames / VIDEO_FPS) < 0.1


# --- errors -------------------------------------------------------------------------------------------------------


def test_an_output_that_is_not_mp4_is_a_usage_error(model_dir, params_path, speech_wav, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        render(model_dir, params_path, "--audio", speech_wav, "-o", tmp_path / "out.avi")
    assert exit_info.value.code == 2
    assert "--output must end in .mp4" in capsys.readouterr().err


def test_audio_and_text_together_are_a_usage_error(model_dir, params_path, speech_wav, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        render(model_dir, params_path, "--audio", speech_wav, "--text", "hi", "-o", tmp_path / "out.mp4")
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_moved_subject_folder_is_found_with_subject(model_dir, subject, params_path, speech_wav, tmp_path):
    meta = json.loads((model_dir / "head.json").read_text())
    moved_model = shutil.copytree(model_dir, tmp_path / "model")
    (moved_model / "head.json").write_text(json.dumps(meta | {"subject_dir": str(tmp_path / "gone")}))
    assert render(moved_model, params_path, "--audio", speech_wav, "-o", tmp_path / "a.mp4") == 1
    trained = load_trained_head(moved_model, subject.subject_dir)
    assert trained.train.frame_ids.tolist() == subject.train_ids


def _model_with_content_dim(model_dir, tmp_path, dim):
    changed = shutil.copytree(model_dir, tmp_path / "model")
    meta = json.loads((changed / "head.json").read_text())
    (changed / "head.json").write_text(json.dumps(meta | {"content_features": meta["content_features"] | {"dim": dim}}))
    return changed


def _truncated_mp4(tmp_path, speech_wav):
    complete = tmp_path / "complete.mp4"
    run_tool(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(speech_wav), "-c:a", "aac", "-movflags",
              "+faststart", str(complete)])
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(complete.read_bytes()[: complete.stat().st_size // 3])
    return truncated


def _silent_wav(tmp_path, speech_wav):
    path = tmp_path / "silent.wav"
    write_audio(path, np.zeros(AUDIO_SAMPLE_RATE, np.float32), AUDIO_SAMPLE_RATE)
    return path


def _text_file(tmp_path, speech_wav):
    path = tmp_path / "notes.wav"
    path.write_text("not audio")
    return path


REFUSALS = {
    # name: (arguments as a function of (model_dir, subject, tmp_path, speech_wav), expected message (regex))
    "missing model folder": (lambda m, s, t, w: ["--model", t / "nowhere", "--audio", w],
                             r"nowhere/head\.pt is missing: --model must be a nerf_coarse or nerf_fine output folder"),
    "missing audio file": (lambda m, s, t, w: ["--audio", t / "absent.wav"], r"absent\.wav does not exist"),
    "silent audio, named as the input": (lambda m, s, t, w: ["--audio", _silent_wav(t, w)],
                                         r"silent\.wav: the audio is silent"),
    "not a media file": (lambda m, s, t, w: ["--audio", _text_file(t, w)],
                         r"notes\.wav is not a media file ffmpeg can read"),
    "truncated file": (lambda m, s, t, w: ["--audio", _truncated_mp4(t, w)],
                       r"cut\.mp4 (is truncated or damaged: it states 1\.\d\d s of audio but only 0\.\d\d s|"
                       r"\(a damaged or truncated file\?\))"),
    "Chinese text as English": (lambda m, s, t, w: ["--text", "你好，欢迎收看新闻。", "--language", "en"],
                                r"is written in Chinese characters but its language is 'en'.*give the language zh"),
    "another subject": (lambda m, s, t, w: ["--audio", w, "--subject", make_subject(t / "other", frames=10).subject_dir],
                        r"other/subject does not hold the training frames .* pass the right face_prep folder with "
                        r"--subject"),
    "content encoder of another size": (lambda m, s, t, w: ["--model", _model_with_content_dim(m, t, 40), "--audio", w],
                                        r"gives 32 features per step but the head was trained on 40"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_a_refusal_is_one_line_and_leaves_the_existing_output_as_it_was(case, model_dir, subject, params_path,
                                                                         speech_wav, tmp_path, capsys):
    arguments, expected = REFUSALS[case]
    args = [str(arg) for arg in arguments(model_dir, subject, tmp_path, speech_wav)]
    if "--model" not in args:
        args = ["--model", str(model_dir), *args]
    output = tmp_path / "existing.mp4"
    output.write_bytes(b"an earlier render")
    capsys.readouterr()
    assert main(["--params", str(params_path), *args, "-o", str(output)]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("render: error: "), lines  # progress bars aside
    assert re.search(expected, lines[0]), lines[0]
    assert output.read_bytes() == b"an earlier render"
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".partial")]


def test_an_existing_folder_as_output_is_refused_before_rendering(model_dir, params_path, speech_wav, tmp_path,
                                                                  capsys, monkeypatch):
    monkeypatch.setattr("damc_core.render.load_trained_head", lambda *args: pytest.fail("rendering began"))
    (tmp_path / "renders.mp4").mkdir()
    assert render(model_dir, params_path, "--audio", speech_wav, "-o", tmp_path / "renders.mp4") == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"render: error: --output {tmp_path / 'renders.mp4'} is a folder; give the path of the mp4 file to write")
    assert list((tmp_path / "renders.mp4").iterdir()) == []
