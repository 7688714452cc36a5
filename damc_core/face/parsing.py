"""Face parsing: each pixel of a talking-head frame as background, head, neck or torso, and ER-NeRF's parsing colours.

Two backends. "bisenet" is the field's standard, face-parsing.PyTorch's BiSeNet (released weights 79999_iter.pth),
its 19 CelebAMask-HQ classes merged into our four. "mediapipe" runs offline with no weights file: MediaPipe's selfie
segmentation (general model) separates the person from the background, and the 68 iBUG landmarks split the person:

- The person is the probability map above 0.5, keeping only the connected regions that touch the face polygon.
- Directions follow the face: "up" runs from the chin (8) to the mean of the brows (17-26), whose distance is the
  face height; "lateral" is perpendicular to it.
- The face polygon, always HEAD (even where the segmentation misses it): the jaw line 0-16 closed by the brows 26-17
  lifted by 0.4 face heights to cover the forehead.
- The neck band is bounded above by the jaw line from point 4 to 12; its sides run down from 4 and 12, widening
  outwards by 0.15 per unit of depth, to 0.5 face heights below the chin.
- HEAD is the face polygon plus the person above the ears' level (mean of points 0 and 16), and the person between
  the ears' and the chin's levels that is outside the neck band and laterally within the jaw line's extent widened
  on either side by 0.4 jaw widths at the ears, tapering to 0.25 at the chin: hair, ears, hair beside the cheeks.
- NECK is the person inside the neck band; TORSO is the rest of the person (shoulders, clothes, and long hair
  below the chin), and any part of the head zone not connected to the face (a shoulder or collar raised into the
  band beside the chin); BACKGROUND is everything that is not the person.

The rule is deterministic. It knows no colours, so collars, ties and scarves within the neck band count as NECK,
long hair below the chin or outside the tapering band as TORSO, and a shoulder raised into that band that touches
the hair or the face as HEAD.
"""

from __future__ import annotations

import os
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

import cv2
import numpy as np
import torch

from damc_core.errors import InputError
from damc_core.face.bisenet import CELEBAMASK_CLASSES, IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE, BiSeNet


class Part(IntEnum):
    """The four parsing classes, as stored in a label image."""

    BACKGROUND = 0
    HEAD = 1
    NECK = 2
    TORSO = 3


PART_RGB = np.array([[255, 255, 255], [0, 0, 255], [0, 255, 0], [255, 0, 0]], dtype=np.uint8)
"""RGB colour of each Part (row = label) in ER-NeRF's parsing/<i>.png: background white, head blue, neck green, torso
red. ER-NeRF writes and reads these files with OpenCV, whose arrays are BGR, so the triples in its code, head
(255, 0, 0) and torso (0, 0, 255), are these colours reversed; write parsing_to_rgb(labels)[..., ::-1] with
cv2.imwrite."""

BISENET_WEIGHTS_NAME = "79999_iter.pth"
_BISENET_WEIGHTS_HELP = (
    f"Get {BISENET_WEIGHTS_NAME}, the released weights of the face-parsing.PyTorch project (linked from the README of "
    "https://github.com/zllrunning/face-parsing.PyTorch; ER-NeRF's setup fetches the same file from "
    f"https://github.com/YudongGuo/AD-NeRF/blob/master/data_util/face_parsing/{BISENET_WEIGHTS_NAME}?raw=true), and "
    "place it at the configured bisenet_weights path; or use the offline 'mediapipe' backend."
)

_PERSON_THRESHOLD = 0.5
_FOREHEAD_LIFT = 0.4  # face heights above the brows
_EAR_MARGIN = 0.4  # jaw widths beyond the jaw line on either side, at the ears' level
_CHIN_MARGIN = 0.25  # the same at the chin's level
_NECK_LENGTH = 0.5  # face heights below the chin
_NECK_WIDENING = 0.15  # lateral growth of the neck band per unit of depth

_NON_HEAD_CLASSES = {"background": Part.BACKGROUND, "neck": Part.NECK, "neck_l": Part.NECK, "cloth": Part.TORSO}
CELEBAMASK_TO_PART = np.array([_NON_HEAD_CLASSES.get(name, Part.HEAD) for name in CELEBAMASK_CLASSES], np.uint8)
"""The Part of each CelebAMask-HQ class (index = BiSeNet output channel), as ER-NeRF merges them: face, hair, ears,
earring, glasses and hat are HEAD, neck and necklace NECK, cloth TORSO."""


class ParsingBackendUnavailable(InputError, RuntimeError):
    """A parsing backend cannot run here: its package or weights file is missing."""


class FaceParser(Protocol):
    """Parses frames into Part labels; a context manager that closes itself."""

    name: str

    def parse(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Labels (HxW uint8, Part values) of ``frame`` (HxWx3 uint8 RGB) whose face has ``landmarks``: (68, 2) iBUG
        points in pixels, x right and y down, with the centre of pixel (row r, column c) at (x=c, y=r)."""

    def close(self) -> None:
        """Release the backend's resources."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None: ...


def make_parser(
    backend: Literal["mediapipe", "bisenet"],
    *,
    bisenet_weights: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> FaceParser:
    """A face parser of the given backend; "bisenet" needs ``bisenet_weights``, the path of 79999_iter.pth.

    Raises ParsingBackendUnavailable when the backend's package or weights are missing, ValueError for an unknown
    backend.
    """
    if backend == "mediapipe":
        return MediaPipeParser()
    if backend == "bisenet":
        if bisenet_weights is None:
            raise ParsingBackendUnavailable(f"The bisenet parser needs bisenet_weights: {_BISENET_WEIGHTS_HELP}")
        return BiSeNetParser(bisenet_weights, device=device)
    raise ValueError(f"Unknown parsing backend {backend!r}; expected 'mediapipe' or 'bisenet'.")


def parsing_to_rgb(labels: np.ndarray) -> np.ndarray:
    """The ER-NeRF parsing image (HxWx3 uint8 RGB) of Part ``labels`` (HxW)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.isin(labels, list(Part)).all():
        raise ValueError(f"Expected HxW labels with values in {[int(part) for part in Part]}.")
    return PART_RGB[labels]


def rgb_to_parsing(image: np.ndarray) -> np.ndarray:
    """Part labels (HxW uint8) of an ER-NeRF parsing image (HxWx3 RGB); ValueError on any other colour."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected an HxWx3 RGB parsing image, got shape {image.shape}.")
    codes, part_codes = _packed_rgb(image), _packed_rgb(PART_RGB)
    order = np.argsort(part_codes)
    position = np.searchsorted(part_codes[order], codes).clip(max=len(order) - 1)
    unknown = part_codes[order][position] != codes
    if unknown.any():
        row, column = np.argwhere(unknown)[0]
        raise ValueError(
            f"{int(unknown.sum())} pixels have no parsing colour, first at (row {row}, column {column}): "
            f"{tuple(int(value) for value in image[row, column])}."
        )
    return order[position].astype(np.uint8)


def _packed_rgb(rgb: np.ndarray) -> np.ndarray:
    """Each (..., 3) uint8 colour as one integer, 0xRRGGBB."""
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]


def split_person(person: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Part labels (HxW uint8) of a person mask (HxW bool) by the landmark rule of the module docstring."""
    landmarks = _checked_landmarks(landmarks)
    if person.ndim != 2:
        raise ValueError(f"Expected an HxW person mask, got shape {person.shape}.")
    shape = person.shape
    face = _fill(shape, _face_polygon(landmarks))
    person = _regions_touching(person.astype(bool), face)
    labels = np.full(shape, Part.BACKGROUND, dtype=np.uint8)
    labels[person] = Part.TORSO
    labels[person & _fill(shape, _neck_polygon(landmarks))] = Part.NECK
    labels[person & _fill(shape, _head_zone_polygon(landmarks, shape))] = Part.HEAD
    labels[face] = Part.HEAD
    head = labels == Part.HEAD
    labels[head & ~_regions_touching(head, face)] = Part.TORSO
    return labels


class _ClosingContext:
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend's resources."""


class MediaPipeParser(_ClosingContext):
    """Offline parser: MediaPipe selfie segmentation split by the landmark rule of the module docstring."""

    name = "mediapipe"

    def __init__(self) -> None:
        try:
            from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation
        except ImportError as error:
            raise ParsingBackendUnavailable(
                "The mediapipe parser needs the mediapipe package (pip install mediapipe==0.10.21)."
            ) from error
        self._segmenter = SelfieSegmentation(model_selection=0)

    def parse(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Labels (HxW uint8, Part values) of ``frame`` (HxWx3 uint8 RGB); see FaceParser.parse."""
        frame = _checked_frame(frame)
        probability = self._segmenter.process(frame).segmentation_mask
        return split_person(probability > _PERSON_THRESHOLD, landmarks)

    def close(self) -> None:
        self._segmenter.close()


class BiSeNetParser(_ClosingContext):
    """face-parsing.PyTorch's BiSeNet with its released weights, CelebAMask-HQ classes merged into Parts."""

    name = "bisenet"

    def __init__(self, weights: str | os.PathLike[str], device: str = "cpu") -> None:
        path = Path(weights)
        if not path.is_file():
            raise ParsingBackendUnavailable(f"BiSeNet weights not found at {path}. {_BISENET_WEIGHTS_HELP}")
        self._device = torch.device(device)
        self._net = BiSeNet().to(self._device).eval()
        self._net.load_state_dict(torch.load(path, map_location=self._device, weights_only=True), strict=True)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self._device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self._device).view(1, 3, 1, 1)

    def parse(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Labels (HxW uint8, Part values) of ``frame`` (HxWx3 uint8 RGB); the landmarks are only checked."""
        frame = _checked_frame(frame)
        _checked_landmarks(landmarks)
        height, width = frame.shape[:2]
        square = cv2.resize(frame, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        with torch.inference_mode():
            pixels = torch.from_numpy(square).to(self._device).permute(2, 0, 1)[None].float() / 255.0
            classes = self._net((pixels - self._mean) / self._std)[0].argmax(dim=0).to(torch.uint8).cpu().numpy()
        labels = CELEBAMASK_TO_PART[classes]
        return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)


def _checked_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"Expected an HxWx3 uint8 RGB frame, got shape {frame.shape} and dtype {frame.dtype}.")
    return np.ascontiguousarray(frame)


def _checked_landmarks(landmarks: np.ndarray) -> np.ndarray:
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (68, 2) or not np.isfinite(landmarks).all():
        raise ValueError(f"Expected (68, 2) finite iBUG landmarks, got shape {landmarks.shape}.")
    return landmarks


def _face_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Unit "down" (brows to chin) and "lateral" (perpendicular, image-right for an upright face), and face height."""
    chin_to_brows = landmarks[17:27].mean(axis=0) - landmarks[8]
    face_height = float(np.linalg.norm(chin_to_brows))
    down = -chin_to_brows / face_height
    return down, np.array([down[1], -down[0]]), face_height


def _face_polygon(landmarks: np.ndarray) -> np.ndarray:
    down, _, face_height = _face_axes(landmarks)
    forehead = landmarks[26:16:-1] - down * _FOREHEAD_LIFT * face_height
    return np.concatenate([landmarks[:17], forehead])


def _neck_sides(landmarks: np.ndarray, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """Where the neck band's left and right sides (from points 4 and 12) reach ``depth`` along "down"."""
    down, lateral, _ = _face_axes(landmarks)
    sides = []
    for index, outwards in ((4, -lateral), (12, lateral)):
        drop = max(depth - landmarks[index] @ down, 0.0)
        sides.append(landmarks[index] + drop * (down + _NECK_WIDENING * outwards))
    return sides[0], sides[1]


def _neck_polygon(landmarks: np.ndarray) -> np.ndarray:
    down, _, face_height = _face_axes(landmarks)
    left, right = _neck_sides(landmarks, landmarks[8] @ down + _NECK_LENGTH * face_height)
    return np.concatenate([landmarks[4:13], [right, left]])


def _head_zone_polygon(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """All above the ears' level; from there to the chin's level, the tapering lateral band; less the neck band."""
    down, lateral, _ = _face_axes(landmarks)
    jaw = landmarks[:17] @ lateral
    jaw_width = jaw.max() - jaw.min()
    ear_depth = landmarks[[0, 16]].mean(axis=0) @ down
    chin_depth = landmarks[8] @ down
    corners = np.array([[0, 0], [shape[1], 0], [0, shape[0]], [shape[1], shape[0]]], dtype=np.float64)
    top, far_left, far_right = (corners @ down).min() - 1, (corners @ lateral).min() - 1, (corners @ lateral).max() + 1
    neck_left, neck_right = _neck_sides(landmarks, chin_depth)

    def point(across: float, depth: float) -> np.ndarray:
        return across * lateral + depth * down

    return np.array(
        [
            point(far_left, top),
            point(far_right, top),
            point(far_right, ear_depth),
            point(jaw.max() + _EAR_MARGIN * jaw_width, ear_depth),
            point(jaw.max() + _CHIN_MARGIN * jaw_width, chin_depth),
            neck_right,
            *landmarks[12:3:-1],
            neck_left,
            point(jaw.min() - _CHIN_MARGIN * jaw_width, chin_depth),
            point(jaw.min() - _EAR_MARGIN * jaw_width, ear_depth),
            point(far_left, ear_depth),
        ]
    )


def _fill(shape: tuple[int, ...], polygon: np.ndarray) -> np.ndarray:
    """Pixels (HxW bool) that OpenCV's fill covers of ``polygon`` (x, y; centre of pixel (r, c) at (c, r)), 1/16 px."""
    mask = np.zeros(shape[:2], dtype=np.uint8)
    subpixel_bits = 4
    points = np.round(polygon * (1 << subpixel_bits)).astype(np.int32)
    cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=subpixel_bits)
    return mask.astype(bool)


def _regions_touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The connected regions (8-connected) of ``mask`` that overlap ``seed``."""
    _, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    kept = np.unique(regions[mask & seed])
    return np.isin(regions, kept[kept > 0])
