"""Real speech for the sample, synthesised offline by espeak-ng and peak-normalised."""

from __future__ import annotations

import numpy as np

from damc_core.params import VoiceConfig
from damc_core.tts.espeak import espeak_synthesise

PEAK_LEVEL = 0.7
"""Peak amplitude every synthesised sentence is normalised to, so all voices drive the mouth alike."""


def synthesise(text: str, speaker: VoiceConfig, sample_rate: int) -> np.ndarray:
    """One utterance of `text` as float32 mono at `sample_rate`, peak-normalised to PEAK_LEVEL."""
    audio = espeak_synthesise(text, speaker.voice, speaker.words_per_minute, speaker.pitch, sample_rate)
    return (audio * (PEAK_LEVEL / np.abs(audio).max())).astype(np.float32)


def speak(sentences: tuple[str, ...], speaker: VoiceConfig, pause_s: float, sample_rate: int) -> np.ndarray:
    """The sentences one after another, with `pause_s` of silence before, between and after them."""
    pause = np.zeros(int(round(pause_s * sample_rate)), dtype=np.float32)
    parts = [pause]
    for sentence in sentences:
        parts += [synthesise(sentence, speaker, sample_rate), pause]
    return np.concatenate(parts)
