"""dlib's 68-point landmarks (HOG face detector, then the iBUG 300-W shape predictor), an LMD judge independent of
MediaPipe. The 68-point model's training data (iBUG 300-W) excludes commercial use."""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from damc_core.face.landmarks import LandmarkBackendUnavailable, LandmarkDetector, checked_frame, largest_first

if TYPE_CHECKING:
    import dlib

DLIB_INSTALL = "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
MODEL_PACKAGE = "face_recognition_models"
SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"

HOG_WINDOW_PX = 80
"""Side of the smallest face dlib's HOG frontal face detector finds without upsampling the image."""
SMALLEST_FACE_FRACTION = 0.25
"""A full search upsamples the frame until faces this fraction of its shorter side are found (512²: none, 256²:
once)."""
TRACKED_FACE_PX = 120
"""In video mode a frame is first searched downscaled so that the previous frame's face is about this large (1.5
HOG windows: faces down to 2/3 of the previous one's size are still found); a frame where that finds none is
searched in full."""
PYRAMID_STEP = 5 / 6
"""Scale between the levels of dlib's HOG image pyramid; the tracked search's scale is a power of it, so that the
same face size gives the same scale in the rendered and the ground-truth video."""


def model_path(filename: str) -> Path:
    """The path of a model file of the face-recognition-models package; LandmarkBackendUnavailable when the package
    or the file is missing."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)  # importing the package itself needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkBackendUnavailable(
            f"The dlib landmark backend needs {filename} from the face-recognition-models package: {DLIB_INSTALL}."
        )
    path = Path(spec.submodule_search_locations[0]) / "models" / filename
    if not path.is_file():
        raise LandmarkBackendUnavailable(f"dlib's model file {path} is missing; reinstall it: {DLIB_INSTALL}.")
    return path


def full_search_upsampling(height: int, width: int) -> int:
    """How many times a full search doubles a frame of this size (see SMALLEST_FACE_FRACTION)."""
    smallest_face = SMALLEST_FACE_FRACTION * min(height, width)
    return max(0, math.ceil(math.log2(HOG_WINDOW_PX / smallest_face)))


def tracked_search_scale(previous_face_px: float) -> float:
    """The smallest power of PYRAMID_STEP that scales the previous frame's face to at least TRACKED_FACE_PX."""
    return PYRAMID_STEP ** math.floor(math.log(previous_face_px / TRACKED_FACE_PX) / math.log(1 / PYRAMID_STEP))


@functools.cache
def _load_models(predictor_path: Path) -> tuple[dlib.fhog_object_detector, dlib.shape_predictor]:
    """dlib's HOG frontal face detector and the shape predictor at `predictor_path`, loaded once per process (~1 s on
    2 cores): an evaluation makes a detector for each video."""
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path))


class DlibFaceLandmarks(LandmarkDetector):
    """dlib's HOG frontal face detector and 68-point shape predictor (iBUG-68 natively, whole-pixel points)."""

    def __init__(self, *, max_faces: int, video: bool):
        try:
            import dlib
        except ImportError as exc:
            raise LandmarkBackendUnavailable(f"The dlib landmark backend needs dlib: {DLIB_INSTALL}.") from exc
        self.name = f"dlib-{dlib.__version__}-hog-shape68"
        self._rectangle = dlib.rectangle
        self._face_detector, self._shape_predictor = _load_models(model_path(SHAPE_PREDICTOR_FILE))
        self._max_faces = max_faces
        self._track = video and max_faces == 1  # with more faces a downscaled search could miss the smaller ones
        self._previous_face_px: float | None = None

    def detect(self, frame: np.ndarray) -> list[np.ndarray]:
        frame = checked_frame(frame)
        if self._shape_predictor is None:
            raise RuntimeError(f"{self.name} detector is closed")
        boxes = self._tracked_search(frame) if self._previous_face_px is not None else []
        if not boxes:
            boxes = list(self._face_detector(frame, full_search_upsampling(*frame.shape[:2])))
        if self._track:
            self._previous_face_px = max((box.width() for box in boxes), default=None)
        faces = [self._shape(frame, box) for box in boxes]
        return largest_first(faces)[: self._max_faces]

    def _tracked_search(self, frame: np.ndarray) -> list[dlib.rectangle]:
        """Faces found on the frame scaled for the previous frame's face, as boxes of the full frame; [] when none, or
        when that scale would be no smaller than the full search's."""
        scale = tracked_search_scale(self._previous_face_px)
        if scale >= 2 ** full_search_upsampling(*frame.shape[:2]):
            return []
        height, width = frame.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        scaled = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        return [self._unscaled(box, scale) for box in self._face_detector(scaled, 0)]

    def _unscaled(self, box: dlib.rectangle, scale: float) -> dlib.rectangle:
        """A box found on the frame scaled by `scale`, in the full frame's pixels (pixel centres map onto each other)."""
        edges = (box.left(), box.top(), box.right(), box.bottom())
        return self._rectangle(*(round((edge + 0.5) / scale - 0.5) for edge in edges))

    def _shape(self, frame: np.ndarray, box: dlib.rectangle) -> np.ndarray:
        shape = self._shape_predictor(frame, box)
        return np.array([(point.x, point.y) for point in shape.parts()], dtype=np.float32)

    def close(self) -> None:
        """Drop this detector's models (they stay loaded for the process's next dlib detector)."""
        self._shape_predictor = None
        self._face_detector = None
