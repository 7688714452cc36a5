"""Tests for damc_core.audio.mel: Slaney filterbank, Wav2Lip log-mel, per-video-frame windows, TTS mel conversion."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.signal import lfilter
from transformers.audio_utils import mel_filter_bank
from transformers.models.speecht5.feature_extraction_speecht5 import SpeechT5FeatureExtractor

from damc_core.audio.mel import (
    SPEECHT5,
    WAV2LIP,
    MelConvention,
    convert_log10_mel,
    frames_for_samples,
    hz_to_mel,
    log10_mel,
    log_mel,
    log_mel_windows,
    mel_band_edges,
    mel_filterbank,
    mel_to_hz,
    mel_windows,
)

SR = 16000
FLOOR = -WAV2LIP.max_abs_value
ODD_LENGTHS = (1, 199, 640, 641, 16001, 16000 * 7 + 333)


# ---------------------------------------------------------------- slow references, written from the definitions


def reference_hz_to_mel(hz: float) -> float:
    return hz * 3.0 / 200.0 if hz < 1000.0 else 15.0 + 27.0 * math.log(hz / 1000.0) / math.log(6.4)


def reference_mel_to_hz(mel: float) -> float:
    return mel * 200.0 / 3.0 if mel < 15.0 else 1000.0 * 6.4 ** ((mel - 15.0) / 27.0)


def reference_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    low, high = reference_hz_to_mel(f_min), reference_hz_to_mel(f_max)
    edges = [reference_mel_to_hz(low + (high - low) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for band in range(n_mels):
        left, centre, right = edges[band : band + 3]
        for k in range(n_fft // 2 + 1):
            hz = k * sample_rate / n_fft
            if left < hz <= centre:
                bank[band, k] = (hz - left) / (centre - left) * 2.0 / (right - left)
            elif centre < hz < right:
                bank[band, k] = (right - hz) / (right - centre) * 2.0 / (right - left)
    return bank


def reference_normalise(mel: np.ndarray, c: MelConvention = WAV2LIP) -> np.ndarray:
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - c.ref_level_db
    scaled = 2.0 * c.max_abs_value * (db - c.min_level_db) / -c.min_level_db - c.max_abs_value
    return np.clip(scaled, -c.max_abs_value, c.max_abs_value)


def reference_log_mel(audio: np.ndarray, c: MelConvention = WAV2LIP) -> np.ndarray:
    emphasised = lfilter([1.0, -c.preemphasis], [1.0], audio.astype(np.float64))
    padded = np.pad(emphasised, c.n_fft // 2)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(c.n_fft) / c.n_fft)
    bank = reference_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)
    columns = []
    for m in range(1 + len(audio) // c.hop_length):
        frame = padded[m * c.hop_length : m * c.hop_length + c.n_fft]
        columns.append(bank @ np.abs(np.fft.rfft(frame * hann)))
    return reference_normalise(np.stack(columns, axis=1), c)


def reference_windows(
    mel: np.ndarray, n_frames: int, fps: int, window: int, hop: int, sample_rate: int, pad: float
) -> np.ndarray:
    out = np.full((n_frames, mel.shape[0], window), pad, dtype=np.float32)
    for t in range(n_frames):
        centre = math.floor(Fraction(t * sample_rate, fps * hop) + Fraction(1, 2))
        for j in range(window):
            m = centre - window // 2 + j
            if 0 <= m < mel.shape[1]:
                out[t, :, j] = mel[:, m]
    return out


# ---------------------------------------------------------------- test signals


def noise(n: int, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def resonate(x: np.ndarray, formants: list[tuple[float, float]]) -> np.ndarray:
    """Cascade of two-pole resonators at (frequency, bandwidth) pairs in Hz."""
    for frequency, bandwidth in formants:
        r = math.exp(-math.pi * bandwidth / SR)
        x = lfilter([1.0 - r], [1.0, -2.0 * r * math.cos(2.0 * math.pi * frequency / SR), r * r], x)
    return x


def vowel(seconds: float, f0_start: float, f0_end: float, formants: list[tuple[float, float]]) -> np.ndarray:
    """Glottal pulse train with a pitch glide, low-passed like a glottal flow and shaped by formants."""
    f0 = np.linspace(f0_start, f0_end, int(seconds * SR))
    pulses = np.diff(np.floor(np.cumsum(f0 / SR)), prepend=0.0)
    return resonate(lfilter([1.0], [1.0, -1.9, 0.9025], pulses), formants)


def speech_like(seed: int = 0) -> np.ndarray:
    """Vowels, fricative noise bursts and silences at assorted levels, padded to 3.2 s = 51200 samples: a multiple of
    6400, so that the direct and the converted log-mel have the same number of frames."""
    rng = np.random.default_rng(seed)
    a, i, u = [(700, 110), (1220, 120), (2600, 160)], [(300, 80), (2300, 140), (3000, 200)], [(320, 80), (800, 100)]
    parts = [
        (np.zeros(4000), 0.0),
        (vowel(0.5, 110, 160, a), 0.6),
        (resonate(rng.standard_normal(1920), [(5000, 1500)]), 0.15),
        (vowel(0.45, 210, 150, i), 0.5),
        (np.zeros(2400), 0.0),
        (resonate(rng.standard_normal(1600), [(3500, 1500)]), 0.2),
        (vowel(0.55, 130, 100, u), 0.45),
        (np.zeros(1600), 0.0),
        (vowel(0.35, 180, 240, a), 0.55),
    ]
    ramp = np.linspace(0.0, 1.0, 320)
    shaped = []
    for part, peak in parts:
        if peak:
            part = part.copy()
            part[:320] *= ramp
            part[-320:] *= ramp[::-1]
            part *= peak / np.abs(part).max()
        shaped.append(part)
    audio = np.concatenate(shaped)
    return np.pad(audio, (0, 51200 - len(audio))).astype(np.float32)


def band_centres(c: MelConvention = WAV2LIP) -> np.ndarray:
    return mel_band_edges(c.n_mels, c.f_min, c.f_max)[1:-1]


# ---------------------------------------------------------------- mel scale and filterbank


def test_slaney_mel_scale_known_values() -> None:
    np.testing.assert_allclose(hz_to_mel([0.0, 200.0, 500.0, 1000.0, 6400.0]), [0.0, 3.0, 7.5, 15.0, 42.0], rtol=1e-12)
    linear = np.linspace(0.0, 999.0, 50)
    np.testing.assert_allclose(hz_to_mel(linear), linear * 3.0 / 200.0, rtol=1e-12)
    hz = np.geomspace(1.0, 8000.0, 200)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12)
    np.testing.assert_allclose(hz_to_mel(hz), [reference_hz_to_mel(f) for f in hz], rtol=1e-12)


FilterbankArgs = tuple[int, int, int, float, float]


@pytest.mark.parametrize(
    "args",
    [
        (16000, 800, 80, 55.0, 7600.0),
        (16000, 1024, 80, 80.0, 7600.0),
        (22050, 2048, 128, 0.0, 11025.0),
        (8000, 256, 20, 0.0, 4000.0),
    ],
)
def test_filterbank_equals_loop_reference_and_librosa_compatible_implementation(args: FilterbankArgs) -> None:
    sample_rate, n_fft, n_mels, f_min, f_max = args
    bank = mel_filterbank(*args)
    assert bank.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(bank, reference_filterbank(*args), rtol=1e-10, atol=1e-15)
    transformers_bank = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=f_min,
        max_frequency=f_max,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    np.testing.assert_allclose(bank, transformers_bank.T, rtol=1e-10, atol=1e-15)


def test_filters_are_triangles_peaking_at_their_centres() -> None:
    bank = mel_filterbank(16000, 800, 80, 55.0, 7600.0)
    edges = mel_band_edges(80, 55.0, 7600.0)
    bins = np.fft.rfftfreq(800, 1.0 / 16000)
    assert (bank >= 0.0).all()
    for band, (left, centre, right) in enumerate(zip(edges[:-2], edges[1:-1], edges[2:], strict=True)):
        support = bins[bank[band] > 0.0]
        assert support.size and left < support.min() and support.max() < right
        assert bins[bank[band].argmax()] in (bins[bins <= centre].max(), bins[bins >= centre].min())
        assert bank[band].max() <= 2.0 / (right - left) * (1.0 + 1e-12)


def test_filters_have_unit_area_in_hz() -> None:
    fine = mel_filterbank(16000, 32768, 80, 55.0, 7600.0)
    np.testing.assert_allclose(fine.sum(axis=1) * 16000 / 32768, 1.0, atol=2e-4)


def test_filterbank_rejects_a_band_beyond_nyquist() -> None:
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(16000, 800, 80, 55.0, 9000.0)


# ---------------------------------------------------------------- log_mel


@pytest.mark.parametrize("n", [1, 199, 801, 4000, 16000 * 2 + 77])
def test_log_mel_equals_slow_reference(n: int) -> None:
    t = np.arange(n) / SR
    audio = noise(n, seed=n) + 0.3 * np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
    mel = log_mel(audio)
    assert mel.dtype == np.float32 and mel.shape == (80, 1 + n // 200)
    np.testing.assert_allclose(mel, reference_log_mel(audio), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [1, 200, 1400, 16000 + 123])
@pytest.mark.parametrize("chunk_frames", [1, 3, 7])
def test_chunked_log_mel_is_identical(n: int, chunk_frames: int) -> None:
    audio = noise(n, seed=1)
    np.testing.assert_array_equal(log_mel(audio, chunk_frames=chunk_frames), log_mel(audio))


def test_silence_is_the_floor() -> None:
    assert (log_mel(np.zeros(16000, np.float32)) == FLOOR).all()


def test_on_bin_sinusoid_has_the_closed_form_value() -> None:
    """A sinusoid on FFT bin 50 (1 kHz) after the Hann window is A N / 4 in bin 50 and A N / 8 in bins 49 and 51,
    scaled by the pre-emphasis response; interior frames must show exactly that."""
    amplitude, n_fft, k = 0.25, WAV2LIP.n_fft, 50
    audio = amplitude * np.sin(2 * np.pi * 1000.0 * np.arange(16000) / SR + 0.3)
    gain = abs(1.0 - WAV2LIP.preemphasis * np.exp(-2j * np.pi * 1000.0 / SR))
    spectrum = np.zeros(n_fft // 2 + 1)
    spectrum[[k - 1, k, k + 1]] = amplitude * gain * n_fft * np.array([1 / 8, 1 / 4, 1 / 8])
    expected = reference_normalise(mel_filterbank(16000, 800, 80, 55.0, 7600.0) @ spectrum)
    interior = log_mel(audio)[:, 3:-3]
    np.testing.assert_allclose(interior, np.repeat(expected[:, None], interior.shape[1], axis=1), atol=1e-5)


def test_tone_peaks_in_the_band_centred_nearest_it() -> None:
    audio = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(8000) / SR)
    assert log_mel(audio)[:, 3:-3].mean(axis=1).argmax() == np.abs(band_centres() - 1000.0).argmin()


@pytest.mark.parametrize("bad", [np.zeros(0), np.zeros((2, 100))])
def test_log_mel_rejects_empty_or_multichannel_audio(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="mono"):
        log_mel(bad)


# ---------------------------------------------------------------- one window per video frame


@pytest.mark.parametrize(
    ("n", "frames"), [(1, 1), (639, 1), (640, 1), (641, 2), (16000, 25), (16001, 26), (16000 * 7 + 333, 176)]
)
def test_frames_for_samples_known_values(n: int, frames: int) -> None:
    assert frames_for_samples(n) == frames


@pytest.mark.parametrize("n", [0, -5])
def test_frames_for_samples_rejects_empty_audio(n: int) -> None:
    with pytest.raises(ValueError):
        frames_for_samples(n)


@pytest.mark.parametrize(
    ("n_frames", "fps", "window", "hop", "sample_rate"),
    [
        (40, 25, 16, 200, 16000),
        (40, 30, 16, 160, 16000),
        (40, 25, 5, 200, 16000),
        (41, 50, 4, 640, 16000),
        (0, 25, 16, 200, 16000),
    ],
)
def test_mel_windows_equal_slow_reference(n_frames: int, fps: int, window: int, hop: int, sample_rate: int) -> None:
    mel = np.random.default_rng(2).uniform(-4, 4, size=(6, 90))
    windows = mel_windows(mel, n_frames, fps, window, hop, sample_rate, pad_value=-9.0)
    assert windows.dtype == np.float32 and windows.flags.c_contiguous
    expected = reference_windows(mel, n_frames, fps, window, hop, sample_rate, -9.0)
    np.testing.assert_array_equal(windows, expected)


def test_mel_windows_known_columns() -> None:
    mel = np.tile(np.arange(100, dtype=np.float32), (3, 1))
    windows = mel_windows(mel, 40, pad_value=-1.0)
    np.testing.assert_array_equal(windows[10, 0], np.arange(24, 40))
    np.testing.assert_array_equal(windows[0, 0], [-1.0] * 8 + list(range(8)))
    np.testing.assert_array_equal(windows[31, 0], list(range(91, 100)) + [-1.0] * 7)


@pytest.mark.parametrize("n", ODD_LENGTHS)
def test_every_video_frame_gets_a_window_padded_at_the_edges(n: int) -> None:
    audio = noise(n, seed=3)
    mel, windows = log_mel(audio), log_mel_windows(audio)
    n_frames = frames_for_samples(n)
    assert windows.shape == (n_frames, 80, 16)
    assert (n_frames - 1) / 25 < n / SR <= n_frames / 25
    assert (windows[0, :, :8] == FLOOR).all()
    np.testing.assert_array_equal(windows[0, :, 8 : 8 + min(8, mel.shape[1])], mel[:, :8])
    last_start = math.floor(Fraction(16 * (n_frames - 1), 5) + Fraction(1, 2)) - 8
    frames = np.arange(last_start, last_start + 16)
    real = (frames >= 0) & (frames < mel.shape[1])
    assert (windows[-1][:, ~real] == FLOOR).all()
    assert (windows[-1][:, real] > FLOOR).all()


def test_extra_frames_past_the_audio_are_padding() -> None:
    audio = noise(16000, seed=4)
    windows = log_mel_windows(audio, n_frames=40)
    np.testing.assert_array_equal(windows[:25], log_mel_windows(audio))
    assert (windows[-10:] == FLOOR).all()


def test_window_is_centred_on_its_video_frame_time() -> None:
    audio = np.zeros(2 * SR, np.float32)
    audio[SR - 40 : SR + 40] = noise(80, seed=5, level=0.5)
    energy = log_mel_windows(audio).mean(axis=1)
    assert energy[25].argmax() == 8
    assert energy[24].argmax() == 8 + 3
    assert energy[26].argmax() == 8 - 3


# ---------------------------------------------------------------- text-to-speech mel conversion


@pytest.mark.parametrize("n", [1, 300, 4097, 16000])
def test_log10_mel_matches_speecht5_feature_extractor(n: int) -> None:
    audio = noise(n, seed=6) + 0.2 * np.sin(2 * np.pi * 300.0 * np.arange(n) / SR).astype(np.float32)
    expected = SpeechT5FeatureExtractor()(audio_target=audio, sampling_rate=SR, return_tensors="np")["input_values"][0]
    ours = log10_mel(audio)
    assert ours.shape == (1 + n // 256, 80)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("time", "frames"), [(1, 1), (2, 2), (63, 80), (188, 240), (201, 257)])
def test_converted_length_follows_source_duration(time: int, frames: int) -> None:
    assert convert_log10_mel(np.full((time, 80), -3.0)).shape == (80, frames)


def test_converted_silence_is_the_floor() -> None:
    assert (convert_log10_mel(np.full((50, 80), np.log10(SPEECHT5.mel_floor))) == FLOOR).all()


def test_converted_tone_peaks_in_the_same_band() -> None:
    audio = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(12800) / SR)
    converted = convert_log10_mel(log10_mel(audio))
    assert converted[:, 4:-4].mean(axis=1).argmax() == log_mel(audio)[:, 4:-4].mean(axis=1).argmax()


def test_converted_white_noise_keeps_its_level_in_every_band() -> None:
    """Scaling per-bin magnitudes by the windows' energies and tilting by the pre-emphasis response leave white noise
    level: measured mean error +0.010, largest band mean 0.043 (without the window scaling the mean is +0.095)."""
    audio = noise(25600, seed=7)
    error = (convert_log10_mel(log10_mel(audio)) - log_mel(audio))[:, 4:-4]
    assert abs(error.mean()) < 0.03
    assert np.abs(error.mean(axis=1)).max() < 0.1


def test_conversion_agrees_with_the_direct_log_mel_on_speech() -> None:
    """Measured: mean absolute error 0.095 (0.138 on frames above silence), bias +0.022, energy correlation 0.998."""
    audio = speech_like()
    direct, converted = log_mel(audio), convert_log10_mel(log10_mel(audio))
    assert converted.shape == direct.shape
    error = converted - direct
    assert np.abs(error).mean() < 0.15
    assert abs(error[:, direct.mean(axis=0) > -3.5].mean()) < 0.05
    assert np.corrcoef(converted.mean(axis=0), direct.mean(axis=0))[0, 1] > 0.99


def test_conversion_rejects_a_mel_of_another_size() -> None:
    with pytest.raises(ValueError, match="log10_mel"):
        convert_log10_mel(np.zeros((10, 64)))
