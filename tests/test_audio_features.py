"""Feature files with meta: round trip, and every way they can fail to match."""

from __future__ import annotations

import numpy as np
import pytest

from damc_core.audio.features import (
    FeatureMeta,
    FeatureMismatchError,
    audio_sha256,
    load_features,
    meta_path,
    save_features,
)

AUDIO = np.linspace(-0.5, 0.5, 16_000, dtype=np.float32)


def meta_for(array: np.ndarray) -> FeatureMeta:
    return FeatureMeta(
        kind="content", encoder="test", representation="ctc_logits", shape=array.shape, dim=array.shape[2],
        window=2, rate_hz=50.0, fps=25, sample_rate=16_000, language="en", audio_sha256=audio_sha256(AUDIO),
        stand_in=True, units=tuple(f"u{i}" for i in range(array.shape[2])),
    )


def test_round_trip_keeps_array_and_meta(tmp_path):
    array = np.random.default_rng(0).random((25, 2, 4)).astype(np.float32)
    path = tmp_path / "content.npy"
    save_features(path, array, meta_for(array))
    assert meta_path(path).name == "content.meta.json"
    loaded, meta = load_features(path, frames=25, audio=AUDIO)
    np.testing.assert_array_equal(loaded, array)
    assert meta == meta_for(array) and meta.frames == 25 and meta.dim == 4


def test_wrong_frame_count_is_reported_in_frames_and_seconds(tmp_path):
    array = np.zeros((25, 2, 4), dtype=np.float32)
    save_features(tmp_path / "content.npy", array, meta_for(array))
    with pytest.raises(FeatureMismatchError, match=r"25 rows of content features for a video of 30 frames"):
        load_features(tmp_path / "content.npy", frames=30)


def test_features_of_other_audio_are_refused(tmp_path):
    array = np.zeros((25, 2, 4), dtype=np.float32)
    save_features(tmp_path / "content.npy", array, meta_for(array))
    with pytest.raises(FeatureMismatchError, match="different audio"):
        load_features(tmp_path / "content.npy", audio=AUDIO[::-1].copy())


def test_missing_meta_and_tampered_arrays_are_refused(tmp_path):
    array = np.zeros((25, 2, 4), dtype=np.float32)
    np.save(tmp_path / "bare.npy", array)
    with pytest.raises(FeatureMismatchError, match="no meta file"):
        load_features(tmp_path / "bare.npy")
    save_features(tmp_path / "content.npy", array, meta_for(array))
    np.save(tmp_path / "content.npy", np.zeros((24, 2, 4), dtype=np.float32))
    with pytest.raises(FeatureMismatchError, match="differs from its meta file"):
        load_features(tmp_path / "content.npy")
    with pytest.raises(FeatureMismatchError, match="differs from meta shape"):
        save_features(tmp_path / "other.npy", array[:3], meta_for(array))
