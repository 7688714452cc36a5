"""Lip-sync error as syncnet_python computes it: LSE-D / LSE-C / AV offset statistics, and SyncNet's scores of a clip.

SyncNet (damc_core.metrics.syncnet), fed as syncnet_python's `SyncNetInstance.evaluate` feeds it, without
python_speech_features or the repository's scripts:

* Video: 25 fps face crops of 224 x 224 (run_pipeline.py's crops), fed as BGR (cv2.imread) float values in 0..255
  (no normalisation), one window of 5 consecutive frames (B, 3, 5, 224, 224) per start frame v.
* Audio: 16 kHz 16-bit PCM (scipy's wavfile of ffmpeg's pcm_s16le, i.e. sample values in -32768..32767), 13-d MFCC
  at 100 Hz by python_speech_features' defaults (damc_core.metrics.mfcc), 4 MFCC steps per video frame: the audio
  window of start frame v is MFCC columns [4 v, 4 v + 20), fed as (B, 1, 13, 20).
* Windows: min_length = min(frames, floor(samples / 640)); start frames v = 0 .. min_length - 6, i.e.
  min_length - 5 windows (syncnet_python stops one window short of the last full one; kept for comparability).
* Distances (`offset_distances`, syncnet_python's calc_pdist): audio embeddings padded with vshift zero vectors at
  both ends; distances[v, j] = ||video[v] - audio[v + j - vshift] + 1e-6|| (torch's pairwise_distance), a zero vector
  standing in for audio windows past either end.
* Statistics (`sync_scores`): mdist = mean over windows of each offset's distances; LSE-D = min(mdist);
  LSE-C = median(mdist) - min(mdist); AV offset = vshift - argmin(mdist). The paper's "Sync" is LSE-C.

AV offset sign convention (syncnet_python's): column j pairs video window v with audio window v + (j - vshift), and
av_offset = vshift - argmin = -(j* - vshift). So av_offset = +d means video window v matches the audio of window
v - d best: the audio is d frames ahead of (earlier than) the video. av_offset = -d: the audio lags the video by d.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from damc_core.media import SAMPLES_PER_FRAME
from damc_core.metrics.mfcc import mfcc, pcm16
from damc_core.metrics.syncnet import CROP_SIZE, MFCC_STEPS_PER_FRAME, MFCC_WINDOW, VIDEO_WINDOW, SyncNet

VSHIFT = 15
"""Offsets searched, in frames either way (run_syncnet.py's default and the usual LSE evaluation setting)."""

BATCH = 20
"""Windows per SyncNet forward pass (run_syncnet.py's default batch_size)."""

MIN_SYNCNET_FRAMES = VIDEO_WINDOW + 1
"""Fewest frames (and 640-sample audio frames) `syncnet_scores` accepts: syncnet_python scores min_length - 5
windows, so 6 frames give one window."""


@dataclass(frozen=True)
class SyncScores:
    """Lip-sync statistics of one clip.

    lse_c: confidence, median over offsets of the mean distance minus its minimum (higher is better).
    lse_d: minimum over offsets of the mean distance (lower is better).
    av_offset: vshift - argmin, in frames; +d: the audio is d frames ahead of the video, -d: d frames behind.
    frames: number of video windows (rows of the distance matrix) the means are taken over.
    """

    lse_c: float
    lse_d: float
    av_offset: int
    frames: int


def sync_scores(distances: np.ndarray) -> SyncScores:
    """SyncScores of a distance matrix (n_windows, 2 vshift + 1), column j holding offset j - vshift, as
    syncnet_python's evaluate: mdist = mean over windows; LSE-D = min(mdist); LSE-C = median(mdist) - LSE-D;
    av_offset = vshift - (first) argmin(mdist). Means in float64; the number of offsets is odd, so the median is the
    middle value (torch.median's)."""
    distances = np.asarray(distances, dtype=np.float64)
    if distances.ndim != 2 or distances.shape[0] < 1 or distances.shape[1] % 2 == 0:
        raise ValueError(f"distances must be (n_windows >= 1, 2 vshift + 1), got shape {distances.shape}")
    if not np.isfinite(distances).all():
        raise ValueError("distances must be finite")
    vshift = distances.shape[1] // 2
    mean = distances.mean(axis=0)
    best = int(np.argmin(mean))
    lse_d = float(mean[best])
    median = float(np.sort(mean)[(mean.size - 1) // 2])
    return SyncScores(lse_c=median - lse_d, lse_d=lse_d, av_offset=vshift - best, frames=distances.shape[0])


def offset_distances(
    video_embeddings: np.ndarray | torch.Tensor, audio_embeddings: np.ndarray | torch.Tensor, vshift: int = VSHIFT
) -> np.ndarray:
    """syncnet_python's calc_pdist: distances (T, 2 vshift + 1) with [v, j] = ||video[v] - audio[v + j - vshift]
    + 1e-6|| (torch's pairwise_distance), audio padded with `vshift` zero vectors at both ends, so offsets past either
    end compare with a zero embedding. Computed in the embeddings' dtype (float32 for SyncNet's)."""
    video = torch.as_tensor(video_embeddings)
    audio = torch.as_tensor(audio_embeddings)
    if video.ndim != 2 or video.shape != audio.shape or len(video) == 0:
        raise ValueError(f"need video and audio embeddings of the same (T >= 1, D) shape, got {video.shape} and "
                         f"{audio.shape}")
    if vshift < 0:
        raise ValueError(f"vshift must be non-negative, got {vshift}")
    dtype = torch.promote_types(video.dtype, audio.dtype)
    video, audio = video.to(dtype), audio.to(dtype)
    padded = F.pad(audio, (0, 0, vshift, vshift))
    columns = torch.arange(2 * vshift + 1)
    rows = []
    for start in range(0, len(video), 256):
        chunk = video[start : start + 256]
        index = torch.arange(start, start + len(chunk))[:, None] + columns[None, :]
        rows.append(F.pairwise_distance(chunk[:, None, :].expand(-1, columns.numel(), -1), padded[index]))
    return torch.cat(rows).numpy()


def module_device(module: nn.Module) -> torch.device:
    """The device of `module`'s parameters (the CPU for a module without any)."""
    return next(iter(module.parameters()), torch.empty(0)).device


def syncnet_scores(
    model: SyncNet, face_crops: np.ndarray, audio: np.ndarray, batch: int = BATCH, vshift: int = VSHIFT
) -> SyncScores:
    """SyncNet's LSE-C / LSE-D / AV offset of 25 fps face crops (T, 224, 224, 3) uint8 RGB and their 16 kHz mono
    audio (float in [-1, 1], or int16 PCM), as syncnet_python's evaluate computes them on the same crops and audio.

    Frames are fed BGR in 0..255; the audio's 16-bit PCM values (`pcm16`) go through `mfcc`; with
    min_length = min(T, floor(len(audio) / 640)), start frames v = 0 .. min_length - 6 are scored (window v: frames
    v..v+4 and MFCC steps [4 v, 4 v + 20)), then `offset_distances` and `sync_scores`. Raises ValueError when
    min_length < MIN_SYNCNET_FRAMES (6), which leaves no window. The model runs in eval mode (restored afterwards).
    """
    crops = np.asarray(face_crops)
    if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3) or crops.dtype != np.uint8:
        raise ValueError(f"face_crops must be uint8 (T, {CROP_SIZE}, {CROP_SIZE}, 3) RGB, got {crops.dtype} "
                         f"{crops.shape}")
    samples = pcm16(audio)
    if samples.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {samples.shape}")
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    min_length = min(len(crops), len(samples) // SAMPLES_PER_FRAME)
    if min_length < MIN_SYNCNET_FRAMES:
        raise ValueError(
            f"SyncNet needs at least {MIN_SYNCNET_FRAMES} frames of video and of audio ({SAMPLES_PER_FRAME} samples "
            f"each) for one {VIDEO_WINDOW}-frame window as syncnet_python counts them; got {len(crops)} frames and "
            f"{len(samples)} samples ({len(samples) // SAMPLES_PER_FRAME} frames)"
        )
    windows = min_length - VIDEO_WINDOW
    cepstra = torch.from_numpy(mfcc(samples).T.astype(np.float32))  # (13, n)
    device = module_device(model)
    was_training = model.training
    model.eval()
    video_feats, audio_feats = [], []
    try:
        with torch.no_grad():
            for start in range(0, windows, batch):
                starts = range(start, min(windows, start + batch))
                clip = torch.from_numpy(np.ascontiguousarray(crops[start : starts[-1] + VIDEO_WINDOW, ..., ::-1]))
                clip = clip.permute(3, 0, 1, 2).float()  # (3, frames, H, W) BGR
                lips = torch.stack([clip[:, v - start : v - start + VIDEO_WINDOW] for v in starts])
                auds = torch.stack([
                    cepstra[None, :, MFCC_STEPS_PER_FRAME * v : MFCC_STEPS_PER_FRAME * v + MFCC_WINDOW] for v in starts
                ])
                video_feats.append(model.forward_lip(lips.to(device)).float().cpu())
                audio_feats.append(model.forward_aud(auds.to(device)).float().cpu())
    finally:
        model.train(was_training)
    return sync_scores(offset_distances(torch.cat(video_feats), torch.cat(audio_feats), vshift))
