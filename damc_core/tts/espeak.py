"""espeak-ng speech synthesis (offline): English directly, Mandarin through tone-numbered pinyin."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile

from damc_core.media import resample
from damc_core.tools import run_tool
from damc_core.tts.text import check_speakable, numbered_pinyin

MANDARIN_VOICE = "cmn-latn-pinyin"
"""espeak-ng's Mandarin voice that reads numbered pinyin (its plain 'cmn' voice misreads many characters)."""


def no_audio_device_environment(folder: Path) -> dict[str, str]:
    """Environment under which espeak-ng's output depends on nothing but its input.

    espeak-ng 1.51 opens an audio device (PulseAudio through libpcaudio) even when it writes a file, and draws the
    noise of fricatives and aspiration from libc's unseeded rand(). On a machine where PulseAudio's client never ran,
    libpulse creates its runtime folder under a random name (/tmp/pulse-<12 characters from rand()>), shifting
    espeak-ng's noise by 12 draws: the first synthesis on a fresh machine differed from every later one. Pointing
    libpulse at a private runtime folder and a server socket that does not exist makes it fail at once without
    drawing, wherever it runs and whatever ran before.
    """
    return {"PULSE_RUNTIME_PATH": str(folder), "PULSE_SERVER": f"unix:{folder / 'no-audio-server'}"}


def espeak_synthesise(text: str, voice: str, words_per_minute: int, pitch: int, sample_rate: int) -> np.ndarray:
    """Speak `text` with an espeak-ng voice; float32 mono at `sample_rate`."""
    text = check_speakable(text)
    with tempfile.TemporaryDirectory(prefix="damc-espeak-") as folder:
        text_path, wav_path = Path(folder, "text.txt"), Path(folder, "speech.wav")
        text_path.write_text(text, encoding="utf-8")
        run_tool(
            [
                "espeak-ng", "-v", voice, "-s", str(words_per_minute), "-p", str(pitch),
                "-f", str(text_path), "-w", str(wav_path),
            ],
            env=no_audio_device_environment(Path(folder)),
        )
        audio, rate = soundfile.read(wav_path, dtype="float32", always_2d=True)
    if not np.any(audio):
        raise ValueError(f"espeak-ng voice {voice!r} produced silence for {text!r}")
    return resample(audio.mean(axis=1), rate, sample_rate).astype(np.float32)


def speak_text(text: str, language: str, english_voice: str, words_per_minute: int, pitch: int,
               sample_rate: int) -> np.ndarray:
    """English with `english_voice`; Mandarin converted to numbered pinyin and read by MANDARIN_VOICE."""
    if language == "zh":
        return espeak_synthesise(numbered_pinyin(text), MANDARIN_VOICE, words_per_minute, pitch, sample_rate)
    return espeak_synthesise(text, english_voice, words_per_minute, pitch, sample_rate)
