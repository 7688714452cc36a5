"""Lip-sync training data: per-clip lower-face crops and mel windows, and the sampler of sync / off-sync batches."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from damc_core.audio.mel import log_mel_windows
from damc_core.clipset import clip_path, read_manifest
from damc_core.errors import InputError
from damc_core.face.landmarks import LandmarkDetector, detect_sequence
from damc_core.media import MediaError, iter_video_frames, probe, read_audio
from damc_core.staging import staged_directory

SYNC_FRAMES = 5
"""Consecutive frames the expert sees at once: 0.2 s at 25 fps, the span of one mel window."""

INDEX_NAME = "clips.json"


class NoFaceError(InputError, ValueError):
    """No face was found in any frame of a clip."""


@dataclass(frozen=True)
class ClipArrays:
    """One clip's training arrays, aligned frame by frame.

    lower_faces: (T, S/2, S, 3) uint8 RGB, the lower half of a square face crop resized to S x S.
    mel: (T, 80, 16) float32, the log-mel window centred on each frame (`log_mel_windows`).
    """

    clip_id: str
    lower_faces: np.ndarray
    mel: np.ndarray

    def __post_init__(self) -> None:
        faces, mel = self.lower_faces, self.mel
        if faces.ndim != 4 or faces.shape[2] != 2 * faces.shape[1] or faces.shape[3] != 3 or faces.dtype != np.uint8:
            raise ValueError(f"{self.clip_id}: faces must be uint8 (T, S/2, S, 3), got {faces.dtype} {faces.shape}")
        if mel.ndim != 3 or len(mel) != len(faces):
            raise ValueError(f"{self.clip_id}: mel must be one (n_mels, window) per frame, got {mel.shape}")

    @property
    def n_frames(self) -> int:
        """Number of video frames T."""
        return len(self.lower_faces)


@dataclass(frozen=True)
class SyncBatch:
    """A batch for the lip-sync expert (faces, mel, label) and the encoder stage (reference, target_mels).

    faces: (B, 15, S/2, S) float in [0, 1], lower faces of frames t..t+4 stacked on channels (RGB of t first).
    mel: (B, 1, 80, 16), the window of frame t+2 (label 1) or of a frame at least `min_offset` away (label 0).
    label: (B,) float, 1 in sync, 0 off sync.
    reference: (B, 15, S/2, S) like faces, from 5 frames of the same clip that do not overlap t..t+4.
    target_mels: (B, 5, 1, 80, 16), the in-sync windows of frames t..t+4.
    index: (B, 4) int64 numpy bookkeeping: clip index, start t, mel frame, reference start.
    """

    faces: torch.Tensor
    mel: torch.Tensor
    label: torch.Tensor
    reference: torch.Tensor
    target_mels: torch.Tensor
    index: np.ndarray


def face_boxes(
    landmarks: np.ndarray, width: int, height: int, margin: float = 0.25, smoothing: int = 5
) -> np.ndarray:
    """Square crop boxes (T, 4) int64 as (x, y, side, side) around each frame's (T, 68, 2) landmarks.

    Each frame's landmark box is centred, made square on its longer side and extended by `margin` times that side on
    every edge; centres and sides are then averaged over a centred window of `smoothing` frames (fewer at the clip's
    ends) and the box is shifted, and shrunk if need be, into the image. Frames without landmarks (NaN) take those of
    the nearest frame with some (the earlier on ties); raises NoFaceError if no frame has any.
    """
    filled = _fill_gaps(landmarks)
    low, high = filled.min(axis=1), filled.max(axis=1)
    centres = (low + high) / 2
    sides = (high - low).max(axis=1) * (1 + 2 * margin)
    centres, sides = _moving_average(centres, smoothing), _moving_average(sides, smoothing)
    sides = np.clip(np.round(sides), 1, min(width, height)).astype(np.int64)
    x = np.clip(np.round(centres[:, 0] - sides / 2), 0, width - sides).astype(np.int64)
    y = np.clip(np.round(centres[:, 1] - sides / 2), 0, height - sides).astype(np.int64)
    return np.stack([x, y, sides, sides], axis=1)


def lower_face(frame: np.ndarray, box: np.ndarray, face_size: int) -> np.ndarray:
    """The lower half (S/2, S, 3) of `frame` cropped to the square `box` (x, y, side, side) and resized to S x S."""
    x, y, side = int(box[0]), int(box[1]), int(box[2])
    crop = cv2.resize(frame[y : y + side, x : x + side], (face_size, face_size), interpolation=cv2.INTER_AREA)
    return crop[face_size // 2 :]


def load_clip_arrays(
    root: str | Path, clip_id: str, detector: LandmarkDetector, face_size: int, margin: float = 0.25
) -> ClipArrays:
    """The lower faces and mel windows of clip `clip_id` of the clip set at `root`.

    The video is decoded twice (landmarks, then crops) so that only the crops are held in memory.
    """
    if face_size < 2 or face_size % 2:
        raise ValueError(f"face_size must be even and positive, got {face_size}")
    path = clip_path(root, clip_id)
    video = probe(path).video
    if video is None:
        raise MediaError(f"clip {clip_id} ({path}) has no video stream")
    landmarks, _, _ = detect_sequence(detector, iter_video_frames(path))
    try:
        boxes = face_boxes(landmarks, video.width, video.height, margin)
    except NoFaceError as error:
        raise NoFaceError(f"clip {clip_id} ({path}): {error}") from error
    faces = [lower_face(frame, box, face_size) for frame, box in zip(iter_video_frames(path), boxes, strict=True)]
    mel = log_mel_windows(read_audio(path), len(faces))
    return ClipArrays(clip_id, np.stack(faces), mel)


def load_clip_set(
    root: str | Path, detector: LandmarkDetector, face_size: int, margin: float = 0.25
) -> list[ClipArrays]:
    """`load_clip_arrays` of every kept clip of the clip set at `root`, in manifest order."""
    clip_ids = read_manifest(root)["clip_id"].tolist()
    return [
        load_clip_arrays(root, clip_id, detector, face_size, margin)
        for clip_id in tqdm(clip_ids, desc="sync data", unit="clip")
    ]


def save_clip_arrays(directory: str | Path, clips: Sequence[ClipArrays]) -> str:
    """Write `clips` to `directory` (replacing it): <clip_id>.faces.npy, <clip_id>.mel.npy and an index of the clip
    order and fingerprint. Returns the fingerprint."""
    digest = fingerprint(clips)
    with staged_directory(Path(directory), "sync_data") as staging:
        for clip in clips:
            np.save(staging / f"{clip.clip_id}.faces.npy", clip.lower_faces)
            np.save(staging / f"{clip.clip_id}.mel.npy", clip.mel)
        index = {"clips": [clip.clip_id for clip in clips], "fingerprint": digest}
        (staging / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return digest


def read_clip_arrays(directory: str | Path) -> list[ClipArrays]:
    """The clips `save_clip_arrays` wrote to `directory`, in their order; raises ValueError if they were altered."""
    directory = Path(directory)
    index = json.loads((directory / INDEX_NAME).read_text())
    clips = [
        ClipArrays(clip_id, np.load(directory / f"{clip_id}.faces.npy"), np.load(directory / f"{clip_id}.mel.npy"))
        for clip_id in index["clips"]
    ]
    if fingerprint(clips) != index["fingerprint"]:
        raise ValueError(f"{directory}: the arrays do not match the fingerprint in {INDEX_NAME}")
    return clips


def fingerprint(clips: Sequence[ClipArrays]) -> str:
    """sha256 (hex) of the clips' ids, array shapes and dtypes and array bytes, in order."""
    digest = hashlib.sha256()
    for clip in clips:
        for array in (clip.lower_faces, clip.mel):
            digest.update(f"{clip.clip_id}\0{array.dtype.str}\0{array.shape}\0".encode())
            digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def split_clips(clips: Sequence[ClipArrays], held_out: int) -> tuple[list[ClipArrays], list[ClipArrays]]:
    """(training, held-out) clips: the last `held_out` clips are held out."""
    if not 1 <= held_out < len(clips):
        raise ValueError(f"cannot hold out {held_out} of {len(clips)} clips and keep at least one for training")
    return list(clips[:-held_out]), list(clips[-held_out:])


def min_clip_frames(min_offset: int) -> int:
    """Fewest frames `sample_batch` accepts in a clip.

    Every start t must allow an off-sync mel frame at least `min_offset` from t+2 (SYNC_FRAMES + 2 min_offset
    frames suffice) and a reference window not overlapping t..t+4 (3 SYNC_FRAMES - 1 frames suffice).
    """
    return max(SYNC_FRAMES + 2 * min_offset, 3 * SYNC_FRAMES - 1)


def sample_batch(
    clips: Sequence[ClipArrays], batch_size: int, rng: np.random.Generator, *, min_offset: int = 5
) -> SyncBatch:
    """A batch whose first half is in sync and second half off sync; deterministic given the state of `rng`.

    Start frames t are drawn uniformly over all clips' valid starts (so clips weigh by their length). Off-sync mel
    frames are drawn uniformly over the clip's frames at least `min_offset` from t+2, reference starts uniformly over
    the clip's starts at least SYNC_FRAMES from t. Raises ValueError for an odd batch size or a clip shorter than
    `min_clip_frames(min_offset)`, naming the clip.
    """
    if batch_size < 2 or batch_size % 2:
        raise ValueError(f"batch_size must be even and at least 2 (half in sync, half off), got {batch_size}")
    if min_offset < 1:
        raise ValueError(f"min_offset must be at least 1, got {min_offset}")
    if not clips:
        raise ValueError("no clips to sample from")
    short = [clip.clip_id for clip in clips if clip.n_frames < min_clip_frames(min_offset)]
    if short:
        raise ValueError(f"clips need at least {min_clip_frames(min_offset)} frames (min_offset {min_offset}): {short}")
    lengths = np.array([clip.n_frames for clip in clips], dtype=np.int64)
    clip_index, start = _draw_starts(lengths - SYNC_FRAMES + 1, batch_size, rng)
    last_frame = lengths[clip_index] - 1
    off_sync = _draw_away_from(start + SYNC_FRAMES // 2, min_offset, last_frame, rng)
    mel_frame = start + SYNC_FRAMES // 2
    mel_frame[batch_size // 2 :] = off_sync[batch_size // 2 :]
    reference_start = _draw_away_from(start, SYNC_FRAMES, last_frame - SYNC_FRAMES + 1, rng)
    index = np.stack([clip_index, start, mel_frame, reference_start], axis=1)
    return _gather(clips, index)


def _fill_gaps(landmarks: np.ndarray) -> np.ndarray:
    """`landmarks` (T, 68, 2) with each frame holding NaN replaced by the nearest complete frame (earlier on ties)."""
    complete = np.flatnonzero(~np.isnan(landmarks).any(axis=(1, 2)))
    if complete.size == 0:
        raise NoFaceError("no face was found in any frame")
    frames = np.arange(len(landmarks))
    after = np.clip(np.searchsorted(complete, frames), 0, complete.size - 1)
    before = np.clip(after - 1, 0, complete.size - 1)
    use_before = frames - complete[before] <= np.abs(complete[after] - frames)
    return landmarks[np.where(use_before, complete[before], complete[after])]


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 over `window` (odd) samples, over the samples there are at the ends."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the smoothing window must be odd and positive, got {window}")
    half, frames = window // 2, np.arange(len(values))
    padded = np.pad(values, [(half, half)] + [(0, 0)] * (values.ndim - 1))
    cumulative = np.concatenate([np.zeros_like(padded[:1]), np.cumsum(padded, axis=0)])
    counts = np.minimum(frames + half, len(values) - 1) - np.maximum(frames - half, 0) + 1
    return (cumulative[window:] - cumulative[:-window]) / counts.reshape(-1, *[1] * (values.ndim - 1))


def _draw_starts(starts_per_clip: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` (clip index, start) pairs drawn uniformly from all clips' starts together."""
    ends = np.cumsum(starts_per_clip)
    flat = rng.integers(ends[-1], size=count)
    clip_index = np.searchsorted(ends, flat, side="right")
    return clip_index, flat - (ends[clip_index] - starts_per_clip[clip_index])


def _draw_away_from(centre: np.ndarray, gap: int, last: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integers drawn uniformly from {0..last} minus (centre - gap, centre + gap), element-wise; none may be empty."""
    below = np.maximum(centre - gap + 1, 0)
    above = np.maximum(last - (centre + gap) + 1, 0)
    draw = rng.integers(below + above)
    return np.where(draw < below, draw, centre + gap + draw - below)


def _gather(clips: Sequence[ClipArrays], index: np.ndarray) -> SyncBatch:
    """The tensors of the batch items whose rows in `index` are (clip index, start, mel frame, reference start)."""
    window = np.arange(SYNC_FRAMES)
    faces, references, mels, target_mels = [], [], [], []
    for clip_index, start, mel_frame, reference_start in index:
        clip = clips[clip_index]
        faces.append(clip.lower_faces[start + window])
        references.append(clip.lower_faces[reference_start + window])
        mels.append(clip.mel[mel_frame])
        target_mels.append(clip.mel[start + window])
    label = np.repeat(np.array([1.0, 0.0], dtype=np.float32), len(index) // 2)
    return SyncBatch(
        faces=_stacked_channels(np.stack(faces)),
        mel=torch.from_numpy(np.stack(mels)).unsqueeze(1),
        label=torch.from_numpy(label),
        reference=_stacked_channels(np.stack(references)),
        target_mels=torch.from_numpy(np.stack(target_mels)).unsqueeze(2),
        index=index,
    )


def _stacked_channels(windows: np.ndarray) -> torch.Tensor:
    """(B, 5, H, W, 3) uint8 frames as (B, 15, H, W) float in [0, 1], frame-major channels (RGB of frame 0 first)."""
    batch, frames, height, width, _ = windows.shape
    tensor = torch.from_numpy(windows).permute(0, 1, 4, 2, 3).reshape(batch, 3 * frames, height, width)
    return tensor.float().div_(255.0)
