"""One TTS clip per text: the waveform at 16 kHz (for E_c and muxing) and mel windows per video frame (for E_d)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from damc_core.audio.extract import MEL_WINDOW, save_mel_windows
from damc_core.audio.features import audio_sha256
from damc_core.audio.mel import frames_for_samples, log_mel, mel_windows
from damc_core.media import AUDIO_SAMPLE_RATE, read_audio, write_audio
from damc_core.params import TTSConfig
from damc_core.tts.espeak import speak_text
from damc_core.tts.speecht5 import SpeechT5, speecht5_synthesise
from damc_core.tts.text import check_language

SPEECH_NAME = "speech.wav"
MEL_NAME = "mel.npy"
CLIP_NAME = "clip.json"


@dataclass(frozen=True)
class SpokenText:
    """A synthesised utterance."""

    waveform: np.ndarray
    """float32 mono at 16 kHz."""
    mel: np.ndarray
    """(80, mel frames) log-mel in the Wav2Lip convention."""
    backend: str
    """What spoke it."""
    mel_source: str
    """'acoustic model' (SpeechT5's own mel, converted) or 'waveform' (computed from the audio)."""


def speak(text: str, language: str, config: TTSConfig, speecht5: SpeechT5 | None) -> SpokenText:
    """Synthesise `text`: SpeechT5 for English when configured, espeak-ng otherwise."""
    check_language(text, language)
    if language == "en" and config.backend == "speecht5":
        if speecht5 is None:
            raise ValueError("tts.backend is 'speecht5' but no SpeechT5 model was loaded")
        waveform, mel = speecht5_synthesise(speecht5, text)
        return SpokenText(waveform.astype(np.float32), mel, speecht5.name, "acoustic model")
    waveform = speak_text(
        text, language, config.espeak_voice, config.words_per_minute, config.pitch, AUDIO_SAMPLE_RATE
    )
    return SpokenText(waveform, log_mel(waveform), "espeak-ng", "waveform")


def write_clip(spoken: SpokenText, text: str, language: str, out_dir: Path) -> dict:
    """speech.wav, mel.npy (+ meta, one window per video frame) and clip.json in `out_dir`; returns clip.json.
    The mel's audio fingerprint is that of the samples as stored in speech.wav (16-bit)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n_frames = frames_for_samples(len(spoken.waveform))
    write_audio(out_dir / SPEECH_NAME, spoken.waveform, AUDIO_SAMPLE_RATE)
    stored = read_audio(out_dir / SPEECH_NAME)
    save_mel_windows(
        out_dir / MEL_NAME, mel_windows(spoken.mel, n_frames, window=MEL_WINDOW),
        f"{spoken.backend} ({spoken.mel_source} mel, Wav2Lip convention)", language, audio_sha256(stored),
    )
    clip = {
        "text": text, "language": language, "backend": spoken.backend, "mel_source": spoken.mel_source,
        "frames": n_frames, "duration_s": len(spoken.waveform) / AUDIO_SAMPLE_RATE,
    }
    (out_dir / CLIP_NAME).write_text(json.dumps(clip, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return clip
