"""The sample's articulation rule: windows, aperture and spread from speech, blinks."""

from __future__ import annotations

import numpy as np
import pytest

from damc_core.params import ArticulationConfig, BlinkConfig
from damc_core.sample.articulation import articulate, blink_schedule, centred_moving_average, frame_windows

RATE, FPS = 16_000, 25
CONFIG = ArticulationConfig(
    window_s=0.04, dynamic_range_db=30.0, loud_percentile=95.0, rounded_centroid_hz=700.0,
    spread_centroid_hz=2000.0, smoothing_frames=1, max_open_px=9.0, max_spread_px=3.0,
)


def tone(frequency: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * RATE)) / RATE)


def test_frame_windows_match_a_slow_reference_including_the_edges():
    rng = np.random.default_rng(1)
    audio = rng.standard_normal(16_003)
    n_frames, width = 26, 640
    windows = frame_windows(audio, n_frames, RATE, FPS, 0.04)
    assert windows.shape == (n_frames, width)
    for frame in range(n_frames):
        centre = frame * RATE // FPS
        expected = [audio[i] if 0 <= i < len(audio) else 0.0 for i in range(centre - width // 2, centre + width // 2)]
        np.testing.assert_array_equal(windows[frame], expected)


def test_silence_closes_the_mouth_and_loud_speech_opens_it():
    audio = np.concatenate([np.zeros(RATE), tone(300, 1.0), np.zeros(RATE)])
    mouth = articulate(audio, 75, RATE, FPS, CONFIG)
    assert np.all(mouth.aperture[:20] == 0) and np.all(mouth.aperture[-20:] == 0)
    assert np.all(mouth.aperture[30:45] > 0.99)
    assert np.all(mouth.spread[mouth.aperture == 0] == 0)


def test_aperture_follows_loudness_in_decibels():
    quiet_db = -15.0
    audio = np.concatenate([tone(300, 1.0), tone(300, 1.0, amplitude=0.5 * 10 ** (quiet_db / 20))])
    mouth = articulate(audio, 50, RATE, FPS, CONFIG)
    assert mouth.aperture[10] == pytest.approx(1.0)
    assert mouth.aperture[40] == pytest.approx(1.0 + quiet_db / CONFIG.dynamic_range_db, abs=0.02)


def test_spread_follows_the_spectral_centroid():
    low = articulate(tone(400, 1.0), 25, RATE, FPS, CONFIG)
    high = articulate(tone(3000, 1.0), 25, RATE, FPS, CONFIG)
    assert np.all(low.spread[3:-3] == -1.0)
    assert np.all(high.spread[3:-3] == 1.0)


def test_centred_moving_average_matches_a_slow_reference():
    signal = np.random.default_rng(2).random(30)
    smoothed = centred_moving_average(signal, 5)
    for i in range(30):
        window = [signal[min(max(j, 0), 29)] for j in range(i - 2, i + 3)]
        assert smoothed[i] == pytest.approx(np.mean(window))
    with pytest.raises(ValueError, match="odd"):
        centred_moving_average(signal, 4)


def test_blinks_are_seeded_spaced_and_shaped():
    config = BlinkConfig(min_interval_s=2.0, max_interval_s=3.0, profile=(0.5, 1.0, 0.5))
    closure = blink_schedule(1000, FPS, config, np.random.default_rng(7))
    np.testing.assert_array_equal(closure, blink_schedule(1000, FPS, config, np.random.default_rng(7)))
    starts = np.flatnonzero((closure > 0) & (np.roll(closure, 1) == 0))
    assert len(starts) >= 12
    gaps_s = np.diff(starts) / FPS
    assert np.all((gaps_s >= 2.0 - 0.04) & (gaps_s <= 3.0 + 0.04))
    np.testing.assert_array_equal(closure[starts[0] : starts[0] + 3], [0.5, 1.0, 0.5])
