"""Cuts clips from source videos, crops and normalises them, and keeps the ones fit for lip-sync training."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from damc_core import clipset
from damc_core.hdtf.metadata import ClipSpec
from damc_core.media import (
    AUDIO_SAMPLE_RATE,
    FFMPEG,
    SAMPLES_PER_FRAME,
    VIDEO_FPS,
    MediaError,
    MediaInfo,
    iter_video_frames,
    probe,
    read_audio,
)
from damc_core.params import FilterThresholds
from damc_core.staging import staged_file
from damc_core.tools import ToolError, run_tool

Box = tuple[int, int, int, int]
"""A crop window (x, y, width, height) in pixels, (x, y) its top-left corner."""

Detector = Callable[[np.ndarray], list[np.ndarray]]
"""Finds the faces of an HxWx3 uint8 RGB frame: one (68, 2) array of iBUG-68 landmarks (x, y pixels) per face.

It must search every frame afresh: frames are sampled and clips follow one another, so a tracker carrying faces over
from the previous frame reports faces that are gone (e.g. make_detector("mediapipe", video=False)).
"""

RAW_VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov")
DEFAULT_CROP_RATIO = 1.2
"""Zoom ratio of the face window when a clip has no crop_ratio row (HDTF's most common value)."""

SPEECH_LOUD_PERCENTILE = 95.0
"""Percentile of the per-frame audio level taken as the clip's loud (speaking) level."""
SPEECH_RANGE_DB = 30.0
"""A frame counts as speech when its level is within this many dB of the clip's loud level ..."""
SILENCE_DBFS = -55.0
"""... and above this absolute level (dB relative to full scale), so near-silent clips have no speech at all."""

HISTOGRAM_BINS = (16, 16)
"""Hue x saturation bins of the colour histograms compared by the scene-cut detector."""

TOO_SHORT = "too short"
MULTIPLE_FACES = "multiple faces"
NO_FACE = "no face"
FACE_TOO_SMALL = "face too small"
RAPID_HEAD_MOTION = "rapid head motion"
SCENE_CUT = "scene cut"
TOO_LITTLE_SPEECH = "too little speech"
UNREADABLE = "unreadable"

_BITEXACT_MP4 = ("-threads", "1", "-map_metadata", "-1", "-fflags", "+bitexact", "-movflags", "+faststart",
                 "-f", "mp4")


@dataclass(frozen=True)
class FixedCrop:
    """HDTF crop method 1: a fixed window given at a reference frame height, scaled to the video's height."""

    box: Box
    """The window (x, y, width, height) at `reference_height`."""
    reference_height: int | None = None
    """Frame height the window refers to; None when it is in the video's own pixels."""


@dataclass(frozen=True)
class FaceCrop:
    """HDTF crop method 2: the union of the clip's face boxes, squared and enlarged by `ratio` (face_crop_box)."""

    ratio: float = DEFAULT_CROP_RATIO


class ClipSource(NamedTuple):
    """A clip to cut from a source video and judge; a plain (clip_id, source, video, start_s, end_s) tuple is one."""

    clip_id: str
    """Name of the output clip."""
    source: str
    """Name of the source video, for the manifest."""
    video: Path
    """The source video file."""
    start_s: float
    """Start of the clip in the source, seconds."""
    end_s: float | None
    """End of the clip in the source, seconds; None for the end of the source."""
    crop: FixedCrop | FaceCrop | None = None
    """How to crop; None keeps the whole (square) frame."""


def cut_clip(
    source_video: str | os.PathLike[str],
    start_s: float,
    end_s: float,
    out_path: str | os.PathLike[str],
    *,
    crop_box: Box | None,
    size: int,
) -> None:
    """Cut `start_s`..`end_s` of `source_video` into a normalised clip at `out_path`.

    The clip is cropped to `crop_box` (None: the whole frame, which must then be square), scaled to `size` x `size`,
    deinterlaced where frames are interlaced, resampled to 25 fps, with 16 kHz mono AAC audio. Encoding is
    byte-deterministic, and `out_path` is only replaced once the clip is complete. Raises MediaError naming the file
    when the source is unreadable, has no video or audio, or the range or box does not fit it.
    """
    if size <= 0 or size % 2:
        raise ValueError(f"size must be a positive even number of pixels, got {size}")
    info = _checked_source(source_video, start_s, end_s)
    box = _checked_box(crop_box, info)
    x, y, width, height = box
    filters = ["yadif=deint=interlaced", f"fps={VIDEO_FPS}", f"crop={width}:{height}:{x}:{y}",
               f"scale={size}:{size}:flags=lanczos", "setsar=1"]
    audio = ["-map", "0:a:0", "-ac", "1", "-ar", str(AUDIO_SAMPLE_RATE), "-c:a", "aac", "-b:a", "128k",
             "-flags:a", "+bitexact"]
    _encode_segment(info.path, start_s, end_s, Path(out_path), filters, audio)


def scale_box(box: Box, reference_height: int | None, width: int, height: int) -> Box:
    """`box`, given at a frame height of `reference_height`, in a `width` x `height` frame: scaled by
    height / reference_height (not at all when it is None), then shrunk (keeping its aspect) and shifted to fit."""
    scale = height / reference_height if reference_height else 1.0
    x, y, box_width, box_height = (value * scale for value in box)
    return _fit_box(x + box_width / 2, y + box_height / 2, box_width, box_height, width, height)


def face_crop_box(landmarks: np.ndarray, width: int, height: int, ratio: float) -> Box:
    """The square crop window of HDTF's method 2 in a `width` x `height` frame.

    The union of the per-frame landmark boxes of `landmarks` (T, 68, 2) (NaN points are skipped) is made
    square on its longer side, enlarged by `ratio` about its centre, then shrunk and shifted to fit the frame. With
    no usable frame it is the largest centred square.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    points = points[np.isfinite(points).all(axis=1)]
    if not len(points):
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    low, high = points.min(axis=0), points.max(axis=0)
    centre_x, centre_y = (low + high) / 2
    side = float(np.max(high - low)) * ratio
    return _fit_box(centre_x, centre_y, side, side, width, height)


def clip_statistics(video_path: str | os.PathLike[str], detect: Detector, sample_every: int) -> dict[str, float]:
    """Measure what the filters judge in a normalised clip (25 fps, 16 kHz audio).

    Faces are looked for in every `sample_every`-th frame. Returns:
    frames, duration_s: the clip's 25 fps frame count and its duration (frames / 25);
    face_fraction, multi_face_fraction: fractions of the analysed frames with exactly one and with several faces;
    face_size_px: median width of the landmark box over single-face frames (NaN without any);
    head_motion: median per-frame speed of RIGID_POINTS between consecutive analysed single-face frames, divided by
    face_size_px (NaN without two such frames);
    scene_cut_score: the largest colour-histogram distance between consecutive frames (0 for a single frame);
    speech_ratio: fraction of 25 fps frames with speech (see speech_ratio).
    """
    histograms: list[np.ndarray] = []
    faces: dict[int, list[np.ndarray]] = {}
    for index, frame in enumerate(iter_video_frames(video_path)):
        histograms.append(_colour_histogram(frame))
        if index % sample_every == 0:
            faces[index] = detect(frame)
    if not histograms:
        raise MediaError(f"{video_path} has a video stream that decodes to zero frames.")
    n_frames = len(histograms)
    return {
        "frames": n_frames,
        "duration_s": n_frames / VIDEO_FPS,
        **_face_statistics(faces),
        "scene_cut_score": _scene_cut_score(histograms),
        "speech_ratio": speech_ratio(read_audio(video_path)),
    }


def speech_ratio(audio: np.ndarray) -> float:
    """Fraction of 25 fps frames of 16 kHz `audio` whose RMS level is within SPEECH_RANGE_DB of the loud level
    (the SPEECH_LOUD_PERCENTILE-th percentile of the frame levels) and above SILENCE_DBFS."""
    n_frames = len(audio) // SAMPLES_PER_FRAME
    if n_frames == 0:
        return 0.0
    frames = np.asarray(audio[: n_frames * SAMPLES_PER_FRAME], dtype=np.float64).reshape(n_frames, -1)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    level_db = 20 * np.log10(np.maximum(rms, 1e-10))
    loud_db = np.percentile(level_db, SPEECH_LOUD_PERCENTILE)
    return float(np.mean(level_db > max(loud_db - SPEECH_RANGE_DB, SILENCE_DBFS)))


def decide(stats: dict[str, float], thresholds: FilterThresholds) -> tuple[bool, str]:
    """Whether a clip with `stats` (from clip_statistics) is kept, and the first failed check ('' when kept).

    Checks, in order: TOO_SHORT, MULTIPLE_FACES, NO_FACE, FACE_TOO_SMALL, RAPID_HEAD_MOTION, SCENE_CUT,
    TOO_LITTLE_SPEECH. A statistic that could not be measured (NaN) fails its check.
    """
    checks = (
        (TOO_SHORT, stats["duration_s"] >= thresholds.min_duration_s),
        (MULTIPLE_FACES, stats["multi_face_fraction"] <= thresholds.max_multi_face_fraction),
        (NO_FACE, stats["face_fraction"] >= thresholds.min_face_fraction),
        (FACE_TOO_SMALL, stats["face_size_px"] >= thresholds.min_face_size_px),
        (RAPID_HEAD_MOTION, stats["head_motion"] <= thresholds.max_head_motion),
        (SCENE_CUT, stats["scene_cut_score"] <= thresholds.max_scene_cut_score),
        (TOO_LITTLE_SPEECH, stats["speech_ratio"] >= thresholds.min_speech_ratio),
    )
    for reason, passed in checks:
        if not passed:
            return False, reason
    return True, ""


def filter_clips(
    sources: Iterable[ClipSource | tuple],
    out_root: str | Path,
    detect: Detector,
    thresholds: FilterThresholds,
    size: int = 512,
) -> pd.DataFrame:
    """Cut, crop, normalise and judge every source; write the kept clips and the manifest as a clip set at `out_root`.

    Every source gets a manifest row (see damc_core.clipset), kept or with the reason it was rejected; one that
    cannot be cut or decoded is rejected as "unreadable: <message>". Statistics that could not be measured are
    written as 0. Returns the rows, with the face_fraction, multi_face_fraction and scene_cut_score statistics after
    the manifest columns.
    """
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    sources = [ClipSource(*source) for source in sources]
    with tempfile.TemporaryDirectory(prefix=".filtering-", dir=out_root) as scratch:
        rows = [_filter_one(source, out_root, Path(scratch), detect, thresholds, size)
                for source in tqdm(sources, desc="Filtering clips", unit="clip")]
    clipset.write_manifest(out_root, rows)
    return pd.DataFrame(rows, columns=[*clipset.MANIFEST_COLUMNS, *_EXTRA_STATISTICS])


def sources_from_clips(folder: str | Path) -> list[ClipSource]:
    """One source per `*.mp4` in `folder` (already-cut clips): the whole clip, uncropped, its file stem as id."""
    return [ClipSource(path.stem, path.stem, path, 0.0, None) for path in sorted(Path(folder).glob("*.mp4"))]


def sources_from_metadata(
    specs: Sequence[ClipSpec], raw_video_folder: str | Path
) -> tuple[list[ClipSource], list[ClipSpec]]:
    """Sources for the clips whose raw video is in `raw_video_folder`, and the specs whose video is missing.

    A raw video is `<name>` or `<set>_<name>` with a suffix of RAW_VIDEO_SUFFIXES. Clips with a crop_wh row are
    cropped by it (FixedCrop at the spec's resolution), the others from landmarks (FaceCrop with their crop_ratio,
    else DEFAULT_CROP_RATIO).
    """
    folder = Path(raw_video_folder)
    sources, missing = [], []
    for spec in specs:
        video = _raw_video(folder, spec)
        if video is None:
            missing.append(spec)
            continue
        crop = (FixedCrop(spec.crop_box, spec.resolution) if spec.crop_box is not None
                else FaceCrop(spec.crop_ratio or DEFAULT_CROP_RATIO))
        sources.append(ClipSource(spec.clip_id, spec.video, video, spec.start_s, spec.end_s, crop))
    return sources, missing


def filter_report(manifest: pd.DataFrame) -> dict:
    """Summary of a filtering run: clip counts, rejections per reason ("unreadable: ..." counted as "unreadable"),
    and hours of kept clips and of all clips (their source ranges)."""
    kept = manifest["kept"].astype(bool)
    reasons = manifest.loc[~kept, "reason"].astype(str).str.split(":", n=1).str[0]
    return {
        "clips": len(manifest),
        "kept": int(kept.sum()),
        "rejected": {reason: int(count) for reason, count in reasons.value_counts().sort_index().items()},
        "hours_kept": float(manifest.loc[kept, "duration_s"].sum() / 3600),
        "hours_total": float((manifest["end_s"] - manifest["start_s"]).sum() / 3600),
    }


_EXTRA_STATISTICS = ("face_fraction", "multi_face_fraction", "scene_cut_score")
_MEASURED = ("duration_s", "face_size_px", "head_motion", "speech_ratio", *_EXTRA_STATISTICS)


def _filter_one(
    source: ClipSource, out_root: Path, scratch: Path, detect: Detector, thresholds: FilterThresholds, size: int
) -> dict:
    """Cut and judge one source; a kept clip is moved into the clip set, a rejected one leaves nothing there."""
    candidate = scratch / f"{source.clip_id}.mp4"
    final = clipset.clip_path(out_root, source.clip_id)
    end_s = source.end_s
    try:
        info = probe(source.video)
        end_s = info.duration_s if end_s is None else end_s
        crop_box = _crop_box(source, info, end_s, detect, thresholds.sample_every, scratch)
        cut_clip(source.video, source.start_s, end_s, candidate, crop_box=crop_box, size=size)
        stats = clip_statistics(candidate, detect, thresholds.sample_every)
    except (MediaError, ToolError) as error:
        final.unlink(missing_ok=True)
        return _row(source, end_s, {}, f"{UNREADABLE}: {' '.join(str(error).split())}")
    kept, reason = decide(stats, thresholds)
    if kept:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(candidate, final)
    else:
        candidate.unlink()
        final.unlink(missing_ok=True)
    return _row(source, end_s, stats, reason)


def _row(source: ClipSource, end_s: float | None, stats: dict[str, float], reason: str) -> dict:
    """The manifest row (plus _EXTRA_STATISTICS) of `source`; statistics absent from `stats` or NaN become 0."""
    measured = {key: _zero_if_unknown(stats.get(key)) for key in _MEASURED}
    return {
        "clip_id": source.clip_id,
        "source": source.source,
        "start_s": float(source.start_s),
        "end_s": float(source.start_s if end_s is None else end_s),
        "frames": int(stats.get("frames", 0)),
        **measured,
        "kept": not reason,
        "reason": reason,
    }


def _zero_if_unknown(value: float | None) -> float:
    """`value` as a float, 0.0 when it is None or NaN."""
    return 0.0 if value is None or math.isnan(value) else float(value)


def _crop_box(
    source: ClipSource, info: MediaInfo, end_s: float, detect: Detector, sample_every: int, scratch: Path
) -> Box | None:
    """The pixel crop window of `source` in its video (described by `info`)."""
    width, height = info.video.width, info.video.height
    if isinstance(source.crop, FixedCrop):
        return scale_box(source.crop.box, source.crop.reference_height, width, height)
    if isinstance(source.crop, FaceCrop):
        landmarks = _segment_landmarks(info.path, source.start_s, end_s, detect, sample_every, scratch)
        return face_crop_box(landmarks, width, height, source.crop.ratio)
    return None


def _segment_landmarks(
    video: Path, start_s: float, end_s: float, detect: Detector, sample_every: int, scratch: Path
) -> np.ndarray:
    """(T, 68, 2) landmarks of the largest face in every `sample_every`-th frame of a segment (T = frames with one)."""
    preview = scratch / "preview.mp4"
    fps = VIDEO_FPS / sample_every
    _encode_segment(video, start_s, end_s, preview, ["yadif=deint=interlaced", f"fps={fps}"], ["-an"])
    largest = [max(faces, key=lambda face: np.ptp(face[:, 0]))
               for faces in map(detect, iter_video_frames(preview, fps=fps)) if faces]
    preview.unlink()
    return np.asarray(largest, dtype=np.float64).reshape(-1, 68, 2)


def _face_statistics(faces: dict[int, list[np.ndarray]]) -> dict[str, float]:
    """Face counts, size and head motion over the analysed frames (frame index -> faces found)."""
    counts = np.array([len(found) for found in faces.values()])
    single = {index: found[0] for index, found in sorted(faces.items()) if len(found) == 1}
    landmarks = np.asarray(list(single.values()), dtype=np.float64).reshape(-1, 68, 2)
    return {
        "face_fraction": float(np.mean(counts == 1)),
        "multi_face_fraction": float(np.mean(counts > 1)),
        "face_size_px": clipset.face_size(landmarks),
        "head_motion": clipset.head_motion(landmarks, list(single)),
    }


def _colour_histogram(frame: np.ndarray) -> np.ndarray:
    """Normalised hue x saturation histogram of an RGB frame."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
    histogram = cv2.calcHist([hsv], [0, 1], None, list(HISTOGRAM_BINS), [0, 180, 0, 256])
    return cv2.normalize(histogram, None, norm_type=cv2.NORM_L1)


def _scene_cut_score(histograms: list[np.ndarray]) -> float:
    """The largest Bhattacharyya distance between the histograms of consecutive frames."""
    distances = [cv2.compareHist(before, after, cv2.HISTCMP_BHATTACHARYYA)
                 for before, after in zip(histograms, histograms[1:], strict=False)]
    return float(max(distances, default=0.0))


def _checked_source(source_video: str | os.PathLike[str], start_s: float, end_s: float) -> MediaInfo:
    """Probe the source and check it has video and audio and that start_s..end_s overlaps it."""
    info = probe(source_video)
    if info.video is None or info.audio is None:
        raise MediaError(f"{info.path} needs both a video and an audio stream to cut clips from.")
    if not 0 <= start_s < end_s:
        raise MediaError(f"Cannot cut {info.path}: the range {start_s:g}..{end_s:g} s is empty or negative.")
    if start_s >= info.duration_s:
        raise MediaError(f"Cannot cut {info.path} from {start_s:g} s: it is only {info.duration_s:g} s long.")
    return info


def _checked_box(crop_box: Box | None, info: MediaInfo) -> Box:
    """`crop_box`, or the whole frame when it is None, after checking it is a non-empty window inside the frame."""
    width, height = info.video.width, info.video.height
    if crop_box is None:
        if width != height:
            raise MediaError(f"{info.path} is {width}x{height}, not square: give a crop box.")
        return 0, 0, width, height
    x, y, box_width, box_height = crop_box
    if box_width <= 0 or box_height <= 0 or x < 0 or y < 0 or x + box_width > width or y + box_height > height:
        raise MediaError(f"Crop box {crop_box} does not fit inside the {width}x{height} frames of {info.path}.")
    return crop_box


def _encode_segment(
    source: Path, start_s: float, end_s: float, out_path: Path, video_filters: list[str], audio_args: list[str]
) -> None:
    """Encode `start_s`..`end_s` of `source` through `video_filters` as H.264 (plus `audio_args`) into a bit-exact
    mp4 at `out_path`, replacing it only on success."""
    with staged_file(out_path) as partial:
        run_tool([*FFMPEG, "-y", "-ss", f"{start_s:.3f}", "-i", source, "-t", f"{end_s - start_s:.3f}",
                  "-map", "0:V:0", "-vf", ",".join(video_filters), "-c:v", "libx264", "-preset", "medium",
                  "-crf", "18", "-pix_fmt", "yuv420p", "-flags:v", "+bitexact", *audio_args, *_BITEXACT_MP4,
                  partial])


def _fit_box(centre_x: float, centre_y: float, box_width: float, box_height: float, width: int, height: int) -> Box:
    """The box of that centre and size, shrunk (keeping its aspect) and shifted to lie in a `width` x `height` frame,
    rounded to whole pixels."""
    shrink = min(1.0, width / box_width, height / box_height)
    box_width, box_height = max(1, round(box_width * shrink)), max(1, round(box_height * shrink))
    x = min(max(round(centre_x - box_width / 2), 0), width - box_width)
    y = min(max(round(centre_y - box_height / 2), 0), height - box_height)
    return x, y, box_width, box_height


def _raw_video(folder: Path, spec: ClipSpec) -> Path | None:
    """The raw video of `spec` in `folder`, if there is one."""
    candidates = (folder / f"{stem}{suffix}" for stem in (spec.name, spec.video) for suffix in RAW_VIDEO_SUFFIXES)
    return next((path for path in candidates if path.is_file()), None)
