"""Frame-level image metrics of rendered against ground-truth video: PSNR, LPIPS, LMD and FID.

Definitions follow DESIGN.md "Metric definitions", so that numbers compare with the field's:

- PSNR: full frame in [0, 1], -10 log10(MSE) per frame (`psnr_per_frame`); the mean over frames is the score.
- LPIPS: `damc_core.metrics.lpips.LPIPS` (v0.1, AlexNet), full frame in [-1, 1] (`lpips_per_frame`).
- LMD: 68-point landmarks, mouth points 48-67 only, each set mean-centred, mean L2 distance in pixels of the evaluated
  resolution (`lmd_per_frame`; landmarks from `detect_landmarks`).
- FID: pytorch-fid's Inception pool3 features (`fid_features`) of all GT and all generated frames, summarised by
  `activation_statistics` and compared by `frechet_distance` (the formula of pytorch-fid's calculate_frechet_distance).

pytorch-fid (and the torchvision it imports) is optional: it is imported only inside `load_fid_inception`, and its
absence, or that of the Inception weights file, raises `FidUnavailable` naming what is missing and how to get it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy import linalg

MOUTH = slice(48, 68)
"""iBUG-68 indices of the mouth points (outer lips 48-59, inner lips 60-67) that LMD compares."""

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
"""File name of pytorch-fid's port of the TensorFlow FID Inception weights."""

FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
"""Where pytorch-fid downloads `FID_WEIGHTS_FILE` from (pytorch_fid.inception.FID_WEIGHTS_URL)."""

FID_WEIGHTS_SHA256_PREFIX = "6726825d"
"""First hex digits of the SHA-256 of `FID_WEIGHTS_FILE`, in its name as torch.hub's check_hash convention has it."""

FID_PACKAGE = "pytorch-fid==0.3.0"
"""The pytorch-fid release `load_fid_inception` is written against (its import needs a working torchvision)."""

FID_DIMS = 2048
"""Length of a FID feature: Inception's final average pool (pytorch-fid's block 3, 'pool3')."""

FID_EPS = 1e-6
"""Added to the covariance diagonals when sqrtm of their product is not finite, as in pytorch-fid."""

FID_IMAGINARY_ATOL = 1e-3
"""Largest imaginary part on the diagonal of sqrtm(sigma1 sigma2) dropped as numerical error, as in pytorch-fid."""


class FidUnavailable(RuntimeError):
    """FID cannot be computed here: pytorch-fid (or torchvision) or the Inception weights are missing; the message
    names what is missing and how to obtain it."""


# ---------------------------------------------------------------------------------------------------------------- PSNR


MAX_PSNR = 100.0
"""PSNR reported for identical images (see psnr_per_frame)."""


def psnr_of_mse(mse: float, max_psnr: float = MAX_PSNR) -> float:
    """PSNR in dB, -10 log10(mse), of a mean squared error of values in [0, 1], capped at `max_psnr`."""
    return max_psnr if mse <= 10 ** (-max_psnr / 10) else min(-10.0 * math.log10(mse), max_psnr)


def psnr_per_frame(rendered: np.ndarray, truth: np.ndarray, max_psnr: float = MAX_PSNR) -> np.ndarray:
    """(T,) PSNR in dB of each rendered frame against its ground truth, both (T, H, W, 3) uint8.

    Full frame, pixel values scaled to [0, 1]: -10 log10(MSE) over all pixels and channels. The squared errors are
    summed in exact integer arithmetic, so the result does not depend on summation order.

    The cap: identical frames (MSE 0) would give +inf, which no mean over frames survives, so every value is clipped
    to at most ``max_psnr`` (100 dB by default): identical frames give exactly ``max_psnr``. One unit of difference in
    one channel of one pixel of a 512x512 frame is already ~107 dB, so the cap only touches (near-)identical frames.
    Raises ValueError when the shapes differ (naming both), are not (T, H, W, 3), or the dtype is not uint8.
    """
    rendered, truth = _frame_pair(np.ascontiguousarray(rendered), truth)
    count = rendered.shape[1] * rendered.shape[2] * rendered.shape[3]
    out = np.empty(len(rendered), dtype=np.float64)
    for index, (a, b) in enumerate(zip(rendered, truth, strict=True)):
        diff = a.astype(np.int32) - b.astype(np.int32)
        squared = int(np.einsum("ijk,ijk->", diff, diff, dtype=np.int64))
        out[index] = max_psnr if squared == 0 else psnr_of_mse(squared / (count * 255.0**2), max_psnr)
    return out


STILL_FRAME_BASELINES = {"mean_training_frame": "the mean of the training frames",
                         "last_training_frame": "the last training frame"}
"""The trivial heads any render must beat, each showing one still frame in place of every rendered frame."""


def still_frame_baselines(train: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """(count, H, W, 3) uint8 frames of each STILL_FRAME_BASELINES head, from (n, H, W, 3) uint8 training frames."""
    mean = np.round(train.mean(axis=0, dtype=np.float64)).astype(np.uint8)
    return {"mean_training_frame": np.broadcast_to(mean, (count, *mean.shape)),
            "last_training_frame": np.broadcast_to(train[-1], (count, *mean.shape))}


def _frame_pair(rendered: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two (T, H, W, 3) uint8 arrays, or ValueError naming both shapes / dtypes."""
    rendered, truth = np.asarray(rendered), np.asarray(truth)
    if rendered.shape != truth.shape:
        raise ValueError(f"rendered and ground-truth frames differ in shape: rendered {rendered.shape}, "
                         f"truth {truth.shape}")
    if rendered.ndim != 4 or rendered.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got rendered {rendered.shape}, truth {truth.shape}")
    if rendered.dtype != np.uint8 or truth.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got rendered {rendered.dtype}, truth {truth.dtype}")
    return rendered, truth


# ----------------------------------------------------------------------------------------------------------------- LMD


def lmd_per_frame(rendered_landmarks: np.ndarray, truth_landmarks: np.ndarray) -> np.ndarray:
    """(T,) landmark distance of the mouth, in pixels, between (T, 68, 2) rendered and ground-truth landmarks.

    Mouth points 48-67 only; each frame's 20 points are centred on their own mean (so head translation does not
    count), and the Euclidean distances of corresponding points are averaged. NaN where either frame's mouth has a
    NaN (no face detected). Raises ValueError when the shapes differ or are not (T, 68, 2).
    """
    rendered = np.asarray(rendered_landmarks, dtype=np.float64)
    truth = np.asarray(truth_landmarks, dtype=np.float64)
    if rendered.shape != truth.shape:
        raise ValueError(f"landmark arrays differ in shape: rendered {rendered.shape}, truth {truth.shape}")
    if rendered.ndim != 3 or rendered.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (T, 68, 2), got {rendered.shape}")
    a, b = rendered[:, MOUTH], truth[:, MOUTH]
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return np.linalg.norm(a - b, axis=-1).mean(axis=1)


def detect_landmarks(
    frames: Iterable[np.ndarray],
    backend: Literal["mediapipe", "face_alignment"] = "mediapipe",
    device: str = "cpu",
) -> np.ndarray:
    """(T, 68, 2) iBUG-68 landmarks, in pixels, of the largest face in each RGB uint8 frame, NaN where none is found.

    Tracks across frames (one video). Raises damc_core.face.landmarks.LandmarkBackendUnavailable when the backend's
    package or weights are missing. Use the same backend for rendered and ground-truth frames.
    """
    from damc_core.face.landmarks import detect_sequence, make_detector

    with make_detector(backend, max_faces=1, video=True, device=device) as detector:
        landmarks, _, _ = detect_sequence(detector, frames)
    return landmarks


# --------------------------------------------------------------------------------------------------------------- LPIPS


def lpips_per_frame(model: torch.nn.Module, rendered: np.ndarray, truth: np.ndarray, batch: int = 8) -> np.ndarray:
    """(T,) LPIPS distance of each rendered frame to its ground truth, both (T, H, W, 3) uint8, full frame.

    model: a damc_core.metrics.lpips.LPIPS (`load_lpips` for real numbers, `lpips_stand_in` for tests); frames are
    mapped to [-1, 1] as x / 127.5 - 1, NCHW, and fed ``batch`` pairs at a time on the model's device, without
    gradients. Raises ValueError as `psnr_per_frame` does for mismatched frames.
    """
    rendered, truth = _frame_pair(rendered, truth)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    device = next(iter(model.parameters()), torch.empty(0)).device
    out = []
    with torch.no_grad():
        for start in range(0, len(rendered), batch):
            a = _signed_nchw(rendered[start:start + batch], device)
            b = _signed_nchw(truth[start:start + batch], device)
            out.append(model(a, b).double().cpu().numpy().reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)


def _signed_nchw(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1] on device."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------------------------- FID


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
) -> torch.nn.Module:
    """pytorch-fid's `InceptionV3(output_blocks=[3], use_fid_inception=True)` with the FID Inception weights read
    from the local file ``weights`` (`FID_WEIGHTS_FILE`), in eval mode on ``device``; it maps (N, 3, H, W) images in
    [0, 1] to [(N, 2048, 1, 1)] pool3 features, resizing to 299x299 bilinearly and scaling to [-1, 1] itself.

    How the local file is used: pytorch-fid builds the FID variant in `pytorch_fid.inception.fid_inception_v3()`,
    which fetches the weights with the module-level `load_state_dict_from_url(FID_WEIGHTS_URL)` (torch.hub:
    download into the hub cache). While the model is built, that one name in `pytorch_fid.inception` is replaced by a
    loader that returns the state dict of ``weights`` (and refuses any other URL); it is restored afterwards. So the
    network, its patched FID blocks and its key checking stay pytorch-fid's own, nothing is downloaded and the hub
    cache is neither read nor written.

    check_hash: verify that the file's SHA-256 starts with `FID_WEIGHTS_SHA256_PREFIX` (ValueError otherwise).
    Raises FidUnavailable when pytorch-fid (or torchvision) cannot be imported or the file is missing.
    """
    inception = _import_pytorch_fid()
    weights = Path(weights)
    if not weights.is_file():
        raise FidUnavailable(
            f"FID Inception weights {weights} not found: download pytorch-fid's {FID_WEIGHTS_FILE} from "
            f"{FID_WEIGHTS_URL} (about 92 MB) and put it at that path"
        )
    if check_hash:
        digest = _sha256(weights)
        if not digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
            raise ValueError(f"{weights} is not pytorch-fid's {FID_WEIGHTS_FILE}: its SHA-256 {digest[:16]}... does "
                             f"not start with {FID_WEIGHTS_SHA256_PREFIX}")

    def local_state_dict(url: str, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if url.rsplit("/", 1)[-1] != FID_WEIGHTS_FILE:
            raise FidUnavailable(f"pytorch-fid asked for weights at {url}; only {FID_WEIGHTS_FILE} is provided "
                                 f"(from {weights}) and nothing is downloaded")
        return torch.load(weights, map_location="cpu", weights_only=True)

    with _replaced(inception, "load_state_dict_from_url", local_state_dict):
        model = inception.InceptionV3(output_blocks=[inception.InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]],
                                      resize_input=True, normalize_input=True, use_fid_inception=True)
    return model.to(device).eval()


def fid_features(
    frames: np.ndarray,
    weights: str | Path | torch.nn.Module,
    batch: int = 32,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """(N, 2048) float64 Inception pool3 features of (N, H, W, 3) uint8 RGB frames, as pytorch-fid's get_activations
    computes them for image files: pixels / 255 in [0, 1], NCHW, ``batch`` frames at a time, no gradients.

    weights: the local `FID_WEIGHTS_FILE` (loaded with `load_fid_inception`), or a model it returned, to load it once
    for several calls. Raises FidUnavailable when pytorch-fid or the weights are missing (see `load_fid_inception`).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if isinstance(weights, torch.nn.Module):
        model = weights.to(device).eval()
    else:
        model = load_fid_inception(weights, device=device)
    out = np.empty((len(frames), FID_DIMS), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(frames), batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch])).to(device)
            pred = model(x.permute(0, 3, 1, 2).float() / 255.0)[0]
            if pred.shape[2] != 1 or pred.shape[3] != 1:
                pred = torch.nn.functional.adaptive_avg_pool2d(pred, output_size=(1, 1))
            out[start:start + len(x)] = pred.reshape(len(x), -1).double().cpu().numpy()
    return out


def _import_pytorch_fid() -> Any:
    """pytorch_fid.inception, or FidUnavailable saying what to install."""
    try:
        from pytorch_fid import inception
    except ImportError as exc:
        raise FidUnavailable(
            f"FID needs the pytorch-fid package, which cannot be imported ({exc}): pip install {FID_PACKAGE} "
            f"(it needs torchvision matching the installed torch)"
        ) from exc
    except Exception as exc:  # torchvision that does not match torch fails its import with RuntimeError etc.
        raise FidUnavailable(
            f"FID needs pytorch-fid, whose import failed ({type(exc).__name__}: {exc}); torchvision probably does not "
            f"match the installed torch: install the torchvision built for it, then pip install {FID_PACKAGE}"
        ) from exc
    missing = [name for name in ("InceptionV3", "load_state_dict_from_url", "fid_inception_v3")
               if not hasattr(inception, name)]
    if missing:
        raise FidUnavailable(f"the installed pytorch_fid.inception lacks {missing}; install {FID_PACKAGE}")
    return inception


@contextmanager
def _replaced(owner: Any, name: str, value: Callable[..., Any]) -> Iterator[None]:
    """Temporarily set owner.<name> to value."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
