"""Mouth opening from landmarks, lips-box brightness, and the correlation helper."""

from __future__ import annotations

import numpy as np
import pytest

from damc_core.metrics.mouth import INNER_LIP_PAIRS, correlation, mean_intensity, mouth_opening


def test_mouth_opening_is_the_mean_inner_lip_gap():
    landmarks = np.zeros((2, 68, 2))
    for upper, lower in INNER_LIP_PAIRS:
        landmarks[:, upper] = (10.0 + upper, 50.0)
        landmarks[:, lower] = (10.0 + upper, 50.0)
    landmarks[1, [lower for _, lower in INNER_LIP_PAIRS], 1] += [2.0, 4.0, 6.0]
    assert mouth_opening(landmarks) == pytest.approx([0.0, 4.0])


def test_mouth_opening_is_nan_where_landmarks_are_missing():
    landmarks = np.full((1, 68, 2), np.nan)
    assert np.isnan(mouth_opening(landmarks)).all()


def test_mean_intensity_reads_only_the_rectangle():
    frames = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    frames[1, 2:4, 3:6] = 90
    frames[1, 0, 0] = 255
    assert mean_intensity(frames, (3, 2, 6, 4)) == pytest.approx([0.0, 90.0])


def test_correlation_known_answers_and_undefined_cases():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert correlation(a, -a) == pytest.approx(-1.0)
    assert correlation(a, np.array([1.0, np.nan, 3.0, 4.0])) == pytest.approx(1.0)
    assert correlation(a, np.ones(4)) is None, "constant signal"
    assert correlation(a[:2], a[:2]) is None, "too few frames"
    assert correlation(a, np.array([np.nan, np.nan, 3.0, 4.0])) is None, "too few finite frames"
