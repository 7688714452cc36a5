"""Prepares one speaking-head video for NeRF training: an ER-NeRF-compatible dataset folder, with no manual steps.

Layout written to the output folder (ER-NeRF's names, so users can move between the two projects):

    ori_imgs/<i>.jpg, ori_imgs/<i>.lms   frames at 25 fps and their 68 landmarks ("x y" per line)
    parsing/<i>.png                      head / neck / torso / background in ER-NeRF's colours
    gt_imgs/<i>.jpg                      frames with the background replaced by the background plate
    torso_imgs/<i>.png                   RGBA: neck and torso pixels, transparent black elsewhere
    bc.jpg                               background plate: pixels never covered by the person (the rest inpainted)
    aud.wav                              16 kHz mono speech
    au.csv                               blink as OpenFace's AU45_r column (0..2, ER-NeRF's range)
    transforms_train.json, transforms_val.json   camera per frame (split by time: the last part is validation)
    landmarks.npy, blink.npy, meta.json  the same data as arrays, and a summary
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from damc_core.audio.levels import check_speech
from damc_core.errors import InputError
from damc_core.face.blink import blink_signal
from damc_core.face.landmarks import make_detector
from damc_core.face.parsing import Part, make_parser, parsing_to_rgb, rgb_to_parsing
from damc_core.face.pose import HeadPoseFit, fit_head_pose, split_by_time, transforms_json
from damc_core.media import AUDIO_SAMPLE_RATE, VIDEO_FPS, iter_video_frames, probe, read_audio, write_audio
from damc_core.params import FacePrepConfig
from damc_core.staging import check_replaceable, staged_directory


STAGE = "face_prep"
"""The writer named in the output folder's marker (see damc_core.staging)."""
CHANGED_PIXEL_LEVEL = 8
"""Grey levels (of 255) by which a pixel must change between frames to count as changed."""
STILL_CHANGED_FRACTION = 1e-3
"""A video in which no frame changes more than this fraction of its pixels is warned about as a still picture."""


class FacePrepError(InputError, ValueError):
    """The video cannot be made into a training set; the message says why and where."""


@dataclass(frozen=True)
class PreparedSubject:
    """What face preparation found, for reports and previews."""

    landmarks: np.ndarray
    """(T, 68, 2) landmarks after gap filling."""
    interpolated: np.ndarray
    """(T,) True where a frame's landmarks were interpolated over a short detection gap."""
    blink: np.ndarray
    """(T,) eyelid closure, 0 open .. 1 shut."""
    pose: HeadPoseFit
    """Camera and head pose per frame."""
    train_ids: np.ndarray
    """Frame ids of the training split."""
    val_ids: np.ndarray
    """Frame ids of the validation split (the last part of the video)."""
    width: int
    """Frame width in pixels."""
    height: int
    """Frame height in pixels."""


def check_input(video: Path, config: FacePrepConfig) -> list[str]:
    """Refuse videos that cannot work before any heavy work starts; return warnings for ones that need care."""
    info = probe(video)
    if info.video is None:
        raise FacePrepError(f"{video} has no video stream")
    if info.audio is None:
        raise FacePrepError(f"{video} has no audio track: the head is driven by the speech in it")
    width, height = info.video.width, info.video.height
    if min(width, height) < config.min_size_px:
        raise FacePrepError(f"{video} is {width}x{height}: smaller than face_prep.min_size_px={config.min_size_px}")
    if width % 2 or height % 2:
        raise FacePrepError(f"{video} is {width}x{height}: width and height must be even (crop one pixel)")
    warnings = []
    if abs(info.video.fps - VIDEO_FPS) > 1e-6:
        warnings.append(f"{video} runs at {info.video.fps:.3f} fps; frames are resampled to {VIDEO_FPS} fps")
    return warnings


def fill_gaps(landmarks: np.ndarray, max_gap: int, video: Path) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate landmarks over runs of up to `max_gap` frames without a face; fail on longer runs."""
    missing = np.isnan(landmarks).any(axis=(1, 2))
    if missing.all():
        raise FacePrepError(f"no face found in any of the {len(landmarks)} frames of {video}")
    long_runs = [(start, stop) for start, stop in _runs(missing) if stop - start > max_gap]
    if long_runs:
        spans = ", ".join(f"{start}-{stop - 1}" for start, stop in long_runs[:10])
        raise FacePrepError(
            f"the face is lost in frames {spans} of {video} (more than face_prep.max_gap_frames={max_gap} in a row): "
            f"cut those parts out of the video"
        )
    filled = landmarks.copy()
    present = np.flatnonzero(~missing)
    for index in np.flatnonzero(missing):
        filled[index] = _interpolate(landmarks, present, index)
    return filled, missing


def _runs(mask: np.ndarray) -> Iterator[tuple[int, int]]:
    """[start, stop) of each run of True in `mask`."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    yield from zip(edges[::2], edges[1::2], strict=True)


def _interpolate(landmarks: np.ndarray, present: np.ndarray, index: int) -> np.ndarray:
    after = present[np.searchsorted(present, index)] if index < present[-1] else present[-1]
    before = present[np.searchsorted(present, index) - 1] if index > present[0] else present[0]
    if before == after:
        return landmarks[before]
    weight = (index - before) / (after - before)
    return (1 - weight) * landmarks[before] + weight * landmarks[after]


def check_face_counts(counts: np.ndarray, config: FacePrepConfig, video: Path) -> None:
    """Refuse videos where more than one face shows too often (the landmarks would jump between people)."""
    several = counts > 1
    if several.mean() > config.max_multi_face_fraction:
        frames = np.flatnonzero(several)
        raise FacePrepError(
            f"more than one face in {several.sum()} of {len(counts)} frames of {video} (first: frame {frames[0]}, "
            f"limit face_prep.max_multi_face_fraction={config.max_multi_face_fraction}): crop the video to one person"
        )


def prepare_subject(video: Path, out_dir: Path, config: FacePrepConfig) -> PreparedSubject:
    """Build the dataset folder `out_dir` from `video`. Written to a temporary folder first and moved into place only
    when complete, so a failure leaves any earlier output untouched."""
    check_replaceable(out_dir, STAGE)
    warnings = check_input(video, config)
    audio = read_audio(video)
    warnings += check_speech(audio, str(video))
    with staged_directory(out_dir, STAGE) as work:
        for folder in ("ori_imgs", "parsing", "gt_imgs", "torso_imgs"):
            (work / folder).mkdir()
        raw, counts, changed = _write_frames_and_landmarks(video, work, config)
        if len(raw) < config.min_frames:
            raise FacePrepError(f"{video} has {len(raw)} frames at 25 fps; at least face_prep.min_frames="
                                f"{config.min_frames} are needed for a train/validation split")
        check_face_counts(counts, config, video)
        landmarks, interpolated = fill_gaps(raw, config.max_gap_frames, video)
        height, width = cv2.imread(str(work / "ori_imgs" / "0.jpg")).shape[:2]
        _write_landmark_files(work, landmarks)
        plate = _write_parsing_and_plate(work, landmarks, config)
        _write_gt_and_torso(work, plate, len(landmarks), config.jpeg_quality)
        write_audio(work / "aud.wav", audio, AUDIO_SAMPLE_RATE)

        blink = blink_signal(landmarks, open_percentile=config.blink_open_percentile)
        pose = fit_head_pose(landmarks, width, height, smoothing_frames=config.pose_smoothing_frames)
        train_ids, val_ids = split_by_time(len(landmarks), config.val_fraction)
        _write_camera_files(work, pose, blink, train_ids, val_ids)
        subject = PreparedSubject(landmarks, interpolated, blink, pose, train_ids, val_ids, width, height)
        warnings += content_warnings(video, raw, changed, width, height) + pose_warnings(video, pose)
        _write_meta(work, subject, video, config, warnings, counts)
    return subject


def _write_frames_and_landmarks(
    video: Path, work: Path, config: FacePrepConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Save every 25 fps frame as ori_imgs/<i>.jpg and detect its landmarks (NaN where no face); also return the
    number of faces per frame and the fraction of pixels that changed from the previous frame."""
    landmarks, counts, changed = [], [], []
    quality = [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality]
    previous = None
    with make_detector(config.landmarks, max_faces=2, video=True) as detector:
        for index, frame in enumerate(tqdm(iter_video_frames(video), desc="landmarks", unit="frame", leave=False)):
            cv2.imwrite(str(work / "ori_imgs" / f"{index}.jpg"), frame[..., ::-1], quality)
            faces = detector.detect(frame)
            counts.append(len(faces))
            landmarks.append(faces[0] if faces else np.full((68, 2), np.nan, dtype=np.float32))
            if previous is not None:
                changed.append(changed_pixel_fraction(previous, frame))
            previous = frame
    if not landmarks:
        raise FacePrepError(f"{video} decodes to zero frames")
    return np.stack(landmarks).astype(np.float32), np.asarray(counts), np.asarray(changed)


def changed_pixel_fraction(previous: np.ndarray, frame: np.ndarray) -> float:
    """Fraction of pixels of two HxWx3 uint8 frames whose largest channel difference exceeds CHANGED_PIXEL_LEVEL
    (compression noise of a still picture stays below it)."""
    difference = cv2.absdiff(previous, frame).max(axis=2)
    return float(np.count_nonzero(difference > CHANGED_PIXEL_LEVEL)) / difference.size


def content_warnings(video: Path, landmarks: np.ndarray, changed: np.ndarray, width: int, height: int) -> list[str]:
    """Warnings about a usable but suspect video: a still picture, or a face whose landmarks leave the frame."""
    warnings = []
    if changed.size and changed.max() < STILL_CHANGED_FRACTION:
        warnings.append(f"{video}: at most {changed.max():.2%} of the pixels change from one frame to the next: a "
                        f"still picture looped as a video? The head cannot learn to speak from it")
    points = landmarks[~np.isnan(landmarks).any(axis=(1, 2))]
    outside = ((points < 0) | (points > np.array([width - 1, height - 1]))).any(axis=(1, 2))
    if outside.any():
        warnings.append(f"{video}: the face's landmarks leave the picture in {outside.sum()} of {len(landmarks)} "
                        f"frames: the face is cut off at the edge; crop the video wider around the head")
    return warnings


def pose_warnings(video: Path, pose: HeadPoseFit) -> list[str]:
    """A warning when the focal length search ended on its bound (the camera's depth is then uncertain)."""
    if not pose.focal_at_search_bound:
        return []
    side = max(pose.width, pose.height)
    return [f"{video}: the focal length ended on the search's bound ({pose.focal_px:.0f} px, "
            f"{pose.focal_px / side:.1f}x the image side): the reprojection error is flat there, so the camera's "
            f"depth and focal are uncertain (a distant or telephoto view)"]


def _write_landmark_files(work: Path, landmarks: np.ndarray) -> None:
    np.save(work / "landmarks.npy", landmarks)
    for index, points in enumerate(landmarks):
        np.savetxt(work / "ori_imgs" / f"{index}.lms", points, fmt="%.2f")


def _frames_on_disk(work: Path, folder: str, count: int, suffix: str) -> Iterator[np.ndarray]:
    for index in range(count):
        yield np.ascontiguousarray(cv2.imread(str(work / folder / f"{index}{suffix}"), cv2.IMREAD_COLOR)[..., ::-1])


def _write_parsing_and_plate(work: Path, landmarks: np.ndarray, config: FacePrepConfig) -> np.ndarray:
    """Parse every frame into parsing/<i>.png; the background plate is the mean of each pixel over the frames where
    it is background, inpainted where the person always covers it; saved as bc.jpg."""
    frames = _frames_on_disk(work, "ori_imgs", len(landmarks), ".jpg")
    total, seen = None, None
    with make_parser(config.parsing, bisenet_weights=config.bisenet_weights) as parser:
        for index, frame in enumerate(tqdm(frames, total=len(landmarks), desc="parsing", unit="frame", leave=False)):
            labels = parser.parse(frame, landmarks[index])
            cv2.imwrite(str(work / "parsing" / f"{index}.png"), parsing_to_rgb(labels)[..., ::-1])
            background = labels == Part.BACKGROUND
            if total is None:
                total, seen = np.zeros(frame.shape, np.float64), np.zeros(frame.shape[:2], np.int64)
            total[background] += frame[background]
            seen += background
    plate = (total / np.maximum(seen, 1)[..., None]).round().astype(np.uint8)
    never = (seen == 0).astype(np.uint8)
    if never.any():
        plate = cv2.inpaint(plate, never, inpaintRadius=5, flags=cv2.INPAINT_TELEA)
    cv2.imwrite(str(work / "bc.jpg"), plate[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    return plate


def _write_gt_and_torso(work: Path, plate: np.ndarray, count: int, jpeg_quality: int) -> None:
    """gt_imgs: background pixels replaced by the plate; torso_imgs: neck and torso over transparency (RGBA)."""
    frames = _frames_on_disk(work, "ori_imgs", count, ".jpg")
    for index, frame in enumerate(tqdm(frames, total=count, desc="gt and torso", unit="frame", leave=False)):
        labels = rgb_to_parsing(cv2.imread(str(work / "parsing" / f"{index}.png"))[..., ::-1])
        gt = np.where((labels == Part.BACKGROUND)[..., None], plate, frame)
        cv2.imwrite(str(work / "gt_imgs" / f"{index}.jpg"), gt[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        body = ((labels == Part.NECK) | (labels == Part.TORSO))[..., None]
        rgba = np.dstack([np.where(body, frame[..., ::-1], 0), np.where(body, 255, 0)]).astype(np.uint8)
        cv2.imwrite(str(work / "torso_imgs" / f"{index}.png"), rgba)


def _write_camera_files(
    work: Path, pose: HeadPoseFit, blink: np.ndarray, train_ids: np.ndarray, val_ids: np.ndarray
) -> None:
    np.save(work / "blink.npy", blink.astype(np.float32))
    extras = {int(index): {"blink": round(float(blink[index]), 4)} for index in range(len(blink))}
    for name, ids in (("transforms_train.json", train_ids), ("transforms_val.json", val_ids)):
        content = transforms_json(pose, [int(index) for index in ids], extras=extras)
        (work / name).write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")
    rows = ["frame, timestamp, AU45_r"]
    rows += [f"{index + 1}, {index / VIDEO_FPS:.3f}, {2.0 * value:.4f}" for index, value in enumerate(blink)]
    (work / "au.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def _write_meta(
    work: Path, subject: PreparedSubject, video: Path, config: FacePrepConfig, warnings: list[str],
    counts: np.ndarray,
) -> None:
    pose = subject.pose
    meta = {
        "source": str(video),
        "frames": len(subject.landmarks),
        "fps": VIDEO_FPS,
        "width": subject.width,
        "height": subject.height,
        "landmark_backend": config.landmarks,
        "parsing_backend": config.parsing,
        "frames_interpolated": int(subject.interpolated.sum()),
        "frames_with_several_faces": int((counts > 1).sum()),
        "focal_px": round(float(pose.focal_px), 3),
        "reprojection_error_px": {
            "mean": round(float(pose.reprojection_error_px.mean()), 4),
            "max": round(float(pose.reprojection_error_px.max()), 4),
        },
        "train_frames": len(subject.train_ids),
        "val_frames": len(subject.val_ids),
        "warnings": warnings,
    }
    (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
