"""Eye aspect ratio and blink signal: known answers on synthetic eyes, and the talking portrait's rendered blinks."""

from __future__ import annotations

import numpy as np
import pytest

from damc_core.face.blink import blink_signal, eye_aspect_ratio
from damc_core.params import ArticulationConfig
from damc_core.sample.portrait import TalkingPortrait, astronaut

CONFIG = ArticulationConfig(
    window_s=0.04, dynamic_range_db=30.0, loud_percentile=95.0, rounded_centroid_hz=700.0,
    spread_centroid_hz=2000.0, smoothing_frames=3, max_open_px=9.0, max_spread_px=3.0,
)


def eye_points(corner: tuple[float, float], width: float, opening: float) -> np.ndarray:
    """Six iBUG eye points p1..p6 of an eye `width` wide whose lids are `opening` apart at 1/3 and 2/3 of its width."""
    x, y = corner
    return np.array([
        [x, y], [x + width / 3, y - opening / 2], [x + 2 * width / 3, y - opening / 2],
        [x + width, y], [x + 2 * width / 3, y + opening / 2], [x + width / 3, y + opening / 2],
    ])


def face(right_opening: float, left_opening: float, width: float = 30.0) -> np.ndarray:
    """(68, 2) landmarks: zero except for the two eyes."""
    points = np.zeros((68, 2))
    points[36:42] = eye_points((200.0, 250.0), width, right_opening)
    points[42:48] = eye_points((260.0, 250.0), width, left_opening)
    return points


def test_eye_aspect_ratio_of_synthetic_eyes_is_opening_over_width():
    ratios = eye_aspect_ratio(np.stack([face(9.0, 9.0), face(0.0, 0.0), face(12.0, 6.0)]))
    np.testing.assert_allclose(ratios, [0.3, 0.0, 0.3], atol=1e-12)


def test_eye_aspect_ratio_ignores_scale_position_and_rotation():
    points = face(8.0, 10.0)
    angle = np.radians(25.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 2.5 * points @ rotation.T + [40.0, -13.0]
    np.testing.assert_allclose(eye_aspect_ratio(moved[None]), eye_aspect_ratio(points[None]), rtol=1e-12)


def test_blink_signal_is_zero_open_one_closed_linear_between():
    openings = np.array([9.0] * 20 + [0.0, 9.0 * 0.35, 9.0 * 0.675, 9.0 * 0.2, 12.0])
    signal = blink_signal(np.stack([face(o, o) for o in openings]))
    assert signal.shape == (25,)
    np.testing.assert_allclose(signal[:20], 0.0)
    np.testing.assert_allclose(signal[20:], [1.0, 1.0, 0.5, 1.0, 0.0], atol=1e-12)


def test_blink_signal_falls_monotonically_as_the_eyes_open():
    openings = np.linspace(0.0, 10.0, 41)
    signal = blink_signal(np.stack([face(o, o) for o in openings]), open_percentile=100.0, closed_ratio=0.2)
    assert np.all(np.diff(signal) <= 0)
    np.testing.assert_array_equal(signal[openings < 2.0], 1.0)
    assert signal[-1] == 0.0 and np.all(np.diff(signal[openings > 2.0]) < 0), "strictly falling above closed"


@pytest.mark.parametrize("options", [{"open_percentile": 0.0}, {"open_percentile": 101.0}, {"closed_ratio": 1.0}])
def test_blink_signal_rejects_bad_options(options):
    with pytest.raises(ValueError):
        blink_signal(np.stack([face(9.0, 9.0)] * 3), **options)


def test_blink_signal_rejects_degenerate_eyes():
    with pytest.raises(ValueError):
        blink_signal(np.zeros((3, 68, 2)))
    with pytest.raises(ValueError):
        eye_aspect_ratio(np.zeros((3, 67, 2)))


def test_blink_signal_follows_the_portraits_rendered_blink():
    portrait = TalkingPortrait(*astronaut(), CONFIG)
    rendered = np.linspace(0.0, 1.0, 6)
    landmarks = [portrait.render(0.0, 0.0, 0.0)[1]] * 10 + [portrait.render(0.0, 0.0, b)[1] for b in rendered]
    signal = blink_signal(np.stack(landmarks))
    assert np.all(signal[:10] == 0.0)
    sweep = signal[10:]
    assert sweep[0] == 0.0 and sweep[-1] == 1.0
    assert np.all(np.diff(sweep) >= 0) and np.count_nonzero(np.diff(sweep) > 0.05) >= 3, sweep
