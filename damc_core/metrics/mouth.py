"""How far a face's mouth is open, measured on video frames, and how well two such signals agree."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from damc_core.metrics.image import detect_landmarks

INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
"""iBUG-68 inner-lip points facing each other across the mouth (upper, lower)."""
MIN_FRAMES = 3
"""Fewest frames a correlation is computed from."""


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T, 68, 2) landmarks -> (T,) mean distance in pixels between the inner lips (NaN where landmarks are NaN)."""
    upper = landmarks[:, [pair[0] for pair in INNER_LIP_PAIRS]]
    lower = landmarks[:, [pair[1] for pair in INNER_LIP_PAIRS]]
    return np.linalg.norm(upper - lower, axis=-1).mean(axis=1)


def detected_mouth_opening(frames: Iterable[np.ndarray]) -> np.ndarray:
    """(T,) inner-lip opening of the largest face in each RGB frame (MediaPipe), NaN where no face is found."""
    return mouth_opening(detect_landmarks(frames))


def mean_intensity(frames: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """(T,) mean grey level in [0, 255] of (T, H, W, 3) frames inside rect = (col0, row0, col1, row1); a mouth that
    opens shows its dark inside, so this follows the opening without landmarks."""
    col0, row0, col1, row1 = rect
    return frames[:, row0:row1, col0:col1].astype(np.float64).mean(axis=(1, 2, 3))


def correlation(first: np.ndarray, second: np.ndarray) -> float | None:
    """Pearson correlation over the frames where both are finite; None with fewer than MIN_FRAMES such frames or
    when either signal is constant there."""
    finite = np.isfinite(first) & np.isfinite(second)
    a, b = np.asarray(first, np.float64)[finite], np.asarray(second, np.float64)[finite]
    if len(a) < MIN_FRAMES or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])
