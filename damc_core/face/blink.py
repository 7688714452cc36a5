"""Eye-blink signal from 68-point landmarks: the eye aspect ratio, normalised per subject (replaces OpenFace's AU45)."""

from __future__ import annotations

import numpy as np

# iBUG-68 eye contours, each ordered p1..p6 as in Soukupova & Cech: outer/inner corner, two upper-lid points, the
# other corner, two lower-lid points (p2 above p6, p3 above p5).
_EYES = (np.arange(36, 42), np.arange(42, 48))


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """(T,) eye aspect ratio of (T, 68, 2) landmarks, the mean over both eyes (Soukupova & Cech, 2016).

    EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|): about 0.25-0.35 for an open eye, near 0 for a closed one; it
    does not depend on the face's size or position in the image.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must have shape (T, 68, 2), got {points.shape}")
    ratios = []
    for eye in _EYES:
        p1, p2, p3, p4, p5, p6 = (points[:, index] for index in eye)
        width = np.linalg.norm(p1 - p4, axis=1)
        if not np.all(width > 0):
            raise ValueError("every eye needs two distinct, finite corners")
        opening = np.linalg.norm(p2 - p6, axis=1) + np.linalg.norm(p3 - p5, axis=1)
        ratios.append(opening / (2.0 * width))
    return np.mean(ratios, axis=0)


def blink_signal(landmarks: np.ndarray, *, open_percentile: float = 90.0, closed_ratio: float = 0.35) -> np.ndarray:
    """(T,) eye closure in [0, 1] from (T, 68, 2) landmarks: 0 = eyes as open as usual, 1 = closed.

    The subject's open eye aspect ratio is the ``open_percentile`` of its EAR over the video; a frame at or above it
    gives 0, one at or below ``closed_ratio`` times it gives 1, linear in between. This stands in for ER-NeRF's eye
    input, OpenFace's AU45 intensity (0..5) which ER-NeRF clips to [0, 2] and divides by 2: the same range and sense,
    already normalised (write 2x this as AU45_r for ER-NeRF's own loader).
    """
    if not 0.0 < open_percentile <= 100.0:
        raise ValueError(f"open_percentile must lie in (0, 100], got {open_percentile}")
    if not 0.0 <= closed_ratio < 1.0:
        raise ValueError(f"closed_ratio must lie in [0, 1), got {closed_ratio}")
    ratios = eye_aspect_ratio(landmarks)
    if len(ratios) == 0:
        raise ValueError("need at least one frame")
    open_ratio = np.percentile(ratios, open_percentile)
    if open_ratio <= 0.0:
        raise ValueError(f"no open eyes to compare with: the {open_percentile}th percentile eye aspect ratio is 0")
    closed = closed_ratio * open_ratio
    return np.clip((open_ratio - ratios) / (open_ratio - closed), 0.0, 1.0)
