"""Sample generation: frame/audio alignment, ground truth consistency, determinism, the clip-set manifest."""

from __future__ import annotations

import numpy as np
import pytest

from damc_core import clipset
from damc_core.config import load_params
from damc_core.sample.generate import SAMPLES_PER_FRAME, manifest_row, pad_to_whole_frames, perform
from damc_core.sample.speech import SILENCE_DB, speak, synthesise, trim_silence


@pytest.fixture(scope="module")
def sample_config(repo_root):
    return load_params(repo_root / "params.yaml").sample


@pytest.fixture(scope="module")
def performance(sample_config):
    audio = speak(("Hello world, open wide.",), sample_config.subject.speaker, 0.3, 16_000)
    return perform(
        audio, sample_config.subject.look, 64, sample_config.articulation, sample_config.blink,
        np.random.default_rng(0), "test",
    )


def test_padding_fills_whole_aac_frames():
    for length in (1, 640, 5119, 5120, 5121):
        padded = pad_to_whole_frames(np.ones(length))
        assert len(padded) % (SAMPLES_PER_FRAME * 8) == 0 and len(padded) >= length
        assert (len(padded) // SAMPLES_PER_FRAME) * 640 % 1024 == 0


def test_performance_is_aligned_and_consistent(performance):
    n_frames = len(performance.frames)
    assert performance.frames.shape == (n_frames, 64, 64, 3)
    assert len(performance.audio) == n_frames * SAMPLES_PER_FRAME
    assert performance.landmarks.shape == (n_frames, 68, 2)
    assert len(performance.signals) == n_frames
    aperture = performance.signals["aperture"].to_numpy()
    opening = performance.signals["mouth_opening_px"].to_numpy()
    # loud speech opens the jaw fully (up to the 3-frame smoothing of the few frames above the loud percentile)
    assert aperture.max() == pytest.approx(1.0, abs=0.01) and aperture[0] == 0.0
    assert np.corrcoef(aperture, opening)[0, 1] > 0.99, "the rendered lips must follow the driving aperture"


def test_the_speaking_mouth_changes_the_pixels_around_the_lips(performance):
    aperture = performance.signals["aperture"].to_numpy()
    closed, wide = int(np.argmin(aperture)), int(np.argmax(aperture))
    mouth = performance.landmarks[closed, 48:68]
    x0, y0 = np.floor(mouth.min(axis=0)).astype(int)
    x1, y1 = np.ceil(mouth.max(axis=0)).astype(int) + 3
    difference = np.abs(performance.frames[wide].astype(int) - performance.frames[closed].astype(int))
    assert difference[y0:y1, x0:x1].mean() > 4 * difference.mean()


def test_same_seed_same_performance(sample_config, performance):
    audio = performance.audio
    again = perform(
        audio, sample_config.subject.look, 64, sample_config.articulation, sample_config.blink,
        np.random.default_rng(0), "test",
    )
    np.testing.assert_array_equal(again.frames, performance.frames)
    np.testing.assert_array_equal(again.landmarks, performance.landmarks)


def test_manifest_round_trip(tmp_path, performance):
    row = manifest_row("clip_a", performance)
    assert row["head_motion"] < 1e-5, "the synthetic head is still (up to the float rounding of the jaw's warp)"
    assert 0.0 < row["speech_ratio"] < 1.0
    assert row["face_size_px"] > 0
    clipset.clip_path(tmp_path, "clip_a").parent.mkdir(parents=True)
    clipset.clip_path(tmp_path, "clip_a").write_bytes(b"")
    clipset.write_manifest(tmp_path, [row, {**row, "clip_id": "clip_b", "kept": False, "reason": "no face"}])
    kept = clipset.read_manifest(tmp_path)
    assert kept["clip_id"].tolist() == ["clip_a"]
    assert len(clipset.read_manifest(tmp_path, kept_only=False)) == 2


def test_manifest_errors_name_the_problem(tmp_path, performance):
    with pytest.raises(clipset.ClipSetError, match="no manifest"):
        clipset.read_manifest(tmp_path)
    clipset.write_manifest(tmp_path, [manifest_row("ghost", performance)])
    with pytest.raises(clipset.ClipSetError, match=r"videos missing for clips \['ghost'\]"):
        clipset.read_manifest(tmp_path)
    with pytest.raises(clipset.ClipSetError, match="lack values"):
        clipset.write_manifest(tmp_path, [{"clip_id": "x"}])


def test_speech_rejects_empty_text(sample_config):
    with pytest.raises(ValueError, match="no speakable characters"):
        speak(("  ",), sample_config.subject.speaker, 0.1, 16_000)


def test_trim_silence_keeps_exactly_the_span_above_the_threshold():
    quiet = 10.0 ** (SILENCE_DB / 20.0)
    audio = np.array([0.0, 0.5 * quiet, -2.0 * quiet, 0.0, 1.0, 0.0, 0.9 * quiet, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(trim_silence(audio), audio[2:5])


def test_pauses_between_sentences_are_the_configured_ones(sample_config):
    speaker, rate, pause_s = sample_config.subject.speaker, 16_000, 0.25
    first, second = (synthesise(sentence, speaker, rate) for sentence in ("Hello world.", "Open wide."))
    audio = speak(("Hello world.", "Open wide."), speaker, pause_s, rate)
    pause = int(round(pause_s * rate))
    assert len(audio) == 3 * pause + len(first) + len(second)
    assert len(trim_silence(audio)) == len(audio) - 2 * pause, "exactly pause_s of silence before and after"
    np.testing.assert_array_equal(audio[pause + len(first):2 * pause + len(first)], 0.0)
