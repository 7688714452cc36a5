"""Text to speech: text checks, offline English and Mandarin clips, the SpeechT5 path with tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from damc_core.audio.features import load_features
from damc_core.audio.mel import frames_for_samples
from damc_core.media import read_audio
from damc_core.params import TTSConfig
from damc_core.tts.espeak import espeak_synthesise
from damc_core.tts.speecht5 import SpeechT5, TTSModelUnavailable, load_speecht5, speecht5_synthesise
from damc_core.tts.synthesis import speak, write_clip
from damc_core.tts.text import TextInputError, check_language, check_speakable, detect_language, numbered_pinyin

CONFIG = TTSConfig(
    backend="espeak", texts=(), espeak_voice="en-us", words_per_minute=160, pitch=50,
    acoustic_model="microsoft/speecht5_tts", vocoder="microsoft/speecht5_hifigan", speaker_embedding="absent.npy",
)


def test_text_helpers():
    assert detect_language("你好 world") == "zh" and detect_language("Hello, world") == "en"
    assert numbered_pinyin("你好，世界") == "ni3 hao3 ， shi4 jie4"
    assert check_speakable("  Hi!  ") == "Hi!"
    check_language("你好", "zh")
    check_language("Hello, 42", "en")
    with pytest.raises(TextInputError, match="written in Chinese characters but its language is 'en'"):
        check_language("你好，欢迎收看新闻。", "en")
    for text in ("", "   ", "?!...", "🙂"):
        with pytest.raises(TextInputError, match="no speakable characters"):
            check_speakable(text)


@pytest.mark.parametrize(
    ("language", "text"),
    [("en", "The weather will be sunny tomorrow."), ("zh", "今天天气很好，我们去公园散步吧。")],
)
def test_espeak_clips_in_english_and_mandarin(tmp_path, language, text):
    spoken = speak(text, language, CONFIG, speecht5=None)
    assert spoken.backend == "espeak-ng" and spoken.mel_source == "waveform"
    assert 1.0 < len(spoken.waveform) / 16_000 < 10.0 and np.abs(spoken.waveform).max() > 0.05
    clip = write_clip(spoken, text, language, tmp_path / "clip")
    n_frames = frames_for_samples(len(spoken.waveform))
    stored = read_audio(tmp_path / "clip" / "speech.wav")
    np.testing.assert_allclose(stored, spoken.waveform, atol=1e-4)
    mel, meta = load_features(tmp_path / "clip" / "mel.npy", frames=n_frames, audio=stored)
    assert mel.shape == (n_frames, 80, 16) and meta.language == language
    assert clip == json.loads((tmp_path / "clip" / "clip.json").read_text(encoding="utf-8"))
    assert clip["frames"] == n_frames and clip["text"] == text


def test_espeak_speech_on_a_fresh_machine_equals_later_runs(tmp_path, monkeypatch):
    """A machine where PulseAudio's client never ran (no ~/.config/pulse, no pulse-* runtime folder in TMPDIR): the
    first synthesis, which makes libpulse create its runtime folder, must sound exactly like the second."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "PULSE_RUNTIME_PATH", "PULSE_SERVER"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HOME", "TMPDIR"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    text = "Six thick thistle sticks, she said softly."  # fricatives: espeak-ng's noise source
    first, second = (espeak_synthesise(text, "en-us+f3", 150, 55, 16_000) for _ in range(2))
    np.testing.assert_array_equal(first, second)


def tiny_speecht5() -> SpeechT5:
    from transformers import SpeechT5Config, SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(0)
    config = SpeechT5Config(
        vocab_size=40, hidden_size=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, speech_decoder_prenet_units=32,
        speech_decoder_postnet_units=32, speech_decoder_postnet_layers=2, speaker_embedding_dim=16,
    )
    vocoder = SpeechT5HifiGanConfig(
        upsample_initial_channel=16, upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8]
    )

    def tokenize(text: str) -> torch.Tensor:
        return torch.tensor([[2 + (ord(character) % 36) for character in text.lower()] + [1]])

    return SpeechT5(tokenize, SpeechT5ForTextToSpeech(config).eval(), SpeechT5HifiGan(vocoder).eval(),
                    torch.randn(1, 16), "tiny random SpeechT5")


def test_speecht5_path_gives_waveform_and_converted_mel():
    waveform, mel = speecht5_synthesise(tiny_speecht5(), "hello there", max_length_ratio=2.0)
    assert mel.shape[0] == 80 and mel.min() >= -4.0 and mel.max() <= 4.0
    hop = 256
    acoustic_frames = len(waveform) // hop
    assert len(waveform) == acoustic_frames * hop and acoustic_frames >= 1
    assert mel.shape[1] == 1 + ((acoustic_frames - 1) * hop) // 200


def test_speecht5_without_its_files_says_what_is_missing(tmp_path):
    with pytest.raises(TTSModelUnavailable, match="speaker embedding"):
        load_speecht5("microsoft/speecht5_tts", "microsoft/speecht5_hifigan", str(tmp_path / "absent.npy"))
