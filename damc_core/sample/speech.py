"""Real speech for the sample, synthesised offline by espeak-ng and peak-normalised."""

from __future__ import annotations

import numpy as np

from damc_core.params import VoiceConfig
from damc_core.tts.espeak import espeak_synthesise

PEAK_LEVEL = 0.7
"""Peak amplitude every synthesised sentence is normalised to, so all voices drive the mouth alike."""
SILENCE_DB = -50.0
"""Samples quieter than this, relative to the sentence's peak, are silence: espeak-ng ends every sentence with
~0.3 s of it, which trim_silence removes so that the pauses are the configured ones."""


def trim_silence(audio: np.ndarray) -> np.ndarray:
    """`audio` without its leading and trailing samples quieter than SILENCE_DB below its peak."""
    loud = np.flatnonzero(np.abs(audio) > np.abs(audio).max() * 10.0 ** (SILENCE_DB / 20.0))
    return audio[loud[0]:loud[-1] + 1]


def synthesise(text: str, speaker: VoiceConfig, sample_rate: int) -> np.ndarray:
    """One utterance of `text` as float32 mono at `sample_rate`, without leading or trailing silence, peak-normalised
    to PEAK_LEVEL."""
    audio = trim_silence(espeak_synthesise(text, speaker.voice, speaker.words_per_minute, speaker.pitch, sample_rate))
    return (audio * (PEAK_LEVEL / np.abs(audio).max())).astype(np.float32)


def speak(sentences: tuple[str, ...], speaker: VoiceConfig, pause_s: float, sample_rate: int) -> np.ndarray:
    """The sentences one after another, with exactly `pause_s` of silence before, between and after them."""
    pause = np.zeros(int(round(pause_s * sample_rate)), dtype=np.float32)
    parts = [pause]
    for sentence in sentences:
        parts += [synthesise(sentence, speaker, sample_rate), pause]
    return np.concatenate(parts)
