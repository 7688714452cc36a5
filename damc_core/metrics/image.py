"""Frame-level image metrics of rendered against ground-truth video: PSNR, LPIPS and LMD (FID: metrics/fid.py).

Definitions follow DESIGN.md "Metric definitions", so that numbers compare with the field's:

- PSNR: full frame in [0, 1], -10 log10(MSE) per frame (`psnr_per_frame`); the mean over frames is the score.
- LPIPS: `damc_core.metrics.lpips.LPIPS` (v0.1, AlexNet), full frame in [-1, 1] (`lpips_per_frame`).
- LMD: 68-point landmarks, mouth points 48-67 only, each set mean-centred, mean L2 distance in pixels of the evaluated
  resolution (`lmd_per_frame`; landmarks from `detect_landmarks`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch

MOUTH = slice(48, 68)
"""iBUG-68 indices of the mouth points (outer lips 48-59, inner lips 60-67) that LMD compares."""


# ---------------------------------------------------------------------------------------------------------------- PSNR


MAX_PSNR = 100.0
"""PSNR reported for identical images (see psnr_per_frame)."""


def psnr_of_mse(mse: float, max_psnr: float = MAX_PSNR) -> float:
    """PSNR in dB, -10 log10(mse), of a mean squared error of values in [0, 1], capped at `max_psnr`."""
    return max_psnr if mse <= 10 ** (-max_psnr / 10) else min(-10.0 * math.log10(mse), max_psnr)


def psnr_per_frame(rendered: np.ndarray, truth: np.ndarray, max_psnr: float = MAX_PSNR) -> np.ndarray:
    """(T,) PSNR in dB of each rendered frame against its ground truth, both (T, H, W, 3) uint8.

    Full frame, pixel values scaled to [0, 1]: -10 log10(MSE) over all pixels and channels. The squared errors are
    summed in exact integer arithmetic, so the result does not depend on summation order.

    The cap: identical frames (MSE 0) would give +inf, which no mean over frames survives, so every value is clipped
    to at most ``max_psnr`` (100 dB by default): identical frames give exactly ``max_psnr``. One unit of difference in
    one channel of one pixel of a 512x512 frame is already ~107 dB, so the cap only touches (near-)identical frames.
    Raises ValueError when the shapes differ (naming both), are not (T, H, W, 3), or the dtype is not uint8.
    """
    rendered, truth = _frame_pair(np.ascontiguousarray(rendered), truth)
    count = rendered.shape[1] * rendered.shape[2] * rendered.shape[3]
    out = np.empty(len(rendered), dtype=np.float64)
    for index, (a, b) in enumerate(zip(rendered, truth, strict=True)):
        diff = a.astype(np.int32) - b.astype(np.int32)
        squared = int(np.einsum("ijk,ijk->", diff, diff, dtype=np.int64))
        out[index] = max_psnr if squared == 0 else psnr_of_mse(squared / (count * 255.0**2), max_psnr)
    return out


STILL_FRAME_BASELINES = {"mean_training_frame": "the mean of the training frames",
                         "last_training_frame": "the last training frame"}
"""The trivial heads any render must beat, each showing one still frame in place of every rendered frame."""


def still_frame_baselines(train: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """(count, H, W, 3) uint8 frames of each STILL_FRAME_BASELINES head, from (n, H, W, 3) uint8 training frames."""
    mean = np.round(train.mean(axis=0, dtype=np.float64)).astype(np.uint8)
    return {"mean_training_frame": np.broadcast_to(mean, (count, *mean.shape)),
            "last_training_frame": np.broadcast_to(train[-1], (count, *mean.shape))}


def _frame_pair(rendered: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two (T, H, W, 3) uint8 arrays, or ValueError naming both shapes / dtypes."""
    rendered, truth = np.asarray(rendered), np.asarray(truth)
    if rendered.shape != truth.shape:
        raise ValueError(f"rendered and ground-truth frames differ in shape: rendered {rendered.shape}, "
                         f"truth {truth.shape}")
    if rendered.ndim != 4 or rendered.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got rendered {rendered.shape}, truth {truth.shape}")
    if rendered.dtype != np.uint8 or truth.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got rendered {rendered.dtype}, truth {truth.dtype}")
    return rendered, truth


# ----------------------------------------------------------------------------------------------------------------- LMD


def lmd_per_frame(rendered_landmarks: np.ndarray, truth_landmarks: np.ndarray) -> np.ndarray:
    """(T,) landmark distance of the mouth, in pixels, between (T, 68, 2) rendered and ground-truth landmarks.

    Mouth points 48-67 only; each frame's 20 points are centred on their own mean (so head translation does not
    count), and the Euclidean distances of corresponding points are averaged. NaN where either frame's mouth has a
    NaN (no face detected). Raises ValueError when the shapes differ or are not (T, 68, 2).
    """
    rendered = np.asarray(rendered_landmarks, dtype=np.float64)
    truth = np.asarray(truth_landmarks, dtype=np.float64)
    if rendered.shape != truth.shape:
        raise ValueError(f"landmark arrays differ in shape: rendered {rendered.shape}, truth {truth.shape}")
    if rendered.ndim != 3 or rendered.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (T, 68, 2), got {rendered.shape}")
    a, b = rendered[:, MOUTH], truth[:, MOUTH]
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return np.linalg.norm(a - b, axis=-1).mean(axis=1)


def detect_landmarks(
    frames: Iterable[np.ndarray],
    backend: Literal["mediapipe", "dlib", "face_alignment"] = "mediapipe",
    device: str = "cpu",
) -> np.ndarray:
    """(T, 68, 2) iBUG-68 landmarks, in pixels, of the largest face in each RGB uint8 frame, NaN where none is found.

    Tracks across frames (one video). Raises damc_core.face.landmarks.LandmarkBackendUnavailable when the backend's
    package or weights are missing. Use the same backend for rendered and ground-truth frames.
    """
    from damc_core.face.landmarks import detect_sequence, make_detector

    with make_detector(backend, max_faces=1, video=True, device=device) as detector:
        landmarks, _, _ = detect_sequence(detector, frames)
    return landmarks


# --------------------------------------------------------------------------------------------------------------- LPIPS


def lpips_per_frame(model: torch.nn.Module, rendered: np.ndarray, truth: np.ndarray, batch: int = 8) -> np.ndarray:
    """(T,) LPIPS distance of each rendered frame to its ground truth, both (T, H, W, 3) uint8, full frame.

    model: a damc_core.metrics.lpips.LPIPS (`load_lpips` for real numbers, `lpips_stand_in` for tests); frames are
    mapped to [-1, 1] as x / 127.5 - 1, NCHW, and fed ``batch`` pairs at a time on the model's device, without
    gradients. Raises ValueError as `psnr_per_frame` does for mismatched frames.
    """
    rendered, truth = _frame_pair(rendered, truth)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    device = next(iter(model.parameters()), torch.empty(0)).device
    out = []
    with torch.no_grad():
        for start in range(0, len(rendered), batch):
            a = _signed_nchw(rendered[start:start + batch], device)
            b = _signed_nchw(truth[start:start + batch], device)
            out.append(model(a, b).double().cpu().numpy().reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)


def _signed_nchw(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1] on device."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
