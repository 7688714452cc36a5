"""Both audio features of one audio, E_c's content features and E_d's mel windows, written with their meta files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from damc_core.audio.content import ENCODER_STRIDE, STEPS_PER_FRAME, ContentEncoder, content_features
from damc_core.audio.features import FeatureMeta, audio_sha256, save_features
from damc_core.audio.levels import check_speech
from damc_core.audio.mel import WAV2LIP, log_mel_windows
from damc_core.media import AUDIO_SAMPLE_RATE, VIDEO_FPS
from damc_core.params import AudioFeaturesConfig

MEL_WINDOW = 16
"""Mel frames per video frame (0.2 s), the Wav2Lip convention."""

CONTENT_NAME = "content.npy"
MEL_NAME = "mel.npy"


def save_mel_windows(path: Path, windows: np.ndarray, source: str, language: str, fingerprint: str) -> FeatureMeta:
    """Save (frames, 80, MEL_WINDOW) Wav2Lip-convention mel windows with their meta file; return the meta."""
    meta = FeatureMeta(
        kind="mel", encoder=source, representation="log_mel", shape=windows.shape, dim=WAV2LIP.n_mels,
        window=MEL_WINDOW, rate_hz=AUDIO_SAMPLE_RATE / WAV2LIP.hop_length, fps=VIDEO_FPS,
        sample_rate=AUDIO_SAMPLE_RATE, language=language, audio_sha256=fingerprint, stand_in=False,
    )
    save_features(path, windows, meta)
    return meta


@dataclass(frozen=True)
class AudioFeatureSummary:
    """What was written, for reports."""

    content: FeatureMeta
    mel: FeatureMeta
    warnings: tuple[str, ...]


def extract_features(
    audio: np.ndarray,
    n_frames: int,
    encoder: ContentEncoder,
    config: AudioFeaturesConfig,
    out_dir: Path,
    source: str,
) -> AudioFeatureSummary:
    """Compute and save content.npy and mel.npy (+ meta) for 16 kHz mono `audio`, one row per video frame."""
    warnings = tuple(check_speech(audio, source))
    fingerprint = audio_sha256(audio)
    content = content_features(
        encoder, audio, n_frames, config.language, config.content_output, config.chunk_s, config.context_s
    )
    content_meta = FeatureMeta(
        kind="content", encoder=encoder.name, representation=content.representation, shape=content.values.shape,
        dim=content.values.shape[2], window=STEPS_PER_FRAME, rate_hz=AUDIO_SAMPLE_RATE / ENCODER_STRIDE,
        fps=VIDEO_FPS, sample_rate=AUDIO_SAMPLE_RATE, language=config.language, audio_sha256=fingerprint,
        stand_in=encoder.stand_in, units=content.units,
    )
    save_features(out_dir / CONTENT_NAME, content.values, content_meta)

    mel_meta = save_mel_windows(
        out_dir / MEL_NAME, log_mel_windows(audio, n_frames, window=MEL_WINDOW),
        "log-mel (Wav2Lip convention: 16 kHz, n_fft 800, hop 200, 80 bins, [-4, 4])", config.language, fingerprint,
    )
    return AudioFeatureSummary(content=content_meta, mel=mel_meta, warnings=warnings)
