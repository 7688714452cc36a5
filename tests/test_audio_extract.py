"""Both audio features from real files of every format: exact row counts, meta, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from damc_core.audio.content import build_stand_in
from damc_core.audio.extract import extract_features
from damc_core.audio.levels import AudioInputError, check_speech
from damc_core.audio.features import load_features
from damc_core.audio.mel import frames_for_samples
from damc_core.media import read_audio
from damc_core.params import AudioFeaturesConfig

ENGLISH = AudioFeaturesConfig(language="en", content_encoder="stand-in", content_output="logits", chunk_s=20.0,
                              context_s=1.0)
MANDARIN = AudioFeaturesConfig(language="zh", content_encoder="stand-in", content_output="logits", chunk_s=20.0,
                               context_s=1.0)


def test_silence_is_refused_and_clipping_warned():
    with pytest.raises(AudioInputError, match="silent"):
        check_speech(np.zeros(16_000, dtype=np.float32), "quiet.wav")
    clipped = np.clip(np.sin(np.linspace(0, 400, 16_000)) * 3, -1, 1).astype(np.float32)
    assert any("clipped" in warning for warning in check_speech(clipped, "loud.wav"))
    assert check_speech(clipped * 0.5, "fine.wav") == []


@pytest.mark.parametrize(
    "name", ["en_RD_Radio31_000.wav", "en_synctalk_test.wav", "en_short.mp3", "en_acknowledgement.m4a",
             "zh_bus_chinese.wav"],
)
def test_real_audio_of_every_format_gives_one_row_per_frame(shared_dir, tmp_path, name):
    path = shared_dir / "data" / "audio" / name
    audio = read_audio(path)
    n_frames = frames_for_samples(len(audio))
    assert (n_frames - 1) * 640 < len(audio) <= n_frames * 640
    config = MANDARIN if name.startswith("zh") else ENGLISH
    summary = extract_features(audio, n_frames, build_stand_in(config.language), config, tmp_path, source=name)
    content, content_meta = load_features(tmp_path / "content.npy", frames=n_frames, audio=audio)
    mel, mel_meta = load_features(tmp_path / "mel.npy", frames=n_frames, audio=audio)
    assert content.shape == (n_frames, 2, content_meta.dim) and mel.shape == (n_frames, 80, 16)
    assert content_meta.stand_in and not mel_meta.stand_in
    assert content_meta.representation == ("pinyin_posteriors" if name.startswith("zh") else "ctc_logits")
    assert summary.content == content_meta
    assert mel.min() >= -4.0 and mel.max() <= 4.0 and mel.std() > 0.5
