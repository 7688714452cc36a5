"""68-point iBUG facial landmarks of video frames: MediaPipe FaceMesh (offline), dlib (offline, non-commercial model)
or face_alignment's FAN (weights)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol, Self

import numpy as np

from damc_core.errors import InputError

N_LANDMARKS = 68

# The FaceMesh vertex standing in for each iBUG-68 point: FaceMesh's own vertex for the same feature (brow tops, nose
# bridge and tip, nostrils, eye corners and lids, lip borders), and for the jaw the face-oval vertices at iBUG heights.
# Measured over 197 frames (the five HDTF clips, May, the astronaut) as fractions of the eye-corner-to-chin height,
# iBUG's jaw points 0-8 lie at 0.01 0.17 0.33 0.49 0.64 0.77 0.88 0.97 1.00 (dlib's 68-point mean face) and the
# vertices chosen at 0.07 0.20 0.32 0.46 0.60 0.80 0.91 0.99 1.00, and likewise on the other side. The temple vertices
# 162/389 (-0.07) would leave a gap to points 1/15 twice as wide as the others, and 58/288 (0.60) for points 3/13 sit
# level with the mouth corners, where iBUG puts 4/12.
MEDIAPIPE_TO_IBUG68: tuple[int, ...] = (
    127, 234, 93, 132, 58, 136, 149, 148, 152, 377, 378, 365, 288, 361, 323, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose 27-35
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60-67
)

_MEDIAPIPE_INSTALL = (
    "pip install mediapipe==0.10.21 (the last release whose wheel bundles the FaceMesh models and mp.solutions)"
)
_FACE_ALIGNMENT_INSTALL = "pip install face-alignment==1.4.1 (pin opencv-python-headless<5 alongside)"
_FACE_ALIGNMENT_WEIGHTS = (
    "its S3FD/FAN weights download on first use into ~/.cache/torch/hub/checkpoints "
    "(s3fd-619a316812.pth, 2DFAN4-cd938726ad.zip); offline, copy them there"
)

BACKEND_JUDGES: dict[str, str] = {
    "mediapipe": "MediaPipe FaceMesh at MEDIAPIPE_TO_IBUG68 (the detector face_prep placed the training crops with)",
    "dlib": "dlib 68-point (HOG face detector + iBUG 300-W shape predictor, non-commercial)",
    "face_alignment": "face_alignment S3FD face detector + 2D-FAN-4",
}
"""What each backend is, for metric reports."""


class LandmarkBackendUnavailable(InputError, RuntimeError):
    """A landmark backend's package or weights are missing; the message names what to install or download."""


class LandmarkDetector(Protocol):
    """Finds the iBUG-68 landmarks of the faces in a frame. Subclasses inherit use as a context manager."""

    name: str
    """Backend and version, e.g. 'mediapipe-facemesh-0.10.21'."""

    def detect(self, frame: np.ndarray) -> list[np.ndarray]:
        """All faces in an RGB uint8 HxWx3 frame, largest first, each (68, 2) float32 in iBUG-68 order and in pixels,
        the centre of pixel (row r, column c) being (x=c, y=r); [] when there is none."""
        ...

    def close(self) -> None:
        """Release the backend's models; the detector cannot be used afterwards."""
        ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def make_detector(
    backend: Literal["mediapipe", "dlib", "face_alignment"],
    *,
    max_faces: int = 2,
    video: bool = True,
    device: str = "cpu",
) -> LandmarkDetector:
    """A landmark detector finding up to ``max_faces`` faces per frame.

    ``video``: frames come in order from one video, so MediaPipe tracks faces from frame to frame instead of searching
    each frame afresh, and dlib (with ``max_faces=1``) first searches a frame downscaled for the previous frame's face
    (each frame's landmarks are still dlib's own for that frame); FAN always searches. ``device``: torch device of FAN
    (MediaPipe and dlib run on the CPU).
    Raises LandmarkBackendUnavailable when the backend's package or weights are missing.
    """
    if max_faces < 1:
        raise ValueError(f"max_faces must be at least 1, got {max_faces}")
    if backend == "mediapipe":
        return _MediaPipeFaceMesh(max_faces=max_faces, video=video)
    if backend == "dlib":
        from damc_core.face.dlib_landmarks import DlibFaceLandmarks

        return DlibFaceLandmarks(max_faces=max_faces, video=video)
    if backend == "face_alignment":
        return _FaceAlignmentFan(max_faces=max_faces, device=device)
    raise ValueError(f"unknown landmark backend {backend!r}; expected one of {', '.join(map(repr, BACKEND_JUDGES))}")


def detect_sequence(
    detector: LandmarkDetector, frames: Iterable[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Landmarks of the largest face in each frame: (T, 68, 2) float32, NaN where no face was found; the number of
    faces found in each frame (T,) int; and whether one was found (T,) bool."""
    missing = np.full((N_LANDMARKS, 2), np.nan, dtype=np.float32)
    landmarks, face_counts = [], []
    for frame in frames:
        faces = detector.detect(frame)
        landmarks.append(faces[0] if faces else missing)
        face_counts.append(len(faces))
    counts = np.array(face_counts, dtype=np.int64)
    return np.array(landmarks, dtype=np.float32).reshape(-1, N_LANDMARKS, 2), counts, counts > 0


class _MediaPipeFaceMesh(LandmarkDetector):
    """MediaPipe FaceMesh (468 vertices) read at the vertices of MEDIAPIPE_TO_IBUG68; one graph serves all frames."""

    def __init__(self, *, max_faces: int, video: bool):
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError as exc:
            raise LandmarkBackendUnavailable(f"The mediapipe landmark backend needs {_MEDIAPIPE_INSTALL}.") from exc
        self.name = f"mediapipe-facemesh-{importlib.metadata.version('mediapipe')}"
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=not video,
            max_num_faces=max_faces,
            refine_landmarks=False,
            min_detection_confidence=0.5,
        )

    def detect(self, frame: np.ndarray) -> list[np.ndarray]:
        frame = checked_frame(frame)
        if self._mesh is None:
            raise RuntimeError(f"{self.name} detector is closed")
        faces = self._mesh.process(frame).multi_face_landmarks or []
        height, width = frame.shape[:2]
        return largest_first([_facemesh_to_ibug68(face.landmark, width, height) for face in faces])

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None


class _FaceAlignmentFan(LandmarkDetector):
    """face_alignment's S3FD face detector and 2D-FAN-4 landmark network (iBUG-68 natively)."""

    def __init__(self, *, max_faces: int, device: str):
        try:
            import face_alignment
        except ImportError as exc:
            raise LandmarkBackendUnavailable(
                f"The face_alignment landmark backend needs {_FACE_ALIGNMENT_INSTALL}; {_FACE_ALIGNMENT_WEIGHTS}."
            ) from exc
        try:
            self._model = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device=device, face_detector="sfd"
            )
        except OSError as exc:  # URLError included: the weights could not be downloaded
            raise LandmarkBackendUnavailable(
                f"face_alignment could not load its weights ({exc}): {_FACE_ALIGNMENT_WEIGHTS}."
            ) from exc
        self.name = f"face-alignment-{face_alignment.__version__}-sfd-2DFAN4"
        self._max_faces = max_faces

    def detect(self, frame: np.ndarray) -> list[np.ndarray]:
        frame = checked_frame(frame)
        if self._model is None:
            raise RuntimeError(f"{self.name} detector is closed")
        faces = self._model.get_landmarks_from_image(frame) or []
        return largest_first([np.asarray(face, dtype=np.float32) for face in faces])[: self._max_faces]

    def close(self) -> None:
        self._model = None


def checked_frame(frame: np.ndarray) -> np.ndarray:
    """The frame as a C-contiguous array, after checking it is RGB uint8 HxWx3."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"Expected an RGB uint8 HxWx3 frame, got {frame.dtype} of shape {frame.shape}.")
    return np.ascontiguousarray(frame)


def _facemesh_to_ibug68(vertices: Sequence[Any], width: int, height: int) -> np.ndarray:
    """iBUG-68 points in pixels from FaceMesh's normalised vertices (0 and 1 at the image's outer edges)."""
    normalised = np.array([(vertices[index].x, vertices[index].y) for index in MEDIAPIPE_TO_IBUG68])
    return (normalised * (width, height) - 0.5).astype(np.float32)


def largest_first(faces: list[np.ndarray]) -> list[np.ndarray]:
    """Faces sorted by the area of their landmarks' bounding box, largest first."""
    return sorted(faces, key=lambda points: float(np.prod(np.ptp(points, axis=0))), reverse=True)
