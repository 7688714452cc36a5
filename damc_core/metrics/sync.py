"""Lip-sync metrics: SyncNet's LSE-D / LSE-C / AV offset as syncnet_python computes them, and our own expert's
confidence computed with the same statistics.

SyncNet (Chung & Zisserman 2016, the `syncnet_v2.model` of joonson/syncnet_python), re-implemented here without
python_speech_features or the repository's scripts, follows syncnet_python's `SyncNetInstance.evaluate`:

* Video: 25 fps face crops of 224 x 224 (run_pipeline.py's crops), fed as BGR (cv2.imread) float values in 0..255
  (no normalisation), one window of 5 consecutive frames (B, 3, 5, 224, 224) per start frame v.
* Audio: 16 kHz 16-bit PCM (scipy's wavfile of ffmpeg's pcm_s16le, i.e. sample values in -32768..32767), 13-d MFCC
  at 100 Hz by python_speech_features' defaults (`mfcc`), 4 MFCC steps per video frame: the audio window of start
  frame v is MFCC columns [4 v, 4 v + 20), fed as (B, 1, 13, 20).
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

`expert_scores` runs the same statistics on our own lip-sync expert (damc_core.sync.models.SyncExpert, distance
1 - similarity). That is OUR expert's confidence, not SyncNet's: its numbers are not comparable with the paper's Sync
(LSE-C), but it needs no downloaded weights.
"""

from __future__ import annotations

import decimal
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F
from torch import nn

from damc_core.errors import InputError
from damc_core.media import AUDIO_SAMPLE_RATE, SAMPLES_PER_FRAME
from damc_core.sync.data import SYNC_FRAMES
from damc_core.sync.models import SyncExpert

SYNCNET_FILE = "syncnet_v2.model"
"""File name of the official SyncNet weights (a state dict saved by torch.save)."""

SYNCNET_URL = f"http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/{SYNCNET_FILE}"
"""Where syncnet_python's download_model.sh fetches `SYNCNET_FILE` from."""

VIDEO_WINDOW = 5
"""Consecutive video frames in one SyncNet input."""

MFCC_STEPS_PER_FRAME = 4
"""MFCC steps (10 ms) per video frame (40 ms)."""

MFCC_WINDOW = VIDEO_WINDOW * MFCC_STEPS_PER_FRAME
"""MFCC steps in one SyncNet audio input (20)."""

CROP_SIZE = 224
"""Side of SyncNet's square face crops."""

VSHIFT = 15
"""Offsets searched, in frames either way (run_syncnet.py's default and the usual LSE evaluation setting)."""

BATCH = 20
"""Windows per SyncNet forward pass (run_syncnet.py's default batch_size)."""

MIN_SYNCNET_FRAMES = VIDEO_WINDOW + 1
"""Fewest frames (and 640-sample audio frames) `syncnet_scores` accepts: syncnet_python scores min_length - 5
windows, so 6 frames give one window."""

PCM16_SCALE = 32768.0
"""Full scale of 16-bit PCM: float audio in [-1, 1] is scaled by this to the sample values syncnet_python reads."""


class MissingSyncNetWeights(InputError, FileNotFoundError):
    """The SyncNet weights file is absent; the message names the file and where to download it."""


# ---------------------------------------------------------------------------------------------------------------------
# MFCC (python_speech_features.mfcc)
# ---------------------------------------------------------------------------------------------------------------------


def _round_half_up(value: float) -> int:
    """Round to the nearest integer, halves away from zero, on the exact binary value (python_speech_features')."""
    return int(decimal.Decimal(value).quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------------------------------
# SyncNet
# ---------------------------------------------------------------------------------------------------------------------


def _conv_bn_relu(conv: nn.Module, channels: int, norm: type[nn.Module]) -> list[nn.Module]:
    return [conv, norm(channels), nn.ReLU()]


class SyncNet(nn.Module):
    """syncnet_python's `S` (SyncNetModel.py) with the same module names and indices, so `syncnet_v2.model` loads.

    netcnnaud: MFCC (B, 1, 13, 20) -> (B, 512, 1, 1); netfcaud: -> (B, 1024).
    netcnnlip: BGR 0..255 frames (B, 3, 5, 224, 224) -> (B, 512, 1, 1, 1); netfclip: -> (B, 1024).
    The identity MaxPool2d(1) at netcnnaud.3 is kept so that the indices match.
    """

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        bn2, bn3 = nn.BatchNorm2d, nn.BatchNorm3d
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(1, 64, 3, 1, 1), 64, bn2),  # 0-2
            nn.MaxPool2d(kernel_size=1, stride=1),  # 3
            *_conv_bn_relu(nn.Conv2d(64, 192, 3, 1, 1), 192, bn2),  # 4-6
            nn.MaxPool2d(kernel_size=3, stride=(1, 2)),  # 7
            *_conv_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384, bn2),  # 8-10
            *_conv_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256, bn2),  # 11-13
            *_conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256, bn2),  # 14-16
            nn.MaxPool2d(kernel_size=3, stride=2),  # 17
            *_conv_bn_relu(nn.Conv2d(256, 512, (5, 4)), 512, bn2),  # 18-20
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2)), 96, bn3),  # 0-2
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 3
            *_conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, bn3),  # 4-6
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 7
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),  # 8-10
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),  # 11-13
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),  # 14-16
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 17
            *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6)), 512, bn3),  # 18-20
        )

    def forward_aud(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        """MFCC windows (B, 1, 13, 20) -> audio embeddings (B, embed_dim)."""
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """BGR frame windows (B, 3, 5, 224, 224), values 0..255 -> video embeddings (B, embed_dim)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNet:
    """SyncNet with the weights of `path` (syncnet_python's `syncnet_v2.model`), in eval mode on `device`.

    Raises MissingSyncNetWeights (naming the file and its download URL) if `path` does not exist, and ValueError if
    the file's keys do not match the architecture (BatchNorm `num_batches_tracked` counters may be absent: files saved
    by old PyTorch versions lack them).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingSyncNetWeights(
            f"SyncNet weights not found at {path}. Download {SYNCNET_FILE} from {SYNCNET_URL} "
            f"(what joonson/syncnet_python's download_model.sh fetches) and place it there."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    model = SyncNet()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path} does not match SyncNet: missing keys {missing}, unexpected keys {unexpected}")
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------------------------------
# Offsets and statistics
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# SyncNet scores of a clip
# ---------------------------------------------------------------------------------------------------------------------


def _device_of(module: nn.Module) -> torch.device:
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
    device = _device_of(model)
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


# ---------------------------------------------------------------------------------------------------------------------
# Our own expert's confidence
# ---------------------------------------------------------------------------------------------------------------------


def expert_min_frames(vshift: int = VSHIFT) -> int:
    """Fewest frames `expert_scores` accepts: one 5-frame window whose centre has a mel window at every offset."""
    return max(SYNC_FRAMES, 2 * vshift + 1)


def stack_windows(lower_faces: np.ndarray, starts: np.ndarray) -> torch.Tensor:
    """The 5-frame windows starting at `starts` of (T, H, W, 3) uint8 frames as (B, 15, H, W) float in [0, 1],
    frame-major channels (RGB of the first frame first): the expert's training layout (damc_core.sync.data)."""
    windows = lower_faces[np.asarray(starts)[:, None] + np.arange(SYNC_FRAMES)]  # (B, 5, H, W, 3)
    batch, frames, height, width, _ = windows.shape
    tensor = torch.from_numpy(np.ascontiguousarray(windows)).permute(0, 1, 4, 2, 3)
    return tensor.reshape(batch, 3 * frames, height, width).float().div_(255.0)


def expert_scores(
    expert: nn.Module, lower_faces: np.ndarray, mel_windows: np.ndarray, vshift: int = VSHIFT, batch: int = 256
) -> SyncScores:
    """OUR lip-sync expert's confidence (LSE-C-like), offset and minimum distance of one clip: the statistics of
    `sync_scores` on distances 1 - expert(faces, mel). NOT SyncNet's LSE-C / LSE-D: not comparable with the paper's
    Sync, but available offline.

    lower_faces (T, S/2, S, 3) uint8 RGB and mel_windows (T, n_mels, width), one per frame, aligned frame by frame as
    in damc_core.sync.data.ClipArrays; `expert` is called as expert(faces (B, 15, S/2, S) in [0, 1], mel (B, 1,
    n_mels, width)) -> similarity (B,) (a SyncExpert, or anything with that signature). As in training, the window
    of frames t..t+4 is in sync with the mel window of its centre frame t + 2; offset o pairs it with the mel window
    of frame t + 2 + o, so column j = o + vshift and, as for SyncNet, av_offset = -o at the best o (+d: the audio is d
    frames ahead of the video).

    Ends: pairs whose mel frame falls outside the clip are skipped by scoring only the windows that have a mel window
    at every offset (centres vshift .. T - 1 - vshift), so every offset averages over the same windows. That needs
    T >= `expert_min_frames(vshift)` (2 vshift + 1, at least 5); fewer raise ValueError.

    A SyncExpert is evaluated through its encoders once per window and per mel frame (the same similarity as its
    forward); other experts are called on every (window, offset) pair, `batch` pairs at a time. The expert runs in
    eval mode (restored afterwards).
    """
    faces = np.asarray(lower_faces)
    mels = np.asarray(mel_windows, dtype=np.float32)
    if faces.ndim != 4 or faces.shape[3] != 3 or faces.dtype != np.uint8:
        raise ValueError(f"lower_faces must be uint8 (T, H, W, 3), got {faces.dtype} {faces.shape}")
    if mels.ndim != 3 or len(mels) != len(faces):
        raise ValueError(f"mel_windows must be one (n_mels, width) window per frame, got {mels.shape} for "
                         f"{len(faces)} frames")
    if vshift < 0 or batch < 1:
        raise ValueError(f"need vshift >= 0 and batch >= 1, got vshift={vshift}, batch={batch}")
    n_frames, centre = len(faces), SYNC_FRAMES // 2
    if n_frames < expert_min_frames(vshift):
        raise ValueError(f"expert scores with vshift {vshift} need at least {expert_min_frames(vshift)} frames (a "
                         f"{SYNC_FRAMES}-frame window with a mel window at every offset), got {n_frames}")
    first = max(0, vshift - centre)
    last = min(n_frames - SYNC_FRAMES, n_frames - 1 - centre - vshift)
    starts = np.arange(first, last + 1)
    offsets = np.arange(-vshift, vshift + 1)
    mel_index = starts[:, None] + centre + offsets[None, :]  # (n_windows, 2 vshift + 1), all within the clip
    device = _device_of(expert)
    was_training = expert.training
    expert.eval()
    try:
        with torch.no_grad():
            if isinstance(expert, SyncExpert):
                similarity = _expert_similarity_by_embedding(expert, faces, mels, starts, mel_index, batch, device)
            else:
                similarity = _expert_similarity_by_pair(expert, faces, mels, starts, mel_index, batch, device)
    finally:
        expert.train(was_training)
    return sync_scores(1.0 - similarity)


def _expert_similarity_by_embedding(
    expert: SyncExpert,
    faces: np.ndarray,
    mels: np.ndarray,
    starts: np.ndarray,
    mel_index: np.ndarray,
    batch: int,
    device: torch.device,
) -> np.ndarray:
    """SyncExpert.forward's similarity for every pair, from each window's and each mel frame's embedding once."""
    face_emb = torch.cat([
        F.normalize(F.relu(expert.face_encoder(stack_windows(faces, chunk).to(device))), dim=1).cpu()
        for chunk in np.array_split(starts, -(-len(starts) // batch))
    ])
    frames = np.arange(mel_index.min(), mel_index.max() + 1)
    audio_emb = torch.cat([
        F.normalize(F.relu(expert.audio_encoder(torch.from_numpy(mels[chunk]).unsqueeze(1).to(device))), dim=1).cpu()
        for chunk in np.array_split(frames, -(-len(frames) // batch))
    ])
    pairs = audio_emb[torch.from_numpy(mel_index - frames[0])]  # (n_windows, offsets, D)
    return (face_emb[:, None, :] * pairs).sum(dim=-1).double().numpy()


def _expert_similarity_by_pair(
    expert: nn.Module,
    faces: np.ndarray,
    mels: np.ndarray,
    starts: np.ndarray,
    mel_index: np.ndarray,
    batch: int,
    device: torch.device,
) -> np.ndarray:
    """expert(faces, mel) of every (window, offset) pair, `batch` pairs per call."""
    pair_starts = np.repeat(starts, mel_index.shape[1])
    pair_mels = mel_index.reshape(-1)
    scores = []
    for lo in range(0, len(pair_starts), batch):
        face_batch = stack_windows(faces, pair_starts[lo : lo + batch]).to(device)
        mel_batch = torch.from_numpy(mels[pair_mels[lo : lo + batch]]).unsqueeze(1).to(device)
        scores.append(expert(face_batch, mel_batch).reshape(-1).double().cpu())
    return torch.cat(scores).numpy().reshape(mel_index.shape)
