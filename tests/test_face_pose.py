"""Head pose and camera fit: recovery of a synthetic camera and motion, conventions, ER-NeRF json, a real clip."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from damc_core.face.pose import (
    DEFAULT_POINT_WEIGHTS,
    FACE_TEMPLATE_68,
    HeadPoseFit,
    fit_head_pose,
    gauss_newton_step,
    split_by_time,
    transforms_json,
)
from damc_core.media import read_video
from damc_core.sample.portrait import IBUG_MIRROR

SIZE = 512
FOCAL = 1150.0  # between two default focal candidates (1091 and 1210 px): found only by the refinement
CENTRE = (SIZE - 1) / 2
NOISE_PX = 0.5
TO_OPENCV = np.array([1.0, -1.0, -1.0])

# MediaPipe FaceMesh vertex of each iBUG-68 landmark.
FACEMESH_TO_IBUG = [
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389, 70, 63, 105, 66, 107, 336, 296,
    334, 293, 300, 168, 197, 5, 4, 75, 97, 2, 326, 305, 33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380, 61,
    39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
]


def head_motion(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth ground-truth head rotations (yaw up to 25, pitch 15, roll 10 degrees) and translations (dm)."""
    seconds = np.arange(n_frames) / 25.0
    angles = np.column_stack([
        25 * np.sin(2 * np.pi * 0.3 * seconds), 15 * np.sin(2 * np.pi * 0.2 * seconds + 1.0),
        10 * np.sin(2 * np.pi * 0.25 * seconds + 2.0),
    ])
    rotations = Rotation.from_euler("yxz", angles, degrees=True).as_matrix()
    translations = np.column_stack([
        0.3 * np.sin(seconds), -0.2 * np.cos(0.7 * seconds), 10.0 + 0.5 * np.sin(0.5 * seconds),
    ])
    return rotations, translations


def project(rotations: np.ndarray, translations: np.ndarray, focal: float = FOCAL) -> np.ndarray:
    """(T, 68, 2) pixels of the template at head-to-camera poses in OpenCV camera axes."""
    in_camera = np.einsum("tij,nj->tni", rotations, FACE_TEMPLATE_68 * TO_OPENCV) + translations[:, None]
    return focal * in_camera[..., :2] / in_camera[..., 2:] + CENTRE


def angles_between(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Degrees of rotation between corresponding (T, 3, 3) rotation matrices."""
    return np.degrees((Rotation.from_matrix(first) * Rotation.from_matrix(second).inv()).magnitude())


def frame_to_frame_degrees(rotations: np.ndarray) -> np.ndarray:
    return angles_between(rotations[1:], rotations[:-1])


def assert_proper_rotations(rotations: np.ndarray) -> None:
    identity = np.broadcast_to(np.eye(3), rotations.shape)
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), identity, atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray, np.ndarray, HeadPoseFit]:
    rotations, translations = head_motion(60)
    truth = project(rotations, translations)
    noisy = truth + np.random.default_rng(0).normal(0.0, NOISE_PX, truth.shape)
    return rotations, translations, truth, fit_head_pose(noisy.astype(np.float32), SIZE, SIZE)


KERNEL_PROBE = """
import hashlib, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_face_pose import NOISE_PX, SIZE, head_motion, project
from damc_core.face.pose import fit_head_pose
truth = project(*head_motion(12))
noisy = truth + np.random.default_rng(0).normal(0.0, NOISE_PX, truth.shape)
fit = fit_head_pose(noisy.astype(np.float32), SIZE, SIZE)
print(fit.focal_px, hashlib.sha256(fit.camera_to_world.tobytes()).hexdigest())
"""


def cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    return set(cpuinfo.read_text().split("flags")[1].split("\n")[0].split()) if cpuinfo.exists() else set()


@pytest.mark.skipif(platform.machine() != "x86_64" or not {"avx2", "fma"} <= cpu_flags(),
                    reason="the BLAS and numpy kernels compared are x86-64's, up to AVX2")
def test_fit_is_bit_identical_whichever_cpu_kernels_blas_and_numpy_pick():
    """What a fresh machine with another CPU meets: OpenBLAS (numpy's, scipy's, OpenCV's) and numpy pick their
    kernels by CPU at load time; forcing the kernels of older CPUs must not change a bit of the fit (it did when the
    Gauss-Newton step went through LAPACK: face_prep's transforms then differed between machines)."""
    variants = [{}, {"OPENBLAS_CORETYPE": "Nehalem"}, {"OPENBLAS_CORETYPE": "Sandybridge"},
                {"OPENBLAS_CORETYPE": "Haswell"}]
    if "avx512f" in cpu_flags():
        variants += [{"OPENBLAS_CORETYPE": "SkylakeX"}, {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL"}]
    tests_dir = str(Path(__file__).parent)
    outputs = {
        json.dumps(variant): subprocess.run(
            [sys.executable, "-c", KERNEL_PROBE, tests_dir], env=dict(os.environ, **variant),
            capture_output=True, text=True, check=True,
        ).stdout
        for variant in variants
    }
    assert len(set(outputs.values())) == 1, outputs


def test_gauss_newton_step_is_the_least_squares_solution():
    rng = np.random.default_rng(3)
    jacobian = rng.normal(size=(40, 6)) * np.array([1e3, 1e3, 1e3, 1.0, 1.0, 1e-2])
    residual = rng.normal(size=40)
    expected = np.linalg.lstsq(jacobian, -residual, rcond=None)[0]
    np.testing.assert_allclose(gauss_newton_step(jacobian, residual), expected, rtol=1e-9)


def test_gauss_newton_step_refuses_a_rank_deficient_jacobian():
    jacobian = np.random.default_rng(4).normal(size=(10, 6))
    jacobian[:, 5] = 0.0
    with pytest.raises(np.linalg.LinAlgError):
        gauss_newton_step(jacobian, np.ones(10))


def test_template_is_a_symmetric_head_in_decimetres_x_right_y_up_z_to_camera():
    assert FACE_TEMPLATE_68.shape == (68, 3)
    np.testing.assert_allclose(FACE_TEMPLATE_68[IBUG_MIRROR] * [-1, 1, 1], FACE_TEMPLATE_68, atol=1e-9)
    assert np.linalg.norm(FACE_TEMPLATE_68[45] - FACE_TEMPLATE_68[36]) == pytest.approx(0.9, abs=1e-3)
    assert FACE_TEMPLATE_68[36, 0] < 0 < FACE_TEMPLATE_68[45, 0], "the subject's right eye is on the image left"
    assert FACE_TEMPLATE_68[19, 1] > FACE_TEMPLATE_68[30, 1] > FACE_TEMPLATE_68[8, 1], "brows over nose over chin"
    assert np.argmax(FACE_TEMPLATE_68[:, 2]) == 30, "the nose tip is nearest the camera"
    assert 0.8 < FACE_TEMPLATE_68[27, 2] < 1.2 and abs(FACE_TEMPLATE_68[:, 1].mean()) < 0.6, "origin inside the head"


def test_fit_recovers_the_synthetic_focal_and_head_rotations(synthetic):
    rotations, _, _, fit = synthetic
    assert fit.focal_px == pytest.approx(FOCAL, rel=0.04)
    assert (fit.cx, fit.cy) == (CENTRE, CENTRE)
    assert angles_between(fit.rotations, rotations).max() < 2.0
    assert_proper_rotations(fit.rotations)


@pytest.mark.parametrize("focal", [600.0, 2500.0])
def test_fit_recovers_wide_and_long_focal_lengths(focal):
    rotations, translations = head_motion(30)
    landmarks = project(rotations, translations, focal) + np.random.default_rng(2).normal(0.0, NOISE_PX, (30, 68, 2))
    fit = fit_head_pose(landmarks, SIZE, SIZE)
    assert fit.focal_px == pytest.approx(focal, rel=0.1)
    assert angles_between(fit.rotations, rotations).max() < 2.0
    assert not fit.focal_at_search_bound


def test_a_focal_beyond_the_candidates_is_flagged_on_the_bound():
    rotations, translations = head_motion(30)
    landmarks = project(rotations, translations, 2500.0) + np.random.default_rng(2).normal(0.0, NOISE_PX, (30, 68, 2))
    fit = fit_head_pose(landmarks, SIZE, SIZE, focal_candidates=[300.0, 600.0, 1200.0])
    assert fit.focal_px == pytest.approx(1200.0) and fit.focal_at_search_bound


def test_reprojection_error_is_at_the_noise_level(synthetic):
    *_, fit = synthetic
    expected = NOISE_PX * np.sqrt(np.pi / 2)  # mean length of 2D Gaussian noise
    assert fit.reprojection_error_px.shape == (60,)
    assert 0.6 * expected < fit.reprojection_error_px.mean() < 1.4 * expected


def test_camera_to_world_inverts_the_head_pose_in_opengl_axes(synthetic):
    _, _, truth, fit = synthetic
    assert fit.camera_to_world.shape == (60, 4, 4) and fit.camera_to_world.dtype == np.float64
    np.testing.assert_array_equal(fit.camera_to_world[:, 3], np.broadcast_to([0.0, 0.0, 0.0, 1.0], (60, 4)))
    assert_proper_rotations(fit.camera_to_world[:, :3, :3])
    world_to_camera = np.linalg.inv(fit.camera_to_world)
    homogeneous = np.column_stack([FACE_TEMPLATE_68, np.ones(68)])
    x, y, z = np.einsum("tij,nj->itn", world_to_camera[:, :3], homogeneous)
    assert np.all(z < 0), "the OpenGL camera looks down its -z axis at the head"
    projected = np.stack([fit.cx + fit.focal_px * x / -z, fit.cy - fit.focal_px * y / -z], axis=-1)
    used = DEFAULT_POINT_WEIGHTS > 0
    assert np.abs(projected - truth)[:, used].mean() < 2 * NOISE_PX


def test_frontal_head_puts_the_camera_on_the_template_z_axis():
    landmarks = project(np.tile(np.eye(3), (3, 1, 1)), np.tile([0.0, 0.0, 8.0], (3, 1)))
    fit = fit_head_pose(landmarks, SIZE, SIZE, focal_candidates=[FOCAL], smoothing_frames=1)
    expected = np.eye(4)
    expected[2, 3] = 8.0
    np.testing.assert_allclose(fit.camera_to_world, np.broadcast_to(expected, (3, 4, 4)), atol=1e-6)
    np.testing.assert_allclose(fit.translations, [[0.0, 0.0, 8.0]] * 3, atol=1e-6)
    np.testing.assert_allclose(fit.reprojection_error_px, 0.0, atol=1e-4)
    assert fit.focal_px == FOCAL


def test_smoothing_reduces_frame_to_frame_jitter():
    rotations, translations = head_motion(50)
    noisy = project(rotations, translations) + np.random.default_rng(1).normal(0.0, 2.0, (50, 68, 2))
    raw, smooth = (
        fit_head_pose(noisy, SIZE, SIZE, focal_candidates=[FOCAL], smoothing_frames=frames) for frames in (1, 5)
    )
    truth_steps = frame_to_frame_degrees(rotations)
    raw_jitter = np.abs(frame_to_frame_degrees(raw.rotations) - truth_steps).mean()
    smooth_jitter = np.abs(frame_to_frame_degrees(smooth.rotations) - truth_steps).mean()
    assert smooth_jitter < 0.5 * raw_jitter
    assert angles_between(smooth.rotations, rotations).mean() < angles_between(raw.rotations, rotations).mean()
    assert np.abs(np.diff(smooth.translations, axis=0)).mean() < np.abs(np.diff(raw.translations, axis=0)).mean()
    assert_proper_rotations(smooth.rotations)


def test_moving_jaw_and_mouth_do_not_disturb_the_default_fit():
    rotations, translations = head_motion(20)
    landmarks = project(rotations, translations)
    jaw_drop = np.zeros((68, 2))
    jaw_drop[[*range(4, 13), *range(55, 60), *range(65, 68)], 1] = 20.0
    landmarks += jaw_drop * np.abs(np.sin(np.arange(20) / 3.0))[:, None, None]
    options = {"focal_candidates": [FOCAL], "smoothing_frames": 1}
    default = fit_head_pose(landmarks, SIZE, SIZE, **options)
    uniform = fit_head_pose(landmarks, SIZE, SIZE, point_weights=np.ones(68), **options)
    assert angles_between(default.rotations, rotations).max() < 0.01
    assert angles_between(uniform.rotations, rotations).max() > 1.0


def test_fractional_weights_count_in_proportion():
    rotations, translations = head_motion(20)
    landmarks = project(rotations, translations)
    landmarks[:, 48:68, 1] += 15.0
    options = {"focal_candidates": [FOCAL], "smoothing_frames": 1}
    faint = fit_head_pose(landmarks, SIZE, SIZE, point_weights=np.where(np.arange(68) >= 48, 1e-3, 1.0), **options)
    uniform = fit_head_pose(landmarks, SIZE, SIZE, point_weights=np.ones(68), **options)
    assert angles_between(faint.rotations, rotations).max() < 0.1
    assert angles_between(uniform.rotations, rotations).max() > 1.0


def test_transforms_json_is_er_nerf_shaped(synthetic):
    *_, fit = synthetic
    content = transforms_json(fit, [3, 5], extras={5: {"blink": 0.25}, 7: {"blink": 1.0}})
    assert json.loads(json.dumps(content)) == content
    assert content["focal_len"] == pytest.approx(fit.focal_px)
    assert (content["cx"], content["cy"], content["w"], content["h"]) == (SIZE / 2, SIZE / 2, SIZE, SIZE)
    assert content["units"] == "dm" and "OpenGL" in content["convention"]
    first, second = content["frames"]
    assert (first["img_id"], first["aud_id"], second["img_id"], second["aud_id"]) == (3, 3, 5, 5)
    assert "blink" not in first and second["blink"] == 0.25
    np.testing.assert_array_equal(second["transform_matrix"], fit.camera_to_world[5])


def test_transforms_json_rejects_unknown_frames_and_clashing_extras(synthetic):
    *_, fit = synthetic
    with pytest.raises(ValueError, match="outside"):
        transforms_json(fit, [60])
    with pytest.raises(ValueError, match="overwrite"):
        transforms_json(fit, [0], extras={0: {"transform_matrix": []}})


@pytest.mark.parametrize(
    ("n_frames", "fraction", "n_val"), [(10, 0.2, 2), (10, 0.3, 3), (100, 1 / 11, 10), (3, 0.01, 1), (2, 0.99, 1)]
)
def test_split_by_time_keeps_the_last_frames_for_validation(n_frames, fraction, n_val):
    train, val = split_by_time(n_frames, fraction)
    np.testing.assert_array_equal(train, np.arange(n_frames - n_val))
    np.testing.assert_array_equal(val, np.arange(n_frames - n_val, n_frames))


@pytest.mark.parametrize(("n_frames", "fraction"), [(1, 0.5), (10, 0.0), (10, 1.0)])
def test_split_by_time_rejects_impossible_splits(n_frames, fraction):
    with pytest.raises(ValueError):
        split_by_time(n_frames, fraction)


@pytest.mark.parametrize(
    "options",
    [{"smoothing_frames": 4}, {"smoothing_frames": 0}, {"focal_candidates": [-1.0]}, {"point_weights": np.zeros(68)}],
)
def test_fit_rejects_bad_options(options):
    landmarks = project(np.tile(np.eye(3), (2, 1, 1)), np.tile([0.0, 0.0, 8.0], (2, 1)))
    with pytest.raises(ValueError):
        fit_head_pose(landmarks, SIZE, SIZE, **options)


def test_fit_rejects_malformed_landmarks():
    with pytest.raises(ValueError):
        fit_head_pose(np.zeros((2, 67, 2)), SIZE, SIZE)
    with pytest.raises(ValueError):
        fit_head_pose(np.full((2, 68, 2), np.nan), SIZE, SIZE)


def test_real_clip_pose_is_accurate_and_smooth(shared_dir):
    mediapipe = pytest.importorskip("mediapipe")
    frames = read_video(shared_dir / "data/hdtf_clips/RD_Radio34_000.mp4")
    height, width = frames.shape[1:3]
    landmarks = []
    with mediapipe.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1) as mesh:
        for frame in frames:
            faces = mesh.process(frame).multi_face_landmarks
            assert faces, "FaceMesh should find the face in every frame"
            points = faces[0].landmark
            landmarks.append([(points[i].x * width - 0.5, points[i].y * height - 0.5) for i in FACEMESH_TO_IBUG])
    fit = fit_head_pose(np.array(landmarks), width, height)
    steps = frame_to_frame_degrees(fit.rotations)
    print(f"RD_Radio34_000: focal {fit.focal_px:.0f} px, reprojection {fit.reprojection_error_px.mean():.2f} px "
          f"(max {fit.reprojection_error_px.max():.2f}), frame-to-frame rotation median {np.median(steps):.2f} "
          f"max {steps.max():.2f} deg")
    assert fit.reprojection_error_px.mean() < 6.0
    assert_proper_rotations(fit.rotations)
    assert np.median(steps) < 1.5 and steps.max() < 4.0
    assert 0.5 * width < fit.focal_px <= 6 * width
