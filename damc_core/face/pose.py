"""Head pose and pinhole camera per frame, by fitting a rigid 3D face template to 68-point landmarks (PnP)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.optimize import minimize_scalar
from scipy.spatial.transform import Rotation

# A rigid 3D face in the iBUG-68 order, in decimetres (1 unit = 10 cm, the scale of AD-NeRF/ER-NeRF head scenes).
# Axes: x towards the subject's left (image right in a frontal view), y up, z out of the face towards the camera
# (OpenGL-style, right-handed). Origin roughly at the centre of the head, between the ears: on the mid-sagittal
# plane, level with jaw-line points 0 and 16 (in front of the ears), 1 dm behind the nasion (27), i.e. half a
# typical head length (glabella-opisthocranion about 19-20 cm).
# Derived once, offline, from MediaPipe FaceMesh 0.10.21 (refine_landmarks=True: x, y are image positions, z is
# relative depth at the scale of x) on the astronaut portrait (skimage.data) and every 5th frame of
# ../shared/data/subjects/May_5s.mp4 and of the five ../shared/data/hdtf_clips (197 faces from 7 sources), mapped onto
# the iBUG-68 order with the FaceMesh indices [162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288,
# 323, 454, 389, 70, 63, 105, 66, 107, 336, 296, 334, 293, 300, 168, 197, 5, 4, 75, 97, 2, 326, 305, 33, 160, 158, 133,
# 153, 144, 362, 385, 387, 263, 373, 380, 61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308,
# 317, 14, 87] and turned into these axes. The faces were aligned by generalised Procrustes analysis (similarity
# transforms fitted on the brows, nose, eyes and the top of the jaw line) and the 117 within 12 degrees of the mean
# orientation averaged; the mean was made left-right symmetric (averaged with its mirror image), pitched so that the
# 7 sources face the camera at zero pitch on average, scaled so that the outer eye corners (36, 45) are 9 cm apart,
# moved to the origin above, and rounded to 0.1 mm. Its mouth is that of an average speaking frame, slightly open.
FACE_TEMPLATE_68 = np.array(
    [
        # jaw line 0-16
        [-0.701, 0.000, 0.369], [-0.715, -0.310, 0.248], [-0.705, -0.463, 0.258], [-0.635, -0.800, 0.372],
        [-0.569, -0.936, 0.482], [-0.497, -1.034, 0.595], [-0.325, -1.183, 0.756], [-0.135, -1.279, 0.883],
        [0.000, -1.293, 0.901], [0.135, -1.279, 0.883], [0.325, -1.183, 0.756], [0.497, -1.034, 0.595],
        [0.569, -0.936, 0.482], [0.635, -0.800, 0.372], [0.705, -0.463, 0.258], [0.715, -0.310, 0.248],
        [0.701, 0.000, 0.369],
        # brows 17-26
        [-0.576, 0.074, 0.761], [-0.511, 0.138, 0.841], [-0.414, 0.175, 0.906], [-0.287, 0.173, 0.966],
        [-0.143, 0.155, 0.996], [0.143, 0.155, 0.996], [0.287, 0.173, 0.966], [0.414, 0.175, 0.906],
        [0.511, 0.138, 0.841], [0.576, 0.074, 0.761],
        # nose bridge 27-30, nostrils 31-35
        [0.000, -0.035, 1.000], [0.000, -0.183, 1.109], [0.000, -0.320, 1.236], [0.000, -0.407, 1.266],
        [-0.133, -0.511, 1.056], [-0.081, -0.545, 1.080], [0.000, -0.547, 1.097], [0.081, -0.545, 1.080],
        [0.133, -0.511, 1.056],
        # eyes 36-41 and 42-47
        [-0.450, -0.083, 0.781], [-0.386, -0.043, 0.846], [-0.283, -0.034, 0.863], [-0.173, -0.096, 0.834],
        [-0.269, -0.115, 0.857], [-0.370, -0.119, 0.839], [0.173, -0.096, 0.834], [0.283, -0.034, 0.863],
        [0.386, -0.043, 0.846], [0.450, -0.083, 0.781], [0.370, -0.119, 0.839], [0.269, -0.115, 0.857],
        # outer lips 48-59
        [-0.261, -0.800, 0.891], [-0.153, -0.725, 1.055], [-0.078, -0.702, 1.093], [0.000, -0.713, 1.102],
        [0.078, -0.702, 1.093], [0.153, -0.725, 1.055], [0.261, -0.800, 0.891], [0.153, -0.911, 1.005],
        [0.083, -0.937, 1.036], [0.000, -0.945, 1.042], [-0.083, -0.937, 1.036], [-0.153, -0.911, 1.005],
        # inner lips 60-67
        [-0.236, -0.799, 0.909], [-0.065, -0.761, 1.044], [0.000, -0.764, 1.053], [0.065, -0.761, 1.044],
        [0.236, -0.799, 0.909], [0.065, -0.842, 1.016], [0.000, -0.847, 1.026], [-0.065, -0.842, 1.016],
    ]
)
FACE_TEMPLATE_68.flags.writeable = False


def _rigid_point_weights() -> np.ndarray:
    weights = np.zeros(68)
    weights[27:36] = 1.0  # nose: rigid with the skull
    weights[[36, 39, 42, 45]] = 1.0  # eye corners: rigid
    weights[[37, 38, 40, 41, 43, 44, 46, 47]] = 0.5  # eyelids: move in blinks
    weights[17:27] = 0.5  # brows: move with expression
    weights[[1, 15]] = 0.5  # jaw line by the ears: rigid, but a contour for 2D detectors
    # Template points 0, 3, 4, 12, 13 and 16 were measured with an earlier FaceMesh jaw mapping than
    # damc_core.face.landmarks uses now, so they stay out of the fit (with the moving jaw 2-14).
    return weights


DEFAULT_POINT_WEIGHTS = _rigid_point_weights()
DEFAULT_POINT_WEIGHTS.flags.writeable = False
"""Weight of each landmark in the pose fit: the jaw below the ears (2-14) and the mouth (48-67) move with speech
and are left out (weight 0), as are 0 and 16; eyelids, brows and jaw points 1 and 15 count half."""

CONVENTION = (
    "transform_matrix: camera-to-world 4x4, camera axes x right, y up, z backwards (OpenGL/NeRF); world: the rigid "
    "head template (x image right, y up, z towards the camera, origin near the head centre), in decimetres; "
    "focal_len, cx, cy in pixels with pixel (row r, column c) centred at (c + 0.5, r + 0.5)"
)
"""The ``"convention"`` entry of transforms_json."""

_TEMPLATE_TO_OPENCV = np.array([1.0, -1.0, -1.0])  # flips y and z: template/OpenGL axes <-> OpenCV axes
_OBJECT_POINTS = FACE_TEMPLATE_68 * _TEMPLATE_TO_OPENCV
_SEARCH_FRAMES = 50
_DEFAULT_FOCALS = np.geomspace(0.5, 6.0, 25)  # times the larger image side
_FOCAL_LOG_TOLERANCE = 1e-3  # the refined focal is within about 0.1 % of the best
_GAUSS_NEWTON_STEPS = 10
_FRACTION_TOLERANCE = 1e-9


@dataclass(frozen=True)
class HeadPoseFit:
    """A pinhole camera shared by all frames and the rigid head pose in each frame."""

    focal_px: float
    """Focal length in pixels (square pixels, no distortion)."""
    cx: float
    """Principal point x: the image centre, (width - 1) / 2 with pixel (row r, column c) centred at (x=c, y=r)."""
    cy: float
    """Principal point y: the image centre, (height - 1) / 2 in the same pixel convention."""
    width: int
    """Image width in pixels."""
    height: int
    """Image height in pixels."""
    rotations: np.ndarray
    """(T, 3, 3) head-to-camera rotations in OpenCV camera axes (x right, y down, z forward), acting on the template
    in OpenCV axes: a template point p (FACE_TEMPLATE_68 axes) lies at R @ (p * (1, -1, -1)) + t in the camera; a
    frontal face has R = I."""
    translations: np.ndarray
    """(T, 3) head-to-camera translations t in decimetres, OpenCV camera axes (t[2] is the head's distance)."""
    camera_to_world: np.ndarray
    """(T, 4, 4) float64 camera-to-world matrices as ER-NeRF's transforms_*.json hold them: camera axes x right,
    y up, z backwards (OpenGL/NeRF); world = the FACE_TEMPLATE_68 frame, so the head is static and the camera
    moves."""
    reprojection_error_px: np.ndarray
    """(T,) weighted mean distance in pixels between the landmarks and the projected template (fitted points only),
    for the smoothed pose."""
    focal_at_search_bound: bool
    """True when the focal search ended on its smallest or largest candidate: the true focal may lie beyond it,
    where the error curve is usually flat (a far, telephoto-like view: depth and focal trade off)."""


def fit_head_pose(
    landmarks: np.ndarray,
    width: int,
    height: int,
    *,
    focal_candidates: Sequence[float] | None = None,
    smoothing_frames: int = 5,
    point_weights: np.ndarray | None = None,
) -> HeadPoseFit:
    """Fit FACE_TEMPLATE_68 to (T, 68, 2) pixel landmarks of a width x height video: one focal, a pose per frame.

    The focal length minimises the mean reprojection error over up to 50 evenly spaced frames: the best of
    ``focal_candidates`` (default: 25 values from 0.5 to 6 times the larger image side, geometrically spaced) is
    refined by a bounded search between its neighbours (a single candidate is used as given). Each frame is then
    solved by PnP (EPnP, or the previous frame's pose, refined by OpenCV's iterative solver and Gauss-Newton on the
    weighted reprojection error), with the principal point at the image centre. ``point_weights`` (68,) weigh the
    landmarks (default DEFAULT_POINT_WEIGHTS; weight 0 leaves a point out; at least 6 must count). Rotations
    (quaternions) and translations are then smoothed by a centred moving average over ``smoothing_frames`` (odd;
    1 disables it; the ends are padded with the first and last pose).
    """
    points = _checked_landmarks(landmarks)
    weights = _checked_weights(point_weights)
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if smoothing_frames < 1 or smoothing_frames % 2 == 0:
        raise ValueError(f"smoothing_frames must be a positive odd number, got {smoothing_frames}")
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    candidates = _checked_focals(focal_candidates, max(width, height))
    search = np.unique(np.linspace(0, len(points) - 1, min(len(points), _SEARCH_FRAMES)).round().astype(int))
    focal = _search_focal(points[search], centre, weights, candidates)
    rotations, translations = _solve_sequence(points, focal, centre, weights)
    rotations = smooth_rotations(rotations, smoothing_frames)
    translations = uniform_filter1d(translations, smoothing_frames, axis=0, mode="nearest")
    errors = _reprojection_errors(points, rotations, translations, focal, centre, weights)
    return HeadPoseFit(
        focal_px=focal,
        cx=centre[0],
        cy=centre[1],
        width=int(width),
        height=int(height),
        rotations=rotations,
        translations=translations,
        camera_to_world=_camera_to_world(rotations, translations),
        reprojection_error_px=errors,
        focal_at_search_bound=len(candidates) > 1 and not candidates[0] * 1.001 < focal < candidates[-1] / 1.001,
    )


def transforms_json(
    fit: HeadPoseFit, frame_ids: Sequence[int], *, extras: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The content of an ER-NeRF ``transforms_*.json`` for the frames ``frame_ids`` (indices into the fit).

    ``{"focal_len", "cx", "cy", "w", "h", "units": "dm", "convention", "frames": [{"img_id", "aud_id",
    "transform_matrix", **extras[id]}, ...]}``. cx, cy follow ER-NeRF, whose rays pass through pixel centres at
    (c + 0.5, r + 0.5): they are the fit's principal point plus half a pixel (w / 2, h / 2).
    """
    extras = extras or {}
    frames = []
    for frame_id in map(int, frame_ids):
        if not 0 <= frame_id < len(fit.camera_to_world):
            raise ValueError(f"frame id {frame_id} is outside the fit's {len(fit.camera_to_world)} frames")
        frame = {"img_id": frame_id, "aud_id": frame_id, "transform_matrix": fit.camera_to_world[frame_id].tolist()}
        extra = extras.get(frame_id, {})
        if clash := frame.keys() & extra.keys():
            raise ValueError(f"extras of frame {frame_id} would overwrite {sorted(clash)}")
        frames.append(frame | extra)
    return {
        "focal_len": float(fit.focal_px),
        "cx": float(fit.cx) + 0.5,
        "cy": float(fit.cy) + 0.5,
        "w": fit.width,
        "h": fit.height,
        "units": "dm",
        "convention": CONVENTION,
        "frames": frames,
    }


def split_by_time(n_frames: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices (train, val): validation is the last ceil(n_frames * val_fraction) frames, each part >= 1."""
    if n_frames < 2:
        raise ValueError(f"need at least 2 frames to split, got {n_frames}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    n_val = min(max(math.ceil(n_frames * val_fraction - _FRACTION_TOLERANCE), 1), n_frames - 1)
    frames = np.arange(n_frames)
    return frames[:-n_val], frames[-n_val:]


def _checked_landmarks(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (68, 2) or len(points) == 0:
        raise ValueError(f"landmarks must have shape (T>0, 68, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("landmarks must be finite")
    return points


def _checked_weights(point_weights: np.ndarray | None) -> np.ndarray:
    weights = DEFAULT_POINT_WEIGHTS if point_weights is None else np.asarray(point_weights, dtype=np.float64)
    if weights.shape != (68,) or not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("point_weights must be 68 finite non-negative numbers")
    if np.count_nonzero(weights) < 6:
        raise ValueError("at least 6 landmarks need a positive weight")
    return weights


def _checked_focals(focal_candidates: Sequence[float] | None, image_side: int) -> np.ndarray:
    focals = _DEFAULT_FOCALS * image_side if focal_candidates is None else np.asarray(focal_candidates, dtype=float)
    if focals.ndim != 1 or len(focals) == 0 or not np.isfinite(focals).all() or (focals <= 0).any():
        raise ValueError("focal_candidates must be one or more positive finite numbers")
    return np.unique(focals)


def _search_focal(points: np.ndarray, centre: tuple[float, float], weights: np.ndarray, focals: np.ndarray) -> float:
    """The focal length with the least mean reprojection error over ``points``: grid, then bounded refinement."""

    def cost(focal: float) -> float:
        rotations, translations = _solve_sequence(points, focal, centre, weights)
        return float(_reprojection_errors(points, rotations, translations, focal, centre, weights).mean())

    if len(focals) == 1:
        return float(focals[0])
    costs = [cost(focal) for focal in focals]
    best = int(np.argmin(costs))
    bounds = np.log(focals[[max(best - 1, 0), min(best + 1, len(focals) - 1)]])
    refined = minimize_scalar(
        lambda log_focal: cost(math.exp(log_focal)),
        bounds=tuple(bounds),
        method="bounded",
        options={"xatol": _FOCAL_LOG_TOLERANCE},
    )
    return math.exp(refined.x) if refined.fun < costs[best] else float(focals[best])


def _solve_sequence(
    points: np.ndarray, focal: float, centre: tuple[float, float], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (T, 3, 3) rotations and (T, 3) translations, each frame also tried from the previous one's pose."""
    camera = np.array([[focal, 0.0, centre[0]], [0.0, focal, centre[1]], [0.0, 0.0, 1.0]])
    poses = []
    for image_points in points:
        poses.append(_solve_frame(image_points, camera, weights, poses[-1] if poses else None))
    rotations = Rotation.from_rotvec([rvec for rvec, _ in poses]).as_matrix()
    return rotations, np.array([tvec for _, tvec in poses])


def _solve_frame(
    image_points: np.ndarray, camera: np.ndarray, weights: np.ndarray, guess: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(rvec, tvec) of the template in one frame: the better of the fits started by EPnP and from ``guess``."""
    used = weights > 0
    objects, images = _OBJECT_POINTS[used], image_points[used]
    _, rvec, tvec = cv2.solvePnP(objects, images, camera, None, flags=cv2.SOLVEPNP_EPNP)
    starts = [(rvec, tvec)] if guess is None else [(rvec, tvec), guess]
    fits = []
    for start_rvec, start_tvec in starts:
        _, rvec, tvec = cv2.solvePnP(
            objects, images, camera, None, rvec=start_rvec.copy(), tvec=start_tvec.copy(), useExtrinsicGuess=True,
            flags=cv2.SOLVEPNP_ITERATIVE,
        )
        fits.append(_refine_weighted(objects, images, camera, weights[used], rvec.ravel(), tvec.ravel()))
    return min(fits, key=lambda fit: _weighted_cost(objects, images, camera, weights[used], *fit))


def _refine_weighted(
    objects: np.ndarray, images: np.ndarray, camera: np.ndarray, weights: np.ndarray, rvec: np.ndarray, tvec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton on the weighted squared reprojection error, from (rvec, tvec); stops when a step does not help."""
    root_weights = np.repeat(np.sqrt(weights), 2)
    cost = _weighted_cost(objects, images, camera, weights, rvec, tvec)
    for _ in range(_GAUSS_NEWTON_STEPS):
        projected, jacobian = cv2.projectPoints(objects, rvec, tvec, camera, None)
        residual = (projected.reshape(-1, 2) - images).ravel() * root_weights
        step = gauss_newton_step(jacobian[:, :6] * root_weights[:, None], residual)
        new_rvec, new_tvec = rvec + step[:3], tvec + step[3:]
        new_cost = _weighted_cost(objects, images, camera, weights, new_rvec, new_tvec)
        if not new_cost < cost:
            break
        rvec, tvec, cost = new_rvec, new_tvec, new_cost
    return rvec, tvec


def gauss_newton_step(jacobian: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """The step x minimising |jacobian @ x + residual| for a (N, P) jacobian of full column rank, N >= P: the
    column-scaled normal equations, solved by Gaussian elimination with partial pivoting.

    Written in numpy's own elementwise arithmetic and einsum, not BLAS or LAPACK: OpenBLAS picks its kernels by CPU
    at load time, and its AVX-512 and AVX2 kernels round differently, which moved the fitted poses by up to 5e-8 dm
    between machines and so changed face_prep's transforms_*.json (and every hash after it) on a fresh machine.
    """
    norms = np.sqrt(np.einsum("ni,ni->i", jacobian, jacobian))
    scale = np.where(norms > 0, norms, 1.0)
    scaled = jacobian / scale
    system = np.einsum("ni,nj->ij", scaled, scaled)
    rhs = -np.einsum("ni,n->i", scaled, residual)
    size = len(rhs)
    for column in range(size):
        pivot = column + int(np.argmax(np.abs(system[column:, column])))
        system[[column, pivot]], rhs[[column, pivot]] = system[[pivot, column]], rhs[[pivot, column]]
        if system[column, column] == 0:
            raise np.linalg.LinAlgError("the jacobian is rank-deficient")
        factors = system[column + 1:, column] / system[column, column]
        system[column + 1:] -= factors[:, None] * system[column]
        rhs[column + 1:] -= factors * rhs[column]
    solution = np.zeros(size)
    for row in reversed(range(size)):
        solution[row] = (rhs[row] - np.sum(system[row, row + 1:] * solution[row + 1:])) / system[row, row]
    return solution / scale


def _weighted_cost(
    objects: np.ndarray, images: np.ndarray, camera: np.ndarray, weights: np.ndarray, rvec: np.ndarray, tvec: np.ndarray
) -> float:
    projected, _ = cv2.projectPoints(objects, rvec, tvec, camera, None)
    return float(np.sum(weights * np.sum((projected.reshape(-1, 2) - images) ** 2, axis=1)))


def _reprojection_errors(
    points: np.ndarray,
    rotations: np.ndarray,
    translations: np.ndarray,
    focal: float,
    centre: tuple[float, float],
    weights: np.ndarray,
) -> np.ndarray:
    """(T,) weighted mean pixel distance between ``points`` and the template projected at each pose."""
    in_camera = np.einsum("tij,nj->tni", rotations, _OBJECT_POINTS) + translations[:, None, :]
    projected = focal * in_camera[..., :2] / in_camera[..., 2:] + np.asarray(centre)
    distances = np.linalg.norm(projected - points, axis=2)
    return np.sum(distances * weights, axis=1) / weights.sum()


def smooth_rotations(rotations: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of unit quaternions made sign-consistent over time, renormalised."""
    quaternions = Rotation.from_matrix(rotations).as_quat()
    signs = np.where(np.einsum("ti,ti->t", quaternions[1:], quaternions[:-1]) < 0, -1.0, 1.0)
    quaternions *= np.cumprod(np.concatenate([[1.0], signs]))[:, None]
    averaged = uniform_filter1d(quaternions, window, axis=0, mode="nearest")
    return Rotation.from_quat(averaged).as_matrix()


def _camera_to_world(rotations: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """(T, 4, 4) OpenGL-camera-to-template matrices: the inverse of the head pose with the y and z axes flipped."""
    flip = np.diag(_TEMPLATE_TO_OPENCV)
    inverse_rotations = rotations.transpose(0, 2, 1)
    matrices = np.tile(np.eye(4), (len(rotations), 1, 1))
    matrices[:, :3, :3] = np.einsum("ij,tjk,kl->til", flip, inverse_rotations, flip)
    matrices[:, :3, 3] = -np.einsum("ij,tjk,tk->ti", flip, inverse_rotations, translations)
    return matrices
