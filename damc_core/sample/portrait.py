"""A talking portrait: a photograph whose jaw, lips and eyelids are moved around its real facial landmarks."""

from __future__ import annotations

import cv2
import numpy as np
import skimage.color
import skimage.data
from scipy.interpolate import RBFInterpolator

from damc_core.params import ArticulationConfig, LookConfig

# The 68 iBUG landmarks of scikit-image's public-domain astronaut portrait (Eileen Collins, NASA), 512x512.
# Measured once with MediaPipe FaceMesh 0.10.21 (refined landmarks) mapped onto the iBUG-68 order with
# damc_core.face.landmarks.MEDIAPIPE_TO_IBUG68, and checked by eye.
# Pixel coordinates (x right, y down) with the centre of pixel (row r, column c) at (x=c, y=r).
ASTRONAUT_LANDMARKS = np.array(
    [
        [179.1, 100.8], [178.9, 109.5], [178.8, 118.4], [179.3, 128.3],
        [181.1, 138.9], [188.6, 154.8], [199.4, 166.8], [211.7, 175.2],
        [220.8, 176.9], [229.9, 176.4], [243.3, 169.5], [255.4, 158.9],
        [264.6, 143.9], [267.5, 133.6], [269.0, 123.9], [269.7, 115.0],
        [270.2, 106.3], [187.6, 90.6], [191.9, 87.6], [198.3, 86.4],
        [206.3, 87.4], [215.4, 89.3], [235.3, 91.0], [244.6, 90.3],
        [252.5, 90.2], [258.5, 92.1], [262.3, 95.5], [224.4, 100.0],
        [223.9, 109.9], [223.4, 119.4], [223.1, 125.3], [212.6, 128.0],
        [216.7, 130.7], [222.9, 131.9], [229.5, 131.4], [233.9, 129.2],
        [194.7, 100.4], [198.9, 97.6], [205.8, 97.6], [212.8, 103.2],
        [206.3, 103.8], [199.6, 103.3], [236.5, 104.4], [244.2, 99.5],
        [251.4, 100.1], [255.3, 103.8], [249.5, 106.1], [242.8, 105.7],
        [201.3, 138.7], [210.7, 138.6], [216.6, 138.7], [223.1, 140.0],
        [229.7, 139.2], [235.6, 139.5], [244.5, 140.5], [234.2, 151.7],
        [228.7, 153.7], [222.2, 154.1], [215.7, 153.0], [210.3, 150.6],
        [202.8, 139.4], [217.1, 141.9], [223.0, 142.7], [228.9, 142.4],
        [242.9, 141.0], [228.1, 149.2], [222.5, 149.6], [216.8, 148.8],
    ]
)

# iBUG-68 index of each point's mirror image, for flipping a face left-right.
IBUG_MIRROR = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nostrils
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)

CAVITY_RGB = np.array([58.0, 18.0, 24.0])
"""Colour of the open mouth's interior."""

# Unit jaw displacement at landmarks that move with the jaw (1 = the full jaw drop).
_JAW_WEIGHTS = {
    **{index: 1.0 for index in (7, 8, 9, 56, 57, 58, 65, 66, 67)},
    **{index: 0.85 for index in (6, 10, 55, 59)},
    **{index: 0.55 for index in (5, 11)},
    **{index: 0.3 for index in (60, 64)},
    **{index: 0.25 for index in (4, 12, 48, 54)},
    **{index: 0.0 for index in (2, 3, 13, 14, 31, 32, 33, 34, 35, 49, 50, 51, 52, 53)},
}
# Unit horizontal displacement of the lips at full spread (negative: towards the image's left).
_SPREAD_WEIGHTS = {
    48: -1.0, 60: -1.0, 54: 1.0, 64: 1.0,
    49: -0.5, 59: -0.5, 61: -0.5, 67: -0.5,
    53: 0.5, 55: 0.5, 63: 0.5, 65: 0.5,
    50: -0.25, 58: -0.25, 52: 0.25, 56: 0.25,
    51: 0.0, 57: 0.0, 62: 0.0, 66: 0.0, 33: 0.0, 8: 0.0,
}
_NECK_MARGIN_PX = 30.0
_BOX_MARGIN_PX = 8
_TAPER_PX = 6.0
_CHEEK_TRANSITION_PX = 12.0
_EYES = ((36, (37, 38), (41, 40), 39), (42, (43, 44), (47, 46), 45))


def astronaut() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut portrait (512x512 RGB uint8) and its 68 landmarks."""
    return skimage.data.astronaut(), ASTRONAUT_LANDMARKS.copy()


def restyle(image: np.ndarray, landmarks: np.ndarray, look: LookConfig) -> tuple[np.ndarray, np.ndarray]:
    """Mirror, hue-rotate and brighten a portrait; landmarks follow the mirror, keeping iBUG order."""
    if look.mirror:
        image = image[:, ::-1].copy()
        landmarks = landmarks[IBUG_MIRROR].copy()
        landmarks[:, 0] = image.shape[1] - 1 - landmarks[:, 0]
    if look.hue_shift_deg:
        hsv = skimage.color.rgb2hsv(image)
        hsv[..., 0] = (hsv[..., 0] + look.hue_shift_deg / 360.0) % 1.0
        image = np.round(skimage.color.hsv2rgb(hsv) * 255.0).astype(np.uint8)
    if look.brightness != 1.0:
        image = np.clip(np.round(image * look.brightness), 0, 255).astype(np.uint8)
    return image, landmarks


def frame_crop(
    image: np.ndarray, landmarks: np.ndarray, crop: tuple[int, int, int], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the square `crop` (x, y, side) out of `image`, resize it to size x size, and move the landmarks along."""
    x, y, side = crop
    if x < 0 or y < 0 or x + side > image.shape[1] or y + side > image.shape[0]:
        raise ValueError(f"crop {crop} does not fit in an image of {image.shape[1]}x{image.shape[0]}")
    scale = size / side
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    frame = cv2.resize(image[y : y + side, x : x + side], (size, size), interpolation=interpolation)
    moved = (landmarks - [x, y] + 0.5) * scale - 0.5
    return frame, moved


def _piecewise(points: np.ndarray):
    """y(x) through `points` (sorted by x), constant beyond the ends."""
    order = np.argsort(points[:, 0])
    xs, ys = points[order, 0], points[order, 1]
    return lambda x: np.interp(x, xs, ys)


def _thin_plate(points: np.ndarray, values: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    field = RBFInterpolator(points, values, kernel="thin_plate_spline")
    return field(np.column_stack([xs.ravel(), ys.ravel()])).reshape(xs.shape)


def _bilinear(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return cv2.remap(
        field.astype(np.float32), x.astype(np.float32)[None], y.astype(np.float32)[None],
        interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
    )[0]


class TalkingPortrait:
    """Renders a portrait with a given jaw aperture, lip spread and eyelid closure, and where its landmarks went.

    The jaw is a smooth displacement field (a thin-plate spline through landmark weights) that is cut along the line
    where the teeth meet: below it the lower lip, lower teeth and chin drop; above it the upper teeth stay; the gap
    that opens is painted as the mouth's interior. Lip spread is a second, horizontal field. A blink paints the
    eyelid, sampled from the skin above the eye, down over the eye opening.
    """

    def __init__(self, image: np.ndarray, landmarks: np.ndarray, config: ArticulationConfig):
        self.image = image.astype(np.float32)
        self.landmarks = np.asarray(landmarks, dtype=np.float64)
        self.config = config
        lm = self.landmarks
        height, width = image.shape[:2]
        self.box = (
            max(int(lm[2, 0]) - _BOX_MARGIN_PX, 0),
            max(int(lm[33, 1]) - _BOX_MARGIN_PX, 0),
            min(int(lm[14, 0]) + _BOX_MARGIN_PX + 1, width),
            min(int(lm[8, 1] + _NECK_MARGIN_PX) + _BOX_MARGIN_PX + 1, height),
        )
        x0, y0, x1, y1 = self.box
        self.grid_x, self.grid_y = np.meshgrid(
            np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64)
        )
        self.split = _piecewise(
            np.array([lm[60], (lm[61] + lm[67]) / 2, (lm[62] + lm[66]) / 2, (lm[63] + lm[65]) / 2, lm[64]])
        )
        self.corners_x = (lm[60, 0], lm[64, 0])
        self.jaw_unit = self._jaw_field() * self._jaw_attachment() * self._taper()
        self.spread_unit = self._spread_field() * self._taper()
        self.eyelid_rgb = [self._eyelid_colour(lower) for _, _, lower, _ in _EYES]

    def _jaw_field(self) -> np.ndarray:
        lm = self.landmarks
        neck_y = lm[8, 1] + _NECK_MARGIN_PX
        neck = np.column_stack([np.linspace(lm[4, 0], lm[12, 0], 5), np.full(5, neck_y)])
        points = np.vstack([lm[list(_JAW_WEIGHTS)], neck])
        values = np.concatenate([list(_JAW_WEIGHTS.values()), np.zeros(len(neck))])
        return _thin_plate(points, values, self.grid_x, self.grid_y)

    def _jaw_attachment(self) -> np.ndarray:
        """1 where a pixel moves with the jaw, 0 where it stays: a sharp cut inside the mouth, soft on the cheeks."""
        outside = np.maximum(self.corners_x[0] - self.grid_x, self.grid_x - self.corners_x[1]).clip(min=0.0)
        transition = 1.0 + _CHEEK_TRANSITION_PX * np.clip(outside / 15.0, 0.0, 1.0)
        return np.clip((self.grid_y - self.split(self.grid_x)) / transition + 0.5, 0.0, 1.0)

    def _spread_field(self) -> np.ndarray:
        lm = self.landmarks
        ring = np.array([[lm[48, 0] - 15, lm[48, 1]], [lm[54, 0] + 15, lm[54, 1]]])
        points = np.vstack([lm[list(_SPREAD_WEIGHTS)], ring])
        values = np.concatenate([list(_SPREAD_WEIGHTS.values()), np.zeros(len(ring))])
        return _thin_plate(points, values, self.grid_x, self.grid_y)

    def _taper(self) -> np.ndarray:
        """1 inside the box, falling to 0 at its border, so the fields vanish outside it."""
        x0, y0, x1, y1 = self.box
        distance = np.minimum.reduce(
            [self.grid_x - x0, x1 - 1 - self.grid_x, self.grid_y - y0, y1 - 1 - self.grid_y]
        )
        return np.clip(distance / _TAPER_PX, 0.0, 1.0)

    def _eyelid_colour(self, lower: tuple[int, int]) -> np.ndarray:
        """Mean skin colour of a band just under the eye, slightly shaded."""
        points = self.landmarks[list(lower)]
        x_lo, x_hi = int(points[:, 0].min()), int(points[:, 0].max()) + 1
        y_lo = int(points[:, 1].max()) + 3
        return self.image[y_lo : y_lo + 3, x_lo:x_hi].reshape(-1, 3).mean(axis=0) * 0.9

    def render(self, aperture: float, spread: float, blink: float) -> tuple[np.ndarray, np.ndarray]:
        """The portrait (uint8) at this jaw aperture [0, 1], lip spread [-1, 1] and eyelid closure [0, 1],
        and its 68 landmarks."""
        dy = aperture * self.config.max_open_px * self.jaw_unit
        dx = spread * self.config.max_spread_px * self.spread_unit
        frame = self.image.copy()
        x0, y0, x1, y1 = self.box
        region = cv2.remap(
            self.image, (self.grid_x - dx).astype(np.float32), (self.grid_y - dy).astype(np.float32),
            interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
        )
        cavity = self._cavity_alpha(dy)[..., None]
        frame[y0:y1, x0:x1] = region * (1.0 - cavity) + CAVITY_RGB * cavity
        landmarks = self._moved_landmarks(dx, dy)
        if blink > 0.0:
            for eye, colour in zip(_EYES, self.eyelid_rgb, strict=True):
                self._close_eye(frame, landmarks, eye, colour, blink)
        return np.clip(np.round(frame), 0, 255).astype(np.uint8), landmarks

    def _cavity_alpha(self, dy: np.ndarray) -> np.ndarray:
        """Fraction of each pixel covered by the gap [teeth line, teeth line + jaw drop] between the mouth corners."""
        split = self.split(self.grid_x)
        coverage = np.minimum(self.grid_y + 0.5, split + dy) - np.maximum(self.grid_y - 0.5, split)
        between_corners = (self.grid_x > self.corners_x[0]) & (self.grid_x < self.corners_x[1])
        return np.clip(coverage, 0.0, 1.0) * between_corners

    def _moved_landmarks(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Solve p' - d(p') = p for every landmark p (the warp samples the source at p' - d(p'))."""
        x0, y0 = self.box[:2]
        moved = self.landmarks.copy()
        for _ in range(8):
            moved[:, 0] = self.landmarks[:, 0] + _bilinear(dx, moved[:, 0] - x0, moved[:, 1] - y0)
            moved[:, 1] = self.landmarks[:, 1] + _bilinear(dy, moved[:, 0] - x0, moved[:, 1] - y0)
        return moved

    @staticmethod
    def _close_eye(frame: np.ndarray, landmarks: np.ndarray, eye: tuple, colour: np.ndarray, blink: float) -> None:
        """Lower the upper eyelid by `blink` of the eye's opening, in place; the upper-lid landmarks follow."""
        left, upper, lower, right = eye
        ends = [landmarks[left], landmarks[right]]
        upper_lid = _piecewise(np.array([*ends, *landmarks[list(upper)]]))
        lower_lid = _piecewise(np.array([*ends, *landmarks[list(lower)]]))
        x_lo, x_hi = int(np.floor(ends[0][0])), int(np.ceil(ends[1][0])) + 1
        y_lo = int(np.floor(landmarks[list(upper), 1].min())) - 2
        y_hi = int(np.ceil(landmarks[list(lower), 1].max())) + 2
        xs, ys = np.meshgrid(np.arange(x_lo, x_hi, dtype=np.float64), np.arange(y_lo, y_hi, dtype=np.float64))
        top = upper_lid(xs) - 1.5
        lid = upper_lid(xs) + blink * (lower_lid(xs) - upper_lid(xs))
        inside = np.clip(xs - ends[0][0] + 0.5, 0, 1) * np.clip(ends[1][0] - xs + 0.5, 0, 1)
        alpha = (np.clip(lid - ys + 0.5, 0, 1) * np.clip(ys - top + 0.5, 0, 1) * inside)[..., None]
        lash = (np.clip(1.0 - np.abs(ys - lid), 0, 1) * inside * 0.6 * blink)[..., None]
        patch = frame[y_lo:y_hi, x_lo:x_hi]
        patch[:] = (patch * (1 - alpha) + colour * alpha) * (1 - lash)
        for index in upper:
            x = landmarks[index, 0]
            landmarks[index, 1] = upper_lid(x) + blink * (lower_lid(x) - upper_lid(x))
