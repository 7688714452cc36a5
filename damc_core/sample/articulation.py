"""The sample's articulation rule: per-frame mouth aperture, vowel shape and blinks, derived from speech and a seed.

The rule, evaluated on a window of `window_s` seconds centred on each video frame's timestamp t / fps:

- level = 20 log10(RMS) in dB; loud = the `loud_percentile` of the level over all frames;
  aperture = clip(1 + (level - loud) / dynamic_range_db, 0, 1). Loud speech opens the jaw fully, silence closes it.
- spread (the vowel's lip shape) comes from the spectral centroid c of the window between 150 Hz and 4 kHz:
  spread = -1 (rounded, 'oo') at c <= rounded_centroid_hz, +1 (spread, 'ee') at c >= spread_centroid_hz, linear in
  between, and 0 wherever the mouth is closed.
- both are smoothed by a centred moving average of `smoothing_frames` frames (centred, so the mouth never lags).

Blinks follow a seeded schedule: intervals uniform in [min_interval_s, max_interval_s], each blink the closure
`profile` over consecutive frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from damc_core.params import ArticulationConfig, BlinkConfig

CENTROID_BAND_HZ = (150.0, 4000.0)


@dataclass(frozen=True)
class Articulation:
    """Per-frame mouth signals of one video."""

    aperture: np.ndarray
    """Jaw opening in [0, 1], shape (frames,)."""
    spread: np.ndarray
    """Lip shape in [-1, 1] (rounded .. spread), shape (frames,)."""


def frame_windows(audio: np.ndarray, n_frames: int, sample_rate: int, fps: float, window_s: float) -> np.ndarray:
    """Windows of `window_s` seconds centred on each frame's timestamp t / fps, zero-padded at the edges."""
    width = int(round(window_s * sample_rate))
    centres = np.round(np.arange(n_frames) * sample_rate / fps).astype(int)
    starts = centres - width // 2
    tail = width + max(0, int(centres[-1]) + 1 - len(audio))
    padded = np.pad(audio.astype(np.float64), (width, tail))
    index = (starts + width)[:, None] + np.arange(width)[None, :]
    return padded[index]


def articulate(
    audio: np.ndarray, n_frames: int, sample_rate: int, fps: float, config: ArticulationConfig
) -> Articulation:
    """Apply the rule of this module's docstring to mono `audio`."""
    windows = frame_windows(audio, n_frames, sample_rate, fps, config.window_s)
    rms = np.sqrt(np.mean(windows**2, axis=1))
    level = 20.0 * np.log10(rms + 1e-8)
    loud = np.percentile(level, config.loud_percentile)
    aperture = np.clip(1.0 + (level - loud) / config.dynamic_range_db, 0.0, 1.0)

    centroid = spectral_centroid(windows, sample_rate)
    span = config.spread_centroid_hz - config.rounded_centroid_hz
    spread = np.clip(2.0 * (centroid - config.rounded_centroid_hz) / span - 1.0, -1.0, 1.0)
    spread = np.where(aperture > 0.0, spread, 0.0)

    return Articulation(
        aperture=centred_moving_average(aperture, config.smoothing_frames),
        spread=centred_moving_average(spread, config.smoothing_frames),
    )


def spectral_centroid(windows: np.ndarray, sample_rate: int) -> np.ndarray:
    """Power-weighted mean frequency of each Hann-windowed row, within CENTROID_BAND_HZ."""
    spectrum = np.abs(np.fft.rfft(windows * np.hanning(windows.shape[1]), axis=1)) ** 2
    freqs = np.fft.rfftfreq(windows.shape[1], d=1.0 / sample_rate)
    band = (freqs >= CENTROID_BAND_HZ[0]) & (freqs <= CENTROID_BAND_HZ[1])
    power = spectrum[:, band]
    return (power @ freqs[band]) / np.maximum(power.sum(axis=1), 1e-20)


def centred_moving_average(signal: np.ndarray, width: int) -> np.ndarray:
    """Mean over `width` (odd) frames centred on each frame, repeating the edge values."""
    if width < 1 or width % 2 == 0:
        raise ValueError(f"smoothing width must be a positive odd number of frames, got {width}")
    half = width // 2
    padded = np.pad(signal, half, mode="edge")
    return np.convolve(padded, np.full(width, 1.0 / width), mode="valid")


def blink_schedule(n_frames: int, fps: float, config: BlinkConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-frame eyelid closure in [0, 1] from a seeded schedule of blinks."""
    if not 0.0 < config.min_interval_s <= config.max_interval_s:
        raise ValueError("blink intervals must satisfy 0 < min_interval_s <= max_interval_s")
    closure = np.zeros(n_frames)
    profile = np.asarray(config.profile)
    time_s = rng.uniform(config.min_interval_s, config.max_interval_s)
    while (start := int(round(time_s * fps))) < n_frames:
        stop = min(start + len(profile), n_frames)
        closure[start:stop] = profile[: stop - start]
        time_s += rng.uniform(config.min_interval_s, config.max_interval_s)
    return closure
