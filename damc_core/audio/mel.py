"""Wav2Lip-convention log-mel windows for the Dynamic-Sync Encoder, from audio or from a TTS acoustic model's mel."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from damc_core.media import AUDIO_SAMPLE_RATE, VIDEO_FPS

_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0

DEFAULT_CHUNK_FRAMES = 2400
"""Mel frames computed per STFT pass of `log_mel` (30 s at hop 200, 16 kHz), which bounds its working memory."""


@dataclass(frozen=True)
class MelConvention:
    """Wav2Lip's log-mel: pre-emphasis, magnitude STFT, Slaney mel, dB, symmetric normalisation to ±max_abs_value."""

    sample_rate: int = AUDIO_SAMPLE_RATE
    """Audio sample rate in Hz."""
    n_fft: int = 800
    """FFT length; frames are centred, with n_fft // 2 zeros padded on both sides of the audio."""
    hop_length: int = 200
    """Samples between frame centres (80 mel frames per second at 16 kHz)."""
    win_length: int = 800
    """Length of the periodic Hann window."""
    n_mels: int = 80
    """Mel bands."""
    f_min: float = 55.0
    """Lower edge of the lowest mel band, Hz."""
    f_max: float = 7600.0
    """Upper edge of the highest mel band, Hz."""
    preemphasis: float = 0.97
    """Coefficient k of the pre-emphasis y[n] = x[n] - k x[n-1] applied to the waveform."""
    ref_level_db: float = 20.0
    """dB subtracted from 20 log10(mel) before normalisation."""
    min_level_db: float = -100.0
    """dB level mapped to -max_abs_value; it also sets the amplitude floor 10 ** (min_level_db / 20) = 1e-5."""
    max_abs_value: float = 4.0
    """Normalised values lie in [-max_abs_value, max_abs_value]; silence is -max_abs_value."""


WAV2LIP = MelConvention()


@dataclass(frozen=True)
class Log10MelConvention:
    """A log10 mel of STFT magnitudes (no pre-emphasis), as text-to-speech acoustic models such as SpeechT5 emit."""

    sample_rate: int
    """Audio sample rate in Hz."""
    n_fft: int
    """FFT length; frames are centred, with n_fft // 2 samples of reflect padding on both sides of the audio."""
    hop_length: int
    """Samples between frame centres."""
    win_length: int
    """Length of the periodic Hann window."""
    n_mels: int
    """Mel bands (Slaney scale, Slaney area normalisation)."""
    f_min: float
    """Lower edge of the lowest mel band, Hz."""
    f_max: float
    """Upper edge of the highest mel band, Hz."""
    mel_floor: float
    """Mel values are clipped below at this before log10."""


SPEECHT5 = Log10MelConvention(16000, 1024, 256, 1024, 80, 80.0, 7600.0, 1e-10)
"""The target features of transformers' SpeechT5FeatureExtractor, which SpeechT5ForTextToSpeech predicts."""


def hz_to_mel(frequency: ArrayLike) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): 3 mels per 200 Hz up to 1 kHz (15 mels), logarithmic above."""
    hz = np.asarray(frequency, dtype=np.float64)
    log_part = np.log(np.maximum(hz, _SLANEY_LOG_START_HZ) / _SLANEY_LOG_START_HZ) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_LOG_START_HZ, _SLANEY_LOG_START_MEL + log_part, hz / _SLANEY_HZ_PER_MEL)


def mel_to_hz(mel: ArrayLike) -> np.ndarray:
    """The inverse of `hz_to_mel`."""
    mels = np.asarray(mel, dtype=np.float64)
    log_part = _SLANEY_LOG_START_HZ * np.exp(_SLANEY_LOG_STEP * (mels - _SLANEY_LOG_START_MEL))
    return np.where(mels >= _SLANEY_LOG_START_MEL, log_part, mels * _SLANEY_HZ_PER_MEL)


def mel_band_edges(n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """n_mels + 2 frequencies (Hz), evenly spaced in mel; band i rises from edge i, peaks at i + 1, ends at i + 2."""
    return mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular Slaney-scale mel filters with Slaney area normalisation, shape (n_mels, n_fft // 2 + 1).

    Equal to librosa.filters.mel's default (htk=False, norm="slaney"): each triangle has height 2 / (right - left),
    hence unit area over frequency in Hz.
    """
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}")
    edges = mel_band_edges(n_mels, f_min, f_max)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    return np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (right - left))


def log_mel(
    audio: np.ndarray, convention: MelConvention = WAV2LIP, *, chunk_frames: int = DEFAULT_CHUNK_FRAMES
) -> np.ndarray:
    """Wav2Lip's normalised log-mel spectrogram of mono `audio`, float32 of shape (n_mels, 1 + len(audio) // hop).

    Frame m is centred on sample m * hop. The STFT runs in float64 (the result is rounded to float32 once, at the end)
    over `chunk_frames` frames at a time, each chunk reading the n_fft samples of overlap it needs, so any chunk size
    gives exactly the same result and memory stays bounded for long audio.
    """
    samples = _mono(audio)
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be positive, got {chunk_frames}")
    c = convention
    filterbank = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)
    n_frames = 1 + len(samples) // c.hop_length
    result = np.empty((c.n_mels, n_frames), dtype=np.float32)
    for first in range(0, n_frames, chunk_frames):
        last = min(first + chunk_frames, n_frames)
        start = first * c.hop_length - c.n_fft // 2
        stop = (last - 1) * c.hop_length + c.n_fft - c.n_fft // 2
        segment = _preemphasised_segment(samples, start, stop, c.preemphasis)
        magnitude = _stft_magnitude(segment, c.n_fft, c.hop_length, c.win_length)
        result[:, first:last] = _normalised_db(filterbank @ magnitude, c)
    return result


def frames_for_samples(n_samples: int, sample_rate: int = AUDIO_SAMPLE_RATE, fps: int = VIDEO_FPS) -> int:
    """Video frames at `fps` that `n_samples` of audio cover: ceil(n_samples * fps / sample_rate)."""
    if n_samples <= 0:
        raise ValueError(f"audio must have at least one sample, got {n_samples}")
    return -(-n_samples * fps // sample_rate)


def mel_windows(
    mel: np.ndarray,
    n_frames: int,
    fps: int = VIDEO_FPS,
    window: int = 16,
    hop_length: int = 200,
    sample_rate: int = AUDIO_SAMPLE_RATE,
    pad_value: float = -4.0,
) -> np.ndarray:
    """One window of `window` mel frames per video frame, float32 of shape (n_frames, n_mels, window).

    Video frame t (time t / fps) gets mel frames [c - window // 2, c - window // 2 + window), where c is the mel frame
    nearest its time, round(t * sample_rate / (fps * hop_length)) with ties rounded up (3.2 t for the defaults).
    Mel frames before the start or past the end of `mel` read as `pad_value`.
    """
    if mel.ndim != 2:
        raise ValueError(f"mel must be (n_mels, time), got shape {mel.shape}")
    if n_frames < 0 or window < 1:
        raise ValueError(f"need n_frames >= 0 and window >= 1, got n_frames={n_frames}, window={window}")
    starts = _nearest_mel_frames(n_frames, fps, hop_length, sample_rate) - window // 2
    before = max(0, -int(starts.min(initial=0)))
    after = max(0, int(starts.max(initial=0)) + window - mel.shape[1])
    padded = np.pad(mel.astype(np.float32, copy=False), ((0, 0), (before, after)), constant_values=pad_value)
    columns = starts[:, None] + before + np.arange(window)
    return np.ascontiguousarray(padded[:, columns].transpose(1, 0, 2))


def log_mel_windows(
    audio: np.ndarray,
    n_frames: int | None = None,
    convention: MelConvention = WAV2LIP,
    fps: int = VIDEO_FPS,
    window: int = 16,
) -> np.ndarray:
    """`log_mel` of `audio` cut into `mel_windows`, padded with silence's value -max_abs_value.

    n_frames defaults to every video frame the audio covers, `frames_for_samples(len(audio))`; a larger n_frames
    gets windows of padding past the end of the audio.
    """
    mel = log_mel(audio, convention)
    if n_frames is None:
        n_frames = frames_for_samples(len(audio), convention.sample_rate, fps)
    return mel_windows(
        mel, n_frames, fps, window, convention.hop_length, convention.sample_rate, -convention.max_abs_value
    )


def log10_mel(audio: np.ndarray, convention: Log10MelConvention = SPEECHT5) -> np.ndarray:
    """log10 mel of mono `audio`, float32 of shape (1 + len(audio) // hop, n_mels).

    With SPEECHT5 this matches the target features of transformers' SpeechT5FeatureExtractor (`audio_target=`), the
    mel SpeechT5ForTextToSpeech learns to predict: centred frames with reflect padding, magnitude STFT, no pre-emphasis.
    """
    samples = _mono(audio).astype(np.float64)
    c = convention
    padded = np.pad(samples, c.n_fft // 2, mode="reflect")
    filterbank = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)
    mel = filterbank @ _stft_magnitude(padded, c.n_fft, c.hop_length, c.win_length)
    return np.log10(np.maximum(c.mel_floor, mel)).T.astype(np.float32)


def convert_log10_mel(
    log10_mel: np.ndarray, source: Log10MelConvention = SPEECHT5, target: MelConvention = WAV2LIP
) -> np.ndarray:
    """A TTS model's log10 mel (time, n_mels) as the normalised log-mel `log_mel` would give for the same speech.

    Returns float32 (target.n_mels, 1 + round(duration * sample_rate) // target.hop_length), where duration is
    (time - 1) * source.hop_length / source.sample_rate, the time of the last source frame. The log10 mel is
    interpolated linearly in time onto the target's frame centres (interpolating log values rather than amplitudes
    keeps onsets sharp: 0.147 mean error on espeak-ng speech against 0.179), turned into an estimate of the target's
    pre-emphasised magnitude spectrum (`_magnitude_spectrum`), summed by the target filterbank, and put in dB and
    normalised as `log_mel` does.
    """
    if log10_mel.ndim != 2 or log10_mel.shape[1] != source.n_mels or len(log10_mel) == 0:
        raise ValueError(f"log10_mel must be (time >= 1, {source.n_mels}), got shape {log10_mel.shape}")
    bands = _resample_frames(log10_mel.astype(np.float64).T, source, target)
    target_bank = mel_filterbank(target.sample_rate, target.n_fft, target.n_mels, target.f_min, target.f_max)
    return _normalised_db(target_bank @ _magnitude_spectrum(bands, source, target), target).astype(np.float32)


def _mono(audio: np.ndarray) -> np.ndarray:
    """`audio` as an array, checked to be non-empty and one-dimensional."""
    samples = np.asarray(audio)
    if samples.ndim != 1 or len(samples) == 0:
        raise ValueError(f"audio must be non-empty mono samples, got shape {samples.shape}")
    return samples


def _preemphasised_segment(samples: np.ndarray, start: int, stop: int, coefficient: float) -> np.ndarray:
    """Samples [start, stop) of y[n] = x[n] - k x[n - 1] (with x[-1] = 0), reading zeros outside the audio.

    Pre-emphasis precedes the STFT's zero padding, as in Wav2Lip, so y is zero (not -k x[last]) past the end.
    """
    segment = np.zeros(stop - start)
    first, last = max(start, 0), min(stop, len(samples))
    current = samples[first:last].astype(np.float64)
    previous = np.empty_like(current)
    previous[0] = samples[first - 1] if first > 0 else 0.0
    previous[1:] = current[:-1]
    segment[first - start : last - start] = current - coefficient * previous
    return segment


def _stft_magnitude(signal: np.ndarray, n_fft: int, hop_length: int, win_length: int) -> np.ndarray:
    """|STFT| (n_fft // 2 + 1, frames) of already padded float64 `signal`, frame m starting at sample m * hop."""
    spectrum = torch.stft(
        torch.from_numpy(signal), n_fft, hop_length, win_length, _hann(win_length), center=False, return_complex=True
    )
    return spectrum.abs().numpy()


def _normalised_db(mel: np.ndarray, convention: MelConvention) -> np.ndarray:
    """Wav2Lip's amplitude to dB (floored at min_level_db) minus ref_level_db, mapped linearly onto ±max_abs_value."""
    c = convention
    db = 20.0 * np.log10(np.maximum(10.0 ** (c.min_level_db / 20.0), mel)) - c.ref_level_db
    scaled = 2.0 * c.max_abs_value * (db - c.min_level_db) / -c.min_level_db - c.max_abs_value
    return np.clip(scaled, -c.max_abs_value, c.max_abs_value)


def _nearest_mel_frames(n_frames: int, fps: int, hop_length: int, sample_rate: int) -> np.ndarray:
    """round(t * sample_rate / (fps * hop_length)) for t = 0 .. n_frames - 1, ties up, in exact integer arithmetic."""
    t = np.arange(n_frames, dtype=np.int64)
    return (2 * t * sample_rate + fps * hop_length) // (2 * fps * hop_length)


def _resample_frames(log10_mel: np.ndarray, source: Log10MelConvention, target: MelConvention) -> np.ndarray:
    """Linear interpolation of (bands, time) from source frame times k * hop / sr onto the target's m * hop / sr."""
    last_sample = (log10_mel.shape[1] - 1) * source.hop_length * target.sample_rate / source.sample_rate
    n_target = 1 + round(last_sample) // target.hop_length
    target_times = np.arange(n_target) * target.hop_length / target.sample_rate
    positions = target_times * source.sample_rate / source.hop_length
    source_frames = np.arange(log10_mel.shape[1])
    return np.stack([np.interp(positions, source_frames, band) for band in log10_mel])


def _magnitude_spectrum(log10_mel: np.ndarray, source: Log10MelConvention, target: MelConvention) -> np.ndarray:
    """Estimate (target bins, frames) of the magnitude STFT `log_mel` computes, from a source log10 mel (bands, frames).

    A source band's mel value over its filter's weight sum is the mean magnitude of the FFT bins it covers. Those
    means, placed at the band centres, are interpolated in log magnitude onto the target's FFT bins (held flat beyond
    the first and last centre). Against the direct log-mel of espeak-ng speech this errs by 0.147 on average, against
    0.153 for linear interpolation, which fills the valleys between harmonics, and 0.344 for a pseudo-inverse of the
    filterbank clipped at zero, whose oscillations between bands, once clipped, add energy.
    The magnitude of a noise-like spectrum in one bin grows with the square root of the window's energy, so the
    estimate is scaled from the source window to the target's, and the pre-emphasis the target applies to the
    waveform is applied as its frequency response |1 - k exp(-jw)|.
    """
    source_bank = mel_filterbank(source.sample_rate, source.n_fft, source.n_mels, source.f_min, source.f_max)
    log10_mean = log10_mel - np.log10(source_bank.sum(axis=1))[:, None]
    centres = mel_band_edges(source.n_mels, source.f_min, source.f_max)[1:-1]
    bins = np.fft.rfftfreq(target.n_fft, 1.0 / target.sample_rate)
    spectrum = 10.0 ** (_interpolation_matrix(bins, centres) @ log10_mean)
    window_gain = math.sqrt(_window_energy(target.win_length) / _window_energy(source.win_length))
    tilt = np.abs(1.0 - target.preemphasis * np.exp(-2j * np.pi * bins / target.sample_rate))
    return (window_gain * tilt)[:, None] * spectrum


def _interpolation_matrix(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """W (len(x), len(knots)) with W @ y == np.interp(x, knots, y) for every y."""
    return np.stack([np.interp(x, knots, unit) for unit in np.eye(len(knots))], axis=1)


def _hann(win_length: int) -> torch.Tensor:
    """The periodic Hann window (as librosa's get_window("hann") and transformers' window_function use)."""
    return torch.hann_window(win_length, periodic=True, dtype=torch.float64)


def _window_energy(win_length: int) -> float:
    """Sum of the squared periodic Hann window."""
    return _hann(win_length).square().sum().item()
