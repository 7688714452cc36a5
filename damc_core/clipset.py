"""The on-disk layout of a clip set: `clips/<clip_id>.mp4` (25 fps, 16 kHz mono) plus a `manifest.csv` row per clip.

This is what the HDTF filtering stage writes and the sample stage imitates, and what the lip-sync stages read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from damc_core.errors import InputError

MANIFEST_NAME = "manifest.csv"
CLIPS_FOLDER = "clips"
MANIFEST_COLUMNS = {
    "clip_id": "unique clip name; the video is clips/<clip_id>.mp4",
    "source": "where the clip was cut from (video name, or 'synthetic')",
    "start_s": "start of the clip in its source, seconds",
    "end_s": "end of the clip in its source, seconds",
    "frames": "number of 25 fps video frames",
    "duration_s": "frames / 25",
    "face_size_px": "median width of the face's landmark box, pixels",
    "head_motion": "median per-frame speed of the RIGID_POINTS landmarks relative to the face size",
    "speech_ratio": "fraction of frames with speech",
    "kept": "whether the clip passed every filter",
    "reason": "why the clip was rejected (empty when kept)",
}
RIGID_POINTS = (27, 28, 29, 30, 36, 39, 42, 45)
"""iBUG landmarks that move with the head but not with speech or expression (nose bridge, eye corners): the manifest's
head_motion is their speed."""


def face_size(landmarks: np.ndarray) -> float:
    """The manifest's face_size_px of a face's iBUG-68 landmarks (T, 68, 2) in pixels: the median width of their box
    (NaN for no frames)."""
    points = np.asarray(landmarks, dtype=np.float64)
    return float(np.median(np.ptp(points[:, :, 0], axis=1))) if len(points) else math.nan


def head_motion(landmarks: np.ndarray, frames: Sequence[int] | None = None) -> float:
    """The manifest's head_motion of a face's iBUG-68 landmarks (T, 68, 2) in pixels, seen in the increasing video
    frames `frames` (default 0 .. T - 1): the median over consecutive pairs of the RIGID_POINTS' mean displacement
    divided by the frames between them, over `face_size`. NaN with fewer than two frames."""
    points = np.asarray(landmarks, dtype=np.float64)
    if len(points) < 2:
        return math.nan
    gaps = np.diff(np.arange(len(points)) if frames is None else np.asarray(frames))
    rigid = points[:, list(RIGID_POINTS)]
    speeds = np.linalg.norm(np.diff(rigid, axis=0), axis=2).mean(axis=1) / gaps
    return float(np.median(speeds)) / face_size(points)


class ClipSetError(InputError, ValueError):
    """A clip set on disk is incomplete or malformed."""


def clip_path(root: str | Path, clip_id: str) -> Path:
    """Where the video of `clip_id` lives in the clip set at `root`."""
    return Path(root) / CLIPS_FOLDER / f"{clip_id}.mp4"


def write_manifest(root: str | Path, rows: list[dict]) -> Path:
    """Write the manifest of the clip set at `root`; rows must carry exactly MANIFEST_COLUMNS."""
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    if frame.isna().any().any():
        missing = frame.columns[frame.isna().any()].tolist()
        raise ClipSetError(f"manifest rows lack values for {missing}")
    path = Path(root) / MANIFEST_NAME
    frame.to_csv(path, index=False, float_format="%.4f", lineterminator="\n")
    return path


def read_manifest(root: str | Path, *, kept_only: bool = True) -> pd.DataFrame:
    """Read and check the manifest of the clip set at `root`; by default only the kept clips."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise ClipSetError(f"{path}: no manifest; is {root} a clip set (the output of hdtf_filter or sample)?")
    frame = pd.read_csv(path, keep_default_na=False, dtype={"clip_id": str, "source": str, "reason": str})
    missing = sorted(set(MANIFEST_COLUMNS) - set(frame.columns))
    if missing:
        raise ClipSetError(f"{path}: missing columns {missing}")
    kept_ids = frame.loc[frame["kept"], "clip_id"]
    absent = [clip for clip in kept_ids if not clip_path(root, clip).is_file()]
    if absent:
        raise ClipSetError(f"{path}: videos missing for clips {absent} under {Path(root) / CLIPS_FOLDER}")
    return frame[frame["kept"]].reset_index(drop=True) if kept_only else frame
