"""Frame metrics: PSNR, LMD, LPIPS per frame, the Fréchet distance, and FID's weights loading and features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from damc_core.metrics.fid import (
    FID_DIMS,
    FID_WEIGHTS_FILE,
    FID_WEIGHTS_URL,
    FidUnavailable,
    activation_statistics,
    fid_features,
    fid_from_features,
    frechet_distance,
    load_fid_inception,
)
from damc_core.metrics.image import MOUTH, detect_landmarks, lmd_per_frame, lpips_per_frame, psnr_per_frame
from damc_core.metrics.lpips import lpips_stand_in
from damc_core.sample.portrait import astronaut, frame_crop


def frames(seed: int, t: int = 3, h: int = 12, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


def face_landmarks(seed: int, t: int = 4) -> np.ndarray:
    """Random (T, 68, 2) landmarks in a 256-pixel frame."""
    return np.random.default_rng(seed).uniform(40, 200, size=(t, 68, 2))


# ---------------------------------------------------------------------------------------------------------------- PSNR

def test_psnr_identical_frames_give_the_cap():
    video = frames(0)
    assert psnr_per_frame(video, video).tolist() == [100.0] * 3
    assert psnr_per_frame(video, video, max_psnr=60.0).tolist() == [60.0] * 3


def test_psnr_matches_the_definition_per_frame():
    truth = frames(1, t=2)
    rendered = truth.copy()
    rendered[0] = 0
    rendered[1, 0, 0, 0] = truth[1, 0, 0, 0] ^ 0x80  # one channel of one pixel off by 128 (or more)
    expected = [-10 * math.log10(np.mean((truth[i] / 255.0 - rendered[i] / 255.0) ** 2)) for i in range(2)]
    np.testing.assert_allclose(psnr_per_frame(rendered, truth), expected, rtol=1e-12)


def test_psnr_known_value_and_symmetry():
    truth = np.zeros((1, 4, 4, 3), np.uint8)
    rendered = np.full_like(truth, 255)  # MSE 1 -> 0 dB
    assert psnr_per_frame(rendered, truth)[0] == pytest.approx(0.0)
    half = np.full_like(truth, 51)  # 0.2 -> MSE 0.04 -> 13.98 dB
    assert psnr_per_frame(half, truth)[0] == pytest.approx(-10 * math.log10(0.04))
    assert psnr_per_frame(truth, half)[0] == psnr_per_frame(half, truth)[0]


def test_psnr_rejects_mismatched_shapes_naming_both():
    with pytest.raises(ValueError, match=r"\(2, 12, 16, 3\).*\(3, 12, 16, 3\)"):
        psnr_per_frame(frames(0, t=2), frames(0, t=3))
    with pytest.raises(ValueError, match="uint8"):
        psnr_per_frame(frames(0).astype(np.float32), frames(0).astype(np.float32))


# ----------------------------------------------------------------------------------------------------------------- LMD

def test_lmd_identical_and_shifted_give_zero():
    truth = face_landmarks(2)
    assert lmd_per_frame(truth, truth).tolist() == [0.0] * 4
    shifted = truth + np.array([13.5, -7.25])  # the whole face moves: mean-centring removes it
    np.testing.assert_allclose(lmd_per_frame(shifted, truth), 0.0, atol=1e-12)


def test_lmd_scaled_mouth_gives_the_known_value():
    truth = face_landmarks(3)
    mouth = truth[:, 48:68]
    centre = mouth.mean(axis=1, keepdims=True)
    rendered = truth.copy()
    rendered[:, 48:68] = centre + 1.5 * (mouth - centre) + np.array([4.0, 2.0])  # mouth 50 % bigger and moved
    rendered[:, :48] += 30.0  # the rest of the face does not count
    expected = 0.5 * np.linalg.norm(mouth - centre, axis=-1).mean(axis=1)
    np.testing.assert_allclose(lmd_per_frame(rendered, truth), expected, rtol=1e-12)
    # a single point moved by d changes the mean-centred distance by a closed form: 19 points move by d/20, one by
    # 19 d / 20, so the mean distance is (19 * d / 20 + 19 d / 20) / 20
    moved = truth.copy()
    moved[:, 60, 0] += 10.0
    np.testing.assert_allclose(lmd_per_frame(moved, truth), (19 * 0.5 + 9.5) / 20, rtol=1e-12)


def test_lmd_is_nan_where_a_face_is_missing():
    truth = face_landmarks(4)
    rendered = truth.copy()
    rendered[1] = np.nan
    truth[2] = np.nan
    result = lmd_per_frame(rendered, truth)
    assert np.isnan(result[1]) and np.isnan(result[2])
    assert result[0] == 0.0 and result[3] == 0.0


def test_lmd_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(4, 68, 2\).*\(3, 68, 2\)"):
        lmd_per_frame(face_landmarks(0), face_landmarks(0, t=3))
    with pytest.raises(ValueError, match=r"\(T, 68, 2\)"):
        lmd_per_frame(np.zeros((2, 5, 2)), np.zeros((2, 5, 2)))


@pytest.mark.parametrize("backend", ["mediapipe", "dlib"])
def test_detect_landmarks_gives_nan_without_a_face(backend):
    pytest.importorskip(backend, reason=f"{backend} (an offline landmark backend) is not installed")
    blank = np.full((2, 64, 64, 3), 128, np.uint8)
    landmarks = detect_landmarks(blank, backend)
    assert landmarks.shape == (2, 68, 2) and np.isnan(landmarks).all()
    assert np.isnan(lmd_per_frame(landmarks, landmarks)).all()


def test_detect_landmarks_with_dlib_finds_the_sample_mouth():
    """The astronaut portrait at 256x256 (as the sample subject shows it), a flat frame between two copies: dlib finds
    the mouth within 3 px of the portrait's own landmarks (measured 1.7 px) and nothing in the flat frame."""
    pytest.importorskip("dlib", reason="dlib (the evaluation's landmark judge) is not installed")
    face, truth = frame_crop(*astronaut(), (125, 40, 200), 256)
    landmarks = detect_landmarks(np.stack([face, np.full_like(face, 128), face]), "dlib")
    assert np.isnan(landmarks[1]).all() and np.isfinite(landmarks[[0, 2]]).all()
    assert np.linalg.norm(landmarks[0, MOUTH] - truth[MOUTH], axis=1).mean() < 3.0
    assert lmd_per_frame(landmarks, landmarks[[2, 1, 0]]).tolist()[::2] == [0.0, 0.0], "the same frame, the same points"


# --------------------------------------------------------------------------------------------------------------- LPIPS

def test_lpips_per_frame_identical_is_zero_and_batching_does_not_matter():
    model = lpips_stand_in(0)
    video, other = frames(5, t=5, h=64, w=64), frames(6, t=5, h=64, w=64)
    assert np.abs(lpips_per_frame(model, video, video)).max() < 1e-6
    per_frame = lpips_per_frame(model, video, other, batch=2)
    assert per_frame.shape == (5,) and (per_frame > 0).all()
    np.testing.assert_allclose(per_frame, lpips_per_frame(model, video, other, batch=8), rtol=1e-5)
    direct = model(torch.from_numpy(video).permute(0, 3, 1, 2).float() / 127.5 - 1,
                   torch.from_numpy(other).permute(0, 3, 1, 2).float() / 127.5 - 1)
    np.testing.assert_allclose(per_frame, direct.numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        lpips_per_frame(model, video, other[:4])


# ------------------------------------------------------------------------------------------------- Fréchet distance

def test_frechet_identical_statistics_give_zero():
    features = np.random.default_rng(7).normal(size=(40, 6))
    mu, sigma = activation_statistics(features)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_frechet_equal_covariances_give_the_squared_mean_distance():
    rng = np.random.default_rng(8)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a = rng.normal(size=(5, 5))
    sigma = a @ a.T + 0.1 * np.eye(5)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(float(np.sum((mu1 - mu2) ** 2)), rel=1e-7)


def test_frechet_one_dimensional_closed_form_and_symmetry():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(30, 4)), 2.0 * rng.normal(size=(30, 4)) + 1.0
    stats_a, stats_b = activation_statistics(a), activation_statistics(b)
    forward, backward = frechet_distance(*stats_a, *stats_b), frechet_distance(*stats_b, *stats_a)
    assert forward > 0 and forward == pytest.approx(backward, rel=1e-9)
    assert fid_from_features(a, b) == pytest.approx(forward)


def test_frechet_of_diagonal_gaussians_and_singular_covariances():
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = float(np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2))
    assert frechet_distance(np.zeros(3), np.diag(var1), np.zeros(3), np.diag(var2)) == pytest.approx(expected)
    # fewer samples than dimensions (rank-deficient covariances, as FID on a short clip): finite, non-negative
    rng = np.random.default_rng(10)
    value = fid_from_features(rng.normal(size=(4, 20)), rng.normal(size=(4, 20)))
    assert math.isfinite(value) and value > 0


def test_frechet_rejects_mismatched_statistics():
    with pytest.raises(ValueError, match="mean"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="at least 2"):
        activation_statistics(np.zeros((1, 4)))


# ------------------------------------------------------------------------------------------------------ FID Inception

def test_missing_fid_weights_name_the_file_and_where_to_get_it(tmp_path):
    missing = tmp_path / "nowhere" / FID_WEIGHTS_FILE
    with pytest.raises(FidUnavailable) as info:
        load_fid_inception(missing)
    message = str(info.value)
    assert str(missing) in message and FID_WEIGHTS_URL in message
    assert "torchvision" not in message and "install" not in message


class RecordingStandIn(torch.nn.Module):
    """Stands in for FidInceptionV3 (same call: (N, 3, H, W) in [0, 1] -> (N, 2048)) and records what it is fed."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.net = torch.nn.Conv2d(3, FID_DIMS, kernel_size=1)
        self.calls: list[tuple[tuple[int, ...], torch.dtype, float, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((tuple(x.shape), x.dtype, float(x.min()), float(x.max())))
        return self.net(x).mean(dim=(2, 3))


def test_fid_features_feed_the_model_unit_range_batches_and_keep_its_numbers():
    model = RecordingStandIn().eval()
    video = frames(11, t=5, h=4, w=6)
    video[0, 0, 0] = (0, 255, 0)
    features = fid_features(video, model, batch=2)
    assert features.shape == (5, FID_DIMS) and features.dtype == np.float64
    assert [call[:2] for call in model.calls] == [((2, 3, 4, 6), torch.float32)] * 2 + [((1, 3, 4, 6), torch.float32)]
    assert (model.calls[0][2], model.calls[0][3]) == (0.0, 1.0), "pixels / 255, as pytorch-fid's ToTensor"
    x = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        np.testing.assert_allclose(features, model.net(x).mean(dim=(2, 3)).double().numpy(), rtol=1e-5, atol=1e-6)


def test_fid_features_reject_bad_frames_and_a_model_in_training_mode():
    model = RecordingStandIn()
    with pytest.raises(ValueError, match="training mode"):
        fid_features(frames(0), model)
    model.eval()
    with pytest.raises(ValueError, match="uint8"):
        fid_features(frames(0).astype(np.float32), model)
    with pytest.raises(ValueError, match="batch"):
        fid_features(frames(0), model, batch=0)
    assert model.calls == []
