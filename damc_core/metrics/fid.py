"""FID of rendered against ground-truth frames: pytorch-fid's Inception pool3 features and their Fréchet distance.

Definition as in DESIGN.md "Metric definitions": the features (`fid_features`, from the plain-PyTorch
`damc_core.metrics.inception.FidInceptionV3`) of all GT and all generated frames, summarised by
`activation_statistics` and compared by `frechet_distance` (the formula of pytorch-fid's
calculate_frechet_distance). It needs pytorch-fid's Inception weights file (`FID_WEIGHTS_FILE`) at a local path;
without it `load_fid_inception` raises `FidUnavailable` naming the file and where to download it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from damc_core.errors import InputError
from damc_core.metrics.inception import FEATURE_DIMS, FidInceptionV3, fid_inception_from_state_dict

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
"""File name of pytorch-fid's port of the TensorFlow FID Inception weights."""

FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
"""Where pytorch-fid downloads `FID_WEIGHTS_FILE` from (pytorch_fid.inception.FID_WEIGHTS_URL)."""

FID_WEIGHTS_SHA256_PREFIX = "6726825d"
"""First hex digits of the SHA-256 of `FID_WEIGHTS_FILE`, in its name as torch.hub's check_hash convention has it."""

FID_DIMS = FEATURE_DIMS
"""Length of a FID feature: Inception's final average pool (pytorch-fid's block 3, 'pool3')."""

FID_EPS = 1e-6
"""Added to the covariance diagonals when sqrtm of their product is not finite, as in pytorch-fid."""

FID_IMAGINARY_ATOL = 1e-3
"""Largest imaginary part on the diagonal of sqrtm(sigma1 sigma2) dropped as numerical error, as in pytorch-fid."""


class FidUnavailable(InputError, RuntimeError):
    """FID cannot be computed here: the Inception weights file is missing; the message names it and where to
    download it."""


def activation_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) (unbiased, N - 1) of (N, D) features, in float64, as pytorch-fid's
    calculate_activation_statistics. Raises ValueError for fewer than two rows or a non-2-D array."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if len(features) < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {len(features)}")
    mu = features.mean(axis=0)
    sigma = np.atleast_2d(np.cov(features, rowvar=False))
    return mu, sigma


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = FID_EPS
) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2):

        |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)),

    computed as pytorch-fid's calculate_frechet_distance: when sqrtm of the (possibly near-singular) product is not
    finite, ``eps`` is added to both diagonals and it is recomputed; an imaginary part left by numerical error is
    dropped when the diagonal's is within `FID_IMAGINARY_ATOL` of 0, and ValueError is raised otherwise.
    FID is this distance between the statistics (`activation_statistics`) of GT and generated `fid_features`.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"mean vectors must be 1-D of one length, got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"covariances must both be {(len(mu1), len(mu1))}, got {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    with np.errstate(all="ignore"):
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=FID_IMAGINARY_ATOL):
            raise ValueError(f"sqrtm(sigma1 sigma2) has an imaginary component of {np.max(np.abs(covmean.imag)):g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(truth_features: np.ndarray, generated_features: np.ndarray) -> float:
    """FID between two (N, D) feature sets (e.g. `fid_features` of all GT and all generated frames)."""
    return frechet_distance(*activation_statistics(truth_features), *activation_statistics(generated_features))


def load_fid_inception(
    weights: str | Path, device: str | torch.device = "cpu", check_hash: bool = True
) -> FidInceptionV3:
    """pytorch-fid's FID InceptionV3 (`damc_core.metrics.inception.FidInceptionV3`) holding the weights of the local
    file ``weights`` (`FID_WEIGHTS_FILE`, loaded strictly), in eval mode on ``device``, without gradients.

    check_hash: verify that the file's SHA-256 starts with `FID_WEIGHTS_SHA256_PREFIX` (ValueError otherwise).
    Raises FidUnavailable naming the file and `FID_WEIGHTS_URL` when it is missing, and
    damc_core.metrics.inception.FidWeightsMismatch when its keys or shapes are not those of the FID Inception.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise FidUnavailable(
            f"FID Inception weights {weights} not found: download {FID_WEIGHTS_FILE} (about 92 MB) from "
            f"{FID_WEIGHTS_URL} and put it at that path"
        )
    if check_hash:
        digest = _sha256(weights)
        if not digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
            raise ValueError(f"{weights} is not pytorch-fid's {FID_WEIGHTS_FILE}: its SHA-256 {digest[:16]}... does "
                             f"not start with {FID_WEIGHTS_SHA256_PREFIX}")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    return fid_inception_from_state_dict(state, source=str(weights)).to(device)


def fid_features(frames: np.ndarray, model: FidInceptionV3, batch: int = 32) -> np.ndarray:
    """(N, 2048) float64 Inception pool3 features of (N, H, W, 3) uint8 RGB frames, as pytorch-fid's get_activations
    computes them for image files: pixels / 255 in [0, 1], NCHW, ``batch`` frames at a time on the model's device,
    no gradients (the model resizes to 299x299 and scales to [-1, 1] itself).

    model: from `load_fid_inception` (load it once for several calls). Raises ValueError for frames that are not
    (N, H, W, 3) uint8, a batch below 1, or a model in training mode (its batch norms would use batch statistics).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if model.training:
        raise ValueError("the FID Inception is in training mode: call .eval() on it (load_fid_inception does)")
    device = next(model.parameters()).device
    out = np.empty((len(frames), FID_DIMS), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(frames), batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch])).to(device)
            out[start:start + len(x)] = model(x.permute(0, 3, 1, 2).float() / 255.0).double().cpu().numpy()
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
