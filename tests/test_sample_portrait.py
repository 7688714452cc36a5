"""The talking portrait: rest pose is the photograph, the jaw and eyelids move where the landmarks say."""

from __future__ import annotations

import numpy as np
import pytest

from damc_core.params import ArticulationConfig, LookConfig
from damc_core.sample.portrait import IBUG_MIRROR, TalkingPortrait, astronaut, frame_crop, restyle

CONFIG = ArticulationConfig(
    window_s=0.04, dynamic_range_db=30.0, loud_percentile=95.0, rounded_centroid_hz=700.0,
    spread_centroid_hz=2000.0, smoothing_frames=3, max_open_px=9.0, max_spread_px=3.0,
)


@pytest.fixture(scope="module")
def portrait() -> TalkingPortrait:
    return TalkingPortrait(*astronaut(), CONFIG)


def test_rest_pose_is_the_photograph(portrait):
    image, landmarks = astronaut()
    frame, points = portrait.render(0.0, 0.0, 0.0)
    np.testing.assert_array_equal(frame, image)
    np.testing.assert_allclose(points, landmarks)


def test_open_jaw_drops_the_lower_lip_and_keeps_the_upper_lip(portrait):
    _, rest = astronaut()
    frame, points = portrait.render(1.0, 0.0, 0.0)
    drop = points - rest
    assert drop[66, 1] == pytest.approx(CONFIG.max_open_px, rel=0.15)
    assert drop[8, 1] > 0.6 * CONFIG.max_open_px, "the chin drops with the jaw"
    np.testing.assert_allclose(drop[[51, 61, 62, 63, 30, 36, 45]], 0.0, atol=1e-6)
    gap = frame[int(rest[62, 1]) + 3 : int(rest[66, 1]) + 4, int(rest[62, 0]) - 3 : int(rest[62, 0]) + 4]
    assert gap.mean() < 70, "the opened gap between the teeth should show the dark mouth interior"


def test_mouth_opening_grows_with_aperture(portrait):
    openings = [np.linalg.norm(np.subtract(*portrait.render(a, 0.0, 0.0)[1][[66, 62]])) for a in np.linspace(0, 1, 6)]
    assert np.all(np.diff(openings) > 0.5)


def test_spread_moves_the_mouth_corners_outwards(portrait):
    _, rest = astronaut()
    _, spread = portrait.render(0.5, 1.0, 0.0)
    _, rounded = portrait.render(0.5, -1.0, 0.0)
    assert spread[48, 0] < rest[48, 0] - 1.5 and spread[54, 0] > rest[54, 0] + 1.5
    assert rounded[48, 0] > rest[48, 0] + 1.5 and rounded[54, 0] < rest[54, 0] - 1.5


def test_blink_closes_the_eyes_and_leaves_the_mouth(portrait):
    _, rest = astronaut()
    open_frame, _ = portrait.render(0.0, 0.0, 0.0)
    shut_frame, points = portrait.render(0.0, 0.0, 1.0)
    for corner, upper, lower, other_corner in ((36, (37, 38), (41, 40), 39), (42, (43, 44), (47, 46), 45)):
        lower_lid = rest[[corner, *lower, other_corner]]
        for index in upper:
            assert points[index, 1] > rest[index, 1] + 2
            assert points[index, 1] == pytest.approx(np.interp(points[index, 0], *lower_lid.T), abs=1e-6)
    changed_rows = np.flatnonzero(np.any(open_frame != shut_frame, axis=(1, 2)))
    assert changed_rows.size > 0
    assert rest[36:48, 1].min() - 4 <= changed_rows.min() and changed_rows.max() <= rest[36:48, 1].max() + 4


def test_mirror_permutation_is_an_involution_that_keeps_ibug_sides():
    np.testing.assert_array_equal(IBUG_MIRROR[IBUG_MIRROR], np.arange(68))
    look = LookConfig(crop=(0, 0, 512), hue_shift_deg=0.0, brightness=1.0, mirror=True)
    image, landmarks = restyle(*astronaut(), look)
    for left, right in ((36, 45), (0, 16), (48, 54)):
        assert landmarks[left, 0] < landmarks[right, 0]
    original, original_landmarks = astronaut()
    np.testing.assert_array_equal(image, original[:, ::-1])
    np.testing.assert_allclose(landmarks[30, 0], 511 - original_landmarks[30, 0])


def test_frame_crop_moves_landmarks_with_the_pixels():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[30:34, 20:24] = 255
    point = np.array([[21.5, 31.5]])
    frame, moved = frame_crop(image, point, (10, 12, 40), 80)
    ys, xs = np.nonzero(frame[..., 0] > 127)
    assert moved[0] == pytest.approx([xs.mean(), ys.mean()], abs=0.5)
    with pytest.raises(ValueError, match="does not fit"):
        frame_crop(image, point, (40, 40, 40), 80)
