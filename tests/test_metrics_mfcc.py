"""damc_core.metrics.mfcc: python_speech_features-compatible MFCC and syncnet_python's 16-bit PCM values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from damc_core.metrics.mfcc import frame_count, mfcc, pcm16


def reference_mfcc(signal: np.ndarray, sr: int = 16000) -> np.ndarray:
    """A slow, literal python_speech_features.mfcc (default arguments): frame loop, explicit DFT sums, filter loops,
    explicit DCT-II sums."""
    x = [float(v) for v in signal]
    emph = [x[0]] + [x[i] - 0.97 * x[i - 1] for i in range(1, len(x))]
    frame_len, step, nfft, nfilt, numcep = 400, 160, 512, 26, 13
    n_frames = 1 if len(x) <= frame_len else 1 + math.ceil((len(x) - frame_len) / step)
    emph += [0.0] * ((n_frames - 1) * step + frame_len - len(x))

    def hz2mel(hz: float) -> float:
        return 2595 * math.log10(1 + hz / 700.0)

    def mel2hz(mel: float) -> float:
        return 700 * (10 ** (mel / 2595.0) - 1)

    high = hz2mel(sr / 2)
    edges = [math.floor((nfft + 1) * mel2hz(high * k / (nfilt + 1)) / sr) for k in range(nfilt + 2)]
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(edges[j], edges[j + 1]):
            bank[j, i] = (i - edges[j]) / (edges[j + 1] - edges[j])
        for i in range(edges[j + 1], edges[j + 2]):
            bank[j, i] = (edges[j + 2] - i) / (edges[j + 2] - edges[j + 1])
    n = np.arange(frame_len)
    eps = np.finfo(float).eps
    out = np.zeros((n_frames, numcep))
    for f in range(n_frames):
        frame = np.array(emph[f * step : f * step + frame_len])
        power = np.array([
            abs(np.sum(frame * np.exp(-2j * np.pi * k * n / nfft))) ** 2 / nfft for k in range(nfft // 2 + 1)
        ])
        energy = power.sum() or eps
        logs = [math.log((bank[j] @ power) or eps) for j in range(nfilt)]
        for c in range(numcep):
            scale = math.sqrt((1 if c == 0 else 2) / nfilt)
            value = scale * sum(logs[m] * math.cos(math.pi * c * (2 * m + 1) / (2 * nfilt)) for m in range(nfilt))
            out[f, c] = value * (1 + 11 * math.sin(math.pi * c / 22))
        out[f, 0] = math.log(energy)
    return out


def test_mfcc_matches_a_slow_reference_including_the_padded_last_frame():
    rng = np.random.default_rng(0)
    audio = rng.integers(-3000, 3000, size=1000).astype(np.int16)  # 1 + ceil(600 / 160) = 5 frames, last padded
    ours = mfcc(audio)
    ref = reference_mfcc(audio)
    assert ours.shape == ref.shape == (5, 13)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize(
    ("n_samples", "frames"), [(1, 1), (400, 1), (401, 2), (560, 2), (561, 3), (16000, 99), (16160, 100)]
)
def test_mfcc_frame_count_is_python_speech_features_ceil_with_zero_padding(n_samples, frames):
    assert frame_count(n_samples) == frames
    assert mfcc(np.ones(n_samples)).shape == (frames, 13)


def test_mfcc_is_at_100_hz_and_four_steps_per_25_fps_frame():
    one_second = mfcc(np.random.default_rng(1).normal(size=16000))
    assert len(one_second) >= 4 * 25 - 1


def test_mfcc_of_silence_is_finite_log_eps_energy_and_zero_cepstra():
    out = mfcc(np.zeros(1600))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], np.log(np.finfo(float).eps))
    np.testing.assert_allclose(out[:, 1:], 0.0, atol=1e-9)


def test_mfcc_scale_only_shifts_the_log_energy_coefficient():
    audio = np.random.default_rng(2).normal(size=4000)
    small, large = mfcc(audio), mfcc(audio * 32768.0)
    np.testing.assert_allclose(large[:, 1:], small[:, 1:], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(large[:, 0] - small[:, 0], 2 * np.log(32768.0))


def test_mfcc_rejects_empty_or_multichannel_audio():
    with pytest.raises(ValueError):
        mfcc(np.zeros(0))
    with pytest.raises(ValueError):
        mfcc(np.zeros((100, 2)))


def test_pcm16_matches_ffmpeg_float_to_s16():
    audio = np.array([0.0, 0.5, -1.0, 1.0, 1.5, -1.5, 1 / 65536, 3 / 65536], dtype=np.float32)
    np.testing.assert_array_equal(pcm16(audio), [0, 16384, -32768, 32767, 32767, -32768, 0, 2])
    np.testing.assert_array_equal(pcm16(np.array([5, -7], dtype=np.int16)), [5, -7])
