"""Frame metrics: PSNR, LMD, LPIPS per frame, the Fréchet distance, and FID's pytorch-fid loading and its errors."""

from __future__ import annotations

import math
import sys
import textwrap

import numpy as np
import pytest
import torch

from damc_core.metrics.image import (
    FID_DIMS,
    FID_WEIGHTS_FILE,
    FID_WEIGHTS_URL,
    FidUnavailable,
    activation_statistics,
    detect_landmarks,
    fid_features,
    fid_from_features,
    frechet_distance,
    lmd_per_frame,
    load_fid_inception,
    lpips_per_frame,
    psnr_per_frame,
)
from damc_core.metrics.lpips import lpips_stand_in


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


def test_detect_landmarks_gives_nan_without_a_face():
    pytest.importorskip("mediapipe", reason="mediapipe (the offline landmark backend) is not installed")
    blank = np.full((2, 64, 64, 3), 128, np.uint8)
    landmarks = detect_landmarks(blank)
    assert landmarks.shape == (2, 68, 2) and np.isnan(landmarks).all()
    assert np.isnan(lmd_per_frame(landmarks, landmarks)).all()


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


# ----------------------------------------------------------------------------------------- FID Inception (pytorch-fid)

def test_fid_unavailable_without_pytorch_fid(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)  # import fails as if it were not installed
    weights = tmp_path / FID_WEIGHTS_FILE
    with pytest.raises(FidUnavailable, match="pytorch-fid") as info:
        fid_features(frames(0, h=32, w=32), weights)
    assert "pip install pytorch-fid" in str(info.value)


FAKE_INCEPTION = '''
"""Stand-in for pytorch_fid.inception with its structure: fid_inception_v3() calls the module-level
load_state_dict_from_url(FID_WEIGHTS_URL), which downloads in the real package and fails here."""
import torch
from torch import nn

FID_WEIGHTS_URL = {url!r}
CALLS = []


def load_state_dict_from_url(url, progress=True, **kwargs):
    raise RuntimeError("download attempted: " + url)


def fid_inception_v3():
    net = nn.Conv2d(3, 2048, kernel_size=1)
    net.load_state_dict(load_state_dict_from_url(FID_WEIGHTS_URL, progress=True))
    return net


class InceptionV3(nn.Module):
    BLOCK_INDEX_BY_DIM = {{64: 0, 192: 1, 768: 2, 2048: 3}}

    def __init__(self, output_blocks=(3,), resize_input=True, normalize_input=True, requires_grad=False,
                 use_fid_inception=True):
        super().__init__()
        CALLS.append(dict(output_blocks=list(output_blocks), resize_input=resize_input,
                          normalize_input=normalize_input, use_fid_inception=use_fid_inception))
        self.net = fid_inception_v3()

    def forward(self, x):
        CALLS.append(("range", float(x.min()), float(x.max()), tuple(x.shape)))
        return [self.net(x)]  # (N, 2048, H, W): not pooled, as a block other than 3 would be
'''


@pytest.fixture
def fake_pytorch_fid(monkeypatch, tmp_path):
    package = tmp_path / "fake_site" / "pytorch_fid"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "inception.py").write_text(textwrap.dedent(FAKE_INCEPTION.format(url=FID_WEIGHTS_URL)))
    monkeypatch.syspath_prepend(str(package.parent))
    for name in ("pytorch_fid", "pytorch_fid.inception"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    from pytorch_fid import inception

    yield inception
    for name in ("pytorch_fid", "pytorch_fid.inception"):
        sys.modules.pop(name, None)


def test_fid_weights_come_from_the_local_file(fake_pytorch_fid, tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = torch.nn.Conv2d(3, 2048, kernel_size=1)
    weights = tmp_path / "weights" / FID_WEIGHTS_FILE
    weights.parent.mkdir()
    torch.save(reference.state_dict(), weights)

    missing = tmp_path / "nowhere" / FID_WEIGHTS_FILE
    with pytest.raises(FidUnavailable, match=FID_WEIGHTS_URL.replace(".", r"\.")):
        fid_features(frames(0), missing)
    with pytest.raises(ValueError, match="SHA-256"):  # a stand-in file is not the real one
        load_fid_inception(weights)

    model = load_fid_inception(weights, check_hash=False)
    assert fake_pytorch_fid.CALLS[0] == {"output_blocks": [3], "resize_input": True, "normalize_input": True,
                                         "use_fid_inception": True}
    assert not model.training
    # the download function is pytorch-fid's own again afterwards
    with pytest.raises(RuntimeError, match="download attempted"):
        fake_pytorch_fid.fid_inception_v3()

    video = frames(11, t=5, h=4, w=6)
    features = fid_features(video, model, batch=2)
    assert features.shape == (5, FID_DIMS) and features.dtype == np.float64
    inputs = [call for call in fake_pytorch_fid.CALLS if isinstance(call, tuple)]
    assert [call[3] for call in inputs] == [(2, 3, 4, 6), (2, 3, 4, 6), (1, 3, 4, 6)]
    assert all(0.0 <= low and high <= 1.0 for _, low, high, _ in inputs)  # pytorch-fid expects [0, 1]
    x = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255.0
    expected = reference(x).mean(dim=(2, 3)).double().detach().numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
