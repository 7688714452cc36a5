"""A prepared subject (face_prep's ER-NeRF folder) and its audio features, loaded for NeRF training and rendering."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from damc_core.audio.extract import CONTENT_NAME, MEL_NAME
from damc_core.audio.features import FeatureMismatchError, load_features
from damc_core.errors import InputError
from damc_core.face.parsing import Part, rgb_to_parsing
from damc_core.fusion import window_indices
from damc_core.sync.models import DynamicSyncEncoder

FACE_MARGIN = 0.1
"""Margin added on each side of the landmarks' box, as a fraction of its size."""
FOREHEAD = 0.35
"""The face box reaches this fraction of the landmarks' height above the brows (landmarks stop there)."""
LIPS = slice(48, 68)
LIPS_MARGIN = 0.3
"""Margin around the lip landmarks, as a fraction of the mouth's width."""


class SubjectDataError(InputError, ValueError):
    """A prepared subject folder that is incomplete or inconsistent; the message names the file."""


@dataclass(frozen=True)
class Camera:
    """The pinhole camera shared by all frames (transforms_*.json: rays through pixel centres at (c+0.5, r+0.5))."""

    focal: float
    """Focal length in pixels."""
    cx: float
    """Principal point x in transforms_*.json's convention."""
    cy: float
    """Principal point y in transforms_*.json's convention."""
    width: int
    """Image width in pixels."""
    height: int
    """Image height in pixels."""


@dataclass(frozen=True)
class SubjectSplit:
    """The frames of one split (train or val) in memory."""

    frame_ids: np.ndarray
    """(n,) indices of the frames in the video, which are also the rows of the audio features."""
    images: torch.Tensor
    """(n, H, W, 3) uint8 ground-truth frames (gt_imgs: background replaced by the plate)."""
    backgrounds: torch.Tensor
    """(n, H, W, 3) uint8 what the head is composited over: the frame's neck and torso over the background plate."""
    head_masks: torch.Tensor
    """(n, H, W) bool: the pixels face parsing labels head (where the head's rays should be opaque)."""
    camera_to_world: torch.Tensor
    """(n, 4, 4) float32 OpenGL camera-to-world matrices (world = the face template frame, decimetres)."""
    blink: torch.Tensor
    """(n,) float32 eyelid closure, 0 open .. 1 shut."""
    face_rects: np.ndarray
    """(n, 4) int (col0, row0, col1, row1) half-open box of the face, forehead included."""
    lips_rects: np.ndarray
    """(n, 4) int box of the lips."""

    def __len__(self) -> int:
        return len(self.frame_ids)

    def to(self, device: torch.device | str) -> SubjectSplit:
        """The split with its tensors on `device` (the frames go there once, as uint8)."""
        return replace(self, **{name: value.to(device) for name, value in vars(self).items()
                                if isinstance(value, torch.Tensor)})


def read_camera(transforms: dict) -> Camera:
    """The camera of a transforms_*.json dict."""
    return Camera(float(transforms["focal_len"]), float(transforms["cx"]), float(transforms["cy"]),
                  int(transforms["w"]), int(transforms["h"]))


def load_split(subject_dir: Path, split: str) -> tuple[Camera, SubjectSplit]:
    """Load `transforms_<split>.json` and its frames from a face_prep folder."""
    transforms = json.loads(_required(subject_dir / f"transforms_{split}.json").read_text(encoding="utf-8"))
    camera = read_camera(transforms)
    frames = transforms["frames"]
    if not frames:
        raise SubjectDataError(f"{subject_dir / f'transforms_{split}.json'} lists no frames")
    ids = np.array([frame["img_id"] for frame in frames], dtype=np.int64)
    landmarks = np.load(_required(subject_dir / "landmarks.npy"))
    if ids.max() >= len(landmarks):
        raise SubjectDataError(f"{subject_dir}: frame {ids.max()} has no landmarks ({len(landmarks)} frames)")
    plate = _read_rgb(subject_dir / "bc.jpg")
    images = np.stack([_read_rgb(subject_dir / "gt_imgs" / f"{index}.jpg") for index in ids])
    backgrounds = np.stack([_torso_over(plate, subject_dir / "torso_imgs" / f"{index}.png") for index in ids])
    head_masks = np.stack([_head_mask(subject_dir / "parsing" / f"{index}.png") for index in ids])
    if images.shape[1:3] != (camera.height, camera.width):
        raise SubjectDataError(f"{subject_dir}: frames are {images.shape[2]}x{images.shape[1]} but the camera is "
                               f"{camera.width}x{camera.height}")
    split_landmarks = landmarks[ids]
    return camera, SubjectSplit(
        frame_ids=ids,
        images=torch.from_numpy(images),
        backgrounds=torch.from_numpy(backgrounds),
        head_masks=torch.from_numpy(head_masks),
        camera_to_world=torch.tensor([frame["transform_matrix"] for frame in frames], dtype=torch.float32),
        blink=torch.tensor([frame.get("blink", 0.0) for frame in frames], dtype=torch.float32),
        face_rects=np.stack([face_rect(points, camera) for points in split_landmarks]),
        lips_rects=np.stack([lips_rect(points, camera) for points in split_landmarks]),
    )


def face_rect(landmarks: np.ndarray, camera: Camera) -> np.ndarray:
    """(col0, row0, col1, row1) of 68 landmarks with a margin, extended upwards over the forehead."""
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    size = high - low
    low = low - FACE_MARGIN * size - np.array([0.0, FOREHEAD * size[1]])
    high = high + FACE_MARGIN * size
    return _clamped_rect(low, high, camera)


def lips_rect(landmarks: np.ndarray, camera: Camera) -> np.ndarray:
    """(col0, row0, col1, row1) of the lip landmarks with a margin of LIPS_MARGIN mouth widths."""
    lips = landmarks[LIPS]
    low, high = lips.min(axis=0), lips.max(axis=0)
    margin = LIPS_MARGIN * (high[0] - low[0])
    return _clamped_rect(low - margin, high + margin, camera)


def _clamped_rect(low: np.ndarray, high: np.ndarray, camera: Camera) -> np.ndarray:
    col0, row0 = np.floor(low).astype(int)
    col1, row1 = np.ceil(high).astype(int) + 1
    col0, col1 = np.clip([col0, col1], 0, camera.width)
    row0, row1 = np.clip([row0, row1], 0, camera.height)
    return np.array([col0, row0, max(col1, col0 + 1), max(row1, row0 + 1)])


def _required(path: Path) -> Path:
    if not path.exists():
        raise SubjectDataError(f"{path} is missing: is {path.parent} a face_prep output folder?")
    return path


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(_required(path)), cv2.IMREAD_COLOR)
    if image is None:
        raise SubjectDataError(f"{path} is not a readable image")
    return np.ascontiguousarray(image[..., ::-1])


def _head_mask(parsing_png: Path) -> np.ndarray:
    """The head pixels of a parsing image (ER-NeRF's colours)."""
    image = _read_rgb(parsing_png)
    try:
        return rgb_to_parsing(image) == Part.HEAD
    except ValueError as error:
        raise SubjectDataError(f"{parsing_png} is not a parsing image: {error}") from error


def _torso_over(plate: np.ndarray, torso_png: Path) -> np.ndarray:
    """The RGBA torso image composited over the background plate."""
    rgba = cv2.imread(str(_required(torso_png)), cv2.IMREAD_UNCHANGED)
    if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise SubjectDataError(f"{torso_png} is not an RGBA image")
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    torso = rgba[..., 2::-1].astype(np.float32)
    return (torso * alpha + plate.astype(np.float32) * (1.0 - alpha)).round().astype(np.uint8)


@dataclass(frozen=True)
class FrameAudio:
    """Both audio features of one audio, one row per video frame: what the fusion reads."""

    content: torch.Tensor
    """(T, content_dim) float32 E_c features, the 2 encoder steps of a frame concatenated."""
    dynamic: torch.Tensor
    """(T, dynamic_dim) float32 E_d features of the frame's mel window."""

    def __len__(self) -> int:
        return len(self.content)

    def windows(self, frames: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, window, content_dim) and (B, window, dynamic_dim) centred on `frames` (clamped at the ends)."""
        indices = window_indices(frames, len(self), window)
        return self.content[indices], self.dynamic[indices]


def dynamic_features(encoder: DynamicSyncEncoder, mel: np.ndarray, chunk: int = 256) -> torch.Tensor:
    """E_d over (T, 80, 16) mel windows -> (T, dim), in chunks, without gradients."""
    device = next(encoder.parameters()).device
    windows = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).unsqueeze(1).to(device)
    encoder.eval()
    with torch.no_grad():
        return torch.cat([encoder(windows[start:start + chunk]) for start in range(0, len(windows), chunk)])


def frame_audio(content: np.ndarray, mel: np.ndarray, encoder: DynamicSyncEncoder) -> FrameAudio:
    """FrameAudio from (T, 2, dim) content features and (T, 80, 16) mel windows of the same audio."""
    if len(content) != len(mel):
        raise FeatureMismatchError(f"content features have {len(content)} frames but mel windows {len(mel)}")
    dynamic = dynamic_features(encoder, mel)
    flat = torch.from_numpy(np.ascontiguousarray(content, dtype=np.float32)).reshape(len(content), -1)
    return FrameAudio(content=flat.to(dynamic.device), dynamic=dynamic)


def load_subject_audio(features_dir: Path, n_frames: int, encoder: DynamicSyncEncoder) -> tuple[FrameAudio, dict]:
    """The subject's audio_features output as FrameAudio, checked against the video's frame count; and the content
    features' meta (as a dict) for the model's meta file."""
    content, meta = load_features(features_dir / CONTENT_NAME, frames=n_frames)
    mel, _ = load_features(features_dir / MEL_NAME, frames=n_frames)
    return frame_audio(content, mel, encoder), {
        "encoder": meta.encoder, "representation": meta.representation, "language": meta.language,
        "dim": meta.dim, "window": meta.window, "stand_in": meta.stand_in,
    }
