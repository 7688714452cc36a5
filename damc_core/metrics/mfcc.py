"""MFCC of speech as python_speech_features computes it, and the 16-bit PCM sample values syncnet_python feeds it."""

from __future__ import annotations

import decimal
import functools

import numpy as np
import scipy.fft

from damc_core.media import AUDIO_SAMPLE_RATE

PCM16_SCALE = 32768.0
"""Full scale of 16-bit PCM: float audio in [-1, 1] is scaled by this to the sample values syncnet_python reads."""


def _round_half_up(value: float) -> int:
    """Round to the nearest integer, halves away from zero, on the exact binary value (python_speech_features')."""
    return int(decimal.Decimal(value).quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """python_speech_features' mel scale: 2595 log10(1 + hz / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """The inverse of `_hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(nfilt: int, nfft: int, sample_rate: float, lowfreq: float, highfreq: float) -> np.ndarray:
    """python_speech_features' triangular filters (nfilt, nfft // 2 + 1): edges evenly spaced in mel, snapped down to
    FFT bins as floor((nfft + 1) * hz / sample_rate), rising over [b_j, b_{j+1}) and falling over [b_{j+1}, b_{j+2}).
    Read-only (cached)."""
    if highfreq > sample_rate / 2:
        raise ValueError(f"highfreq {highfreq} is above the Nyquist frequency {sample_rate / 2}")
    points = np.linspace(_hz_to_mel(lowfreq), _hz_to_mel(highfreq), nfilt + 2)
    edges = np.floor((nfft + 1) * _mel_to_hz(points) / sample_rate)
    bins = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.where((bins >= low) & (bins < centre), (bins - low) / (centre - low), 0.0)
        falling = np.where((bins >= centre) & (bins < high), (high - bins) / (high - centre), 0.0)
    bank = rising + falling
    bank.setflags(write=False)
    return bank


def frame_count(n_samples: int, frame_len: int = 400, frame_step: int = 160) -> int:
    """Frames python_speech_features cuts `n_samples` into: 1 if n_samples <= frame_len, else
    1 + ceil((n_samples - frame_len) / frame_step); the last frame is zero-padded to full length."""
    if n_samples <= frame_len:
        return 1
    return 1 + -(-(n_samples - frame_len) // frame_step)


def mfcc(
    audio: np.ndarray,
    sample_rate: float = AUDIO_SAMPLE_RATE,
    *,
    winlen: float = 0.025,
    winstep: float = 0.01,
    numcep: int = 13,
    nfilt: int = 26,
    nfft: int = 512,
    lowfreq: float = 0.0,
    highfreq: float | None = None,
    preemph: float = 0.97,
    ceplifter: int = 22,
    append_energy: bool = True,
) -> np.ndarray:
    """MFCC (n, numcep) float64 of mono `audio`, as python_speech_features.mfcc computes them with the same arguments.

    Pre-emphasis y[0] = x[0], y[i] = x[i] - preemph x[i-1]; rectangular frames of round_half_up(winlen sr) samples
    every round_half_up(winstep sr) (`frame_count` frames, the last zero-padded); power spectrum |rfft(frame, nfft)|^2
    / nfft; log of the `mel_filterbank` energies; orthonormal DCT-II, first numcep coefficients; lifter
    1 + (L / 2) sin(pi n / L); with append_energy the first coefficient is replaced by the log of the frame's total
    power. Zero energies are replaced by float64's eps before the logs, so silence gives finite values.
    The values depend on the sample scale only through that first coefficient (log energy): syncnet_python feeds
    int16 sample values.
    """
    signal = np.asarray(audio, dtype=np.float64)
    if signal.ndim != 1 or signal.size == 0:
        raise ValueError(f"audio must be a non-empty 1-D array, got shape {signal.shape}")
    highfreq = highfreq or sample_rate / 2
    frame_len = _round_half_up(winlen * sample_rate)
    frame_step = _round_half_up(winstep * sample_rate)
    emphasised = np.concatenate([signal[:1], signal[1:] - preemph * signal[:-1]])
    n_frames = frame_count(signal.size, frame_len, frame_step)
    padded = np.zeros((n_frames - 1) * frame_step + frame_len)
    padded[: signal.size] = emphasised
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_len)[::frame_step]
    power = np.abs(np.fft.rfft(frames, nfft, axis=1)) ** 2 / nfft
    eps = np.finfo(np.float64).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    bands = power @ mel_filterbank(nfilt, nfft, float(sample_rate), float(lowfreq), float(highfreq)).T
    bands = np.where(bands == 0, eps, bands)
    cepstra = scipy.fft.dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        cepstra = cepstra * (1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(cepstra.shape[1]) / ceplifter))
    if append_energy:
        cepstra[:, 0] = np.log(energy)
    return cepstra


def pcm16(audio: np.ndarray) -> np.ndarray:
    """`audio` as the 16-bit PCM sample values syncnet_python reads (float64 array of integers).

    Floating audio is taken to be in [-1, 1] and converted as ffmpeg's float -> s16 conversion does (scale by 32768,
    round half to even, clip to -32768..32767); integer audio is taken to be 16-bit PCM already and kept as is.
    """
    audio = np.asarray(audio)
    if np.issubdtype(audio.dtype, np.integer):
        return audio.astype(np.float64)
    scaled = np.rint(audio.astype(np.float32) * np.float32(PCM16_SCALE))
    return np.clip(scaled, -PCM16_SCALE, PCM16_SCALE - 1).astype(np.float64)
