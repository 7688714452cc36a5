"""Real speech for the sample, synthesised offline by espeak-ng and resampled to the project's rate."""

from __future__ import annotations

import tempfile
from math import gcd
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from damc_core.params import VoiceConfig
from damc_core.tools import run_tool

PEAK_LEVEL = 0.7
"""Peak amplitude every synthesised sentence is normalised to, so all voices drive the mouth alike."""


def synthesise(text: str, speaker: VoiceConfig, sample_rate: int) -> np.ndarray:
    """One utterance of `text` as float32 mono at `sample_rate`, peak-normalised to PEAK_LEVEL."""
    if not text.strip():
        raise ValueError("cannot synthesise empty text")
    with tempfile.TemporaryDirectory(prefix="damc-espeak-") as folder:
        text_path, wav_path = Path(folder, "text.txt"), Path(folder, "speech.wav")
        text_path.write_text(text, encoding="utf-8")
        run_tool(
            [
                "espeak-ng", "-v", speaker.voice, "-s", str(speaker.words_per_minute), "-p", str(speaker.pitch),
                "-f", str(text_path), "-w", str(wav_path),
            ]
        )
        audio, rate = soundfile.read(wav_path, dtype="float64", always_2d=True)
    audio = resample(audio.mean(axis=1), rate, sample_rate)
    peak = np.abs(audio).max()
    if peak == 0.0:
        raise ValueError(f"espeak-ng voice {speaker.voice!r} produced silence for {text!r}")
    return (audio * (PEAK_LEVEL / peak)).astype(np.float32)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling between integer rates."""
    divisor = gcd(from_rate, to_rate)
    return resample_poly(audio, to_rate // divisor, from_rate // divisor)


def speak(sentences: tuple[str, ...], speaker: VoiceConfig, pause_s: float, sample_rate: int) -> np.ndarray:
    """The sentences one after another, with `pause_s` of silence before, between and after them."""
    pause = np.zeros(int(round(pause_s * sample_rate)), dtype=np.float32)
    parts = [pause]
    for sentence in sentences:
        parts += [synthesise(sentence, speaker, sample_rate), pause]
    return np.concatenate(parts)
