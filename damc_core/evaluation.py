"""The paper's metrics of one subject's renders (PSNR, LPIPS, FID, LMD, Sync LSE-C / LSE-D) and our own lip-sync
expert's confidence: each a number, or None with the reason, and always the backend that produced it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from damc_core.audio.mel import log_mel_windows
from damc_core.face.landmarks import BACKEND_JUDGES
from damc_core.metrics.fid import FidUnavailable, fid_features, fid_from_features, load_fid_inception
from damc_core.metrics.image import (
    STILL_FRAME_BASELINES,
    detect_landmarks,
    lmd_per_frame,
    lpips_per_frame,
    psnr_per_frame,
    still_frame_baselines,
)
from damc_core.metrics.lpips import MissingWeightsError, load_lpips
from damc_core.metrics.expert_sync import expert_scores
from damc_core.metrics.sync import SyncScores, syncnet_scores
from damc_core.metrics.syncnet import CROP_SIZE, MissingSyncNetWeights, load_syncnet
from damc_core.params import EvaluateConfig
from damc_core.sync.data import face_boxes, lower_face
from damc_core.sync.models import SyncExpert

PSNR_BACKEND = "full frame in [0, 1], -10 log10(MSE), mean over frames (damc_core.metrics.image; capped at 100 dB)"
BASELINE_BACKEND = "PSNR as above of a trivial head that shows {} in place of every rendered frame"
LMD_BACKEND = ("mouth landmarks 48-67, each set mean-centred, mean L2 in pixels, mean over the frames where both sets "
               "have a face; landmarks: {}; {}")
LPIPS_BACKEND = "LPIPS v0.1 AlexNet, inputs in [-1, 1], full frame, mean over frames (damc_core.metrics.lpips); {}"
FID_BACKEND = ("Frechet distance of pytorch-fid's FID InceptionV3 pool3 features (damc_core.metrics.inception, "
               "plain PyTorch), all GT vs all rendered frames; {}")
SYNCNET_BACKEND = ("syncnet_python definitions (13-d MFCC at 100 Hz, 5-frame windows, offsets +-{}): {}; face crops "
                   "from {} landmarks (square box + {:.0%} margin, 224x224), not S3FD")
EXPERT_BACKEND = ("OUR lip-sync expert (sync_expert stage, {}), same statistics as LSE-C / LSE-D over offsets +-{} "
                  "with distance 1 - similarity: not comparable with SyncNet's numbers")


@dataclass(frozen=True)
class Metric:
    """One reported number, or None and why."""

    value: float | None
    """The number; None when it could not be computed."""
    reason: str | None
    """Why `value` is None (None when there is a value)."""
    backend: str
    """What produced it: definition, implementation, weights."""

    def as_dict(self) -> dict:
        return {"value": self.value, "reason": self.reason, "backend": self.backend}


@dataclass
class Backends:
    """The models the metrics need, loaded once per evaluation; a missing one is None with the reason."""

    lpips: torch.nn.Module | None
    lpips_reason: str | None
    inception: torch.nn.Module | None
    inception_reason: str | None
    syncnet: torch.nn.Module | None
    syncnet_reason: str | None
    expert: SyncExpert
    expert_meta: dict


def load_backends(config: EvaluateConfig, expert: SyncExpert, expert_meta: dict) -> Backends:
    """Load every metric's model from its configured path; missing weights become reasons, not errors."""
    lpips, lpips_reason = _attempt(lambda: load_lpips(config.lpips.backbone, config.lpips.linear_heads),
                                   MissingWeightsError)
    inception, inception_reason = _attempt(lambda: load_fid_inception(config.fid_weights), FidUnavailable)
    syncnet, syncnet_reason = _attempt(lambda: load_syncnet(config.syncnet_weights), MissingSyncNetWeights)
    return Backends(lpips, lpips_reason, inception, inception_reason, syncnet, syncnet_reason, expert, expert_meta)


def _attempt(
    load: Callable[[], torch.nn.Module], missing: type[Exception]
) -> tuple[torch.nn.Module | None, str | None]:
    """The loaded model, or None and the message of `missing` (the weights are not there)."""
    try:
        return load(), None
    except missing as error:
        return None, str(error)


def _mean_or_reason(values: np.ndarray, backend: str, what: str) -> Metric:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Metric(None, f"no frame where {what}", backend)
    return Metric(float(finite.mean()), None, backend)


def _lmd(lmd: np.ndarray, rendered: np.ndarray, truth: np.ndarray, config: EvaluateConfig) -> Metric:
    """The mean per-frame LMD of (T, 68, 2) rendered and ground-truth landmarks (NaN rows: no face); its backend names
    the landmark judge and counts the frames without a face in each set."""
    rendered_missing, truth_missing = (int(np.isnan(landmarks).all(axis=(1, 2)).sum())
                                       for landmarks in (rendered, truth))
    faces = (f"no face in {rendered_missing} of {len(rendered)} rendered and {truth_missing} of {len(truth)} "
             "ground-truth frames")
    return _mean_or_reason(lmd, LMD_BACKEND.format(BACKEND_JUDGES[config.landmarks], faces),
                           f"both sets have a face ({faces})")


def evaluate_validation(
    rendered: np.ndarray, truth: np.ndarray, train: np.ndarray, audio: np.ndarray, config: EvaluateConfig,
    backends: Backends,
) -> tuple[dict[str, Metric], dict[str, Metric], dict[str, np.ndarray]]:
    """All metrics of rendered validation frames against the ground truth (T, H, W, 3) uint8, with their audio, and
    the PSNR of the still-frame baselines made from the `train` frames; the sync metrics of the ground-truth frames
    themselves (what a perfect head would score); and the per-frame values (psnr, lmd, lpips) for plots."""
    psnr = psnr_per_frame(rendered, truth)
    landmarks_rendered = detect_landmarks(rendered, config.landmarks)
    landmarks_truth = detect_landmarks(truth, config.landmarks)
    lmd = lmd_per_frame(landmarks_rendered, landmarks_truth)
    per_frame = {"psnr": psnr, "lmd": lmd}
    metrics = {
        "psnr": Metric(float(psnr.mean()), None, PSNR_BACKEND),
        **{f"psnr_{name}": Metric(float(psnr_per_frame(frames, truth).mean()), None,
                                  BASELINE_BACKEND.format(STILL_FRAME_BASELINES[name]))
           for name, frames in still_frame_baselines(train, len(truth)).items()},
        "lmd": _lmd(lmd, landmarks_rendered, landmarks_truth, config),
    }
    lpips_backend = LPIPS_BACKEND.format(f"backbone {config.lpips.backbone}, heads {config.lpips.linear_heads}")
    if backends.lpips is None:
        metrics["lpips"] = Metric(None, backends.lpips_reason, lpips_backend)
    else:
        per_frame["lpips"] = lpips_per_frame(backends.lpips, rendered, truth)
        metrics["lpips"] = Metric(float(per_frame["lpips"].mean()), None, lpips_backend)
    metrics["fid"] = _fid(rendered, truth, config, backends)
    metrics |= sync_metrics(rendered, audio, landmarks_rendered, config, backends)
    return metrics, sync_metrics(truth, audio, landmarks_truth, config, backends), per_frame


def _fid(rendered: np.ndarray, truth: np.ndarray, config: EvaluateConfig, backends: Backends) -> Metric:
    backend = FID_BACKEND.format(f"weights {config.fid_weights}")
    if backends.inception is None:
        return Metric(None, backends.inception_reason, backend)
    if len(rendered) < 2:
        return Metric(None, f"FID needs at least 2 frames per set, got {len(rendered)}", backend)
    distance = fid_from_features(fid_features(truth, backends.inception), fid_features(rendered, backends.inception))
    return Metric(distance, None, backend + f"; {len(rendered)} frames per set (few frames bias FID upwards)")


def sync_metrics(
    frames: np.ndarray, audio: np.ndarray, landmarks: np.ndarray, config: EvaluateConfig, backends: Backends
) -> dict[str, Metric]:
    """LSE-C, LSE-D and AV offset (SyncNet), and our expert's confidence and distance, of one talking-face clip."""
    height, width = frames.shape[1:3]
    syncnet_backend = SYNCNET_BACKEND.format(config.max_offset, f"weights {config.syncnet_weights}",
                                             config.landmarks, config.syncnet_crop_margin)
    names = ("lse_c", "lse_d", "av_offset")
    if backends.syncnet is None:
        metrics = {name: Metric(None, backends.syncnet_reason, syncnet_backend) for name in names}
    else:
        def syncnet() -> SyncScores:
            boxes = face_boxes(landmarks, width, height, margin=config.syncnet_crop_margin)
            crops = np.stack([_square_crop(frame, box, CROP_SIZE) for frame, box in zip(frames, boxes, strict=True)])
            return syncnet_scores(backends.syncnet, crops, audio, vshift=config.max_offset)

        metrics = _scores_or_reason(syncnet, names, syncnet_backend)
    expert_backend = EXPERT_BACKEND.format(f"training data {backends.expert_meta['training_data_sha256'][:12]}",
                                           config.max_offset)

    def expert() -> SyncScores:
        face_size = backends.expert_meta["face_size"]
        boxes = face_boxes(landmarks, width, height)
        lower = np.stack([lower_face(frame, box, face_size) for frame, box in zip(frames, boxes, strict=True)])
        return expert_scores(backends.expert, lower, log_mel_windows(audio, len(frames)), vshift=config.max_offset)

    return metrics | _scores_or_reason(expert, ("expert_confidence", "expert_distance", "expert_offset"),
                                       expert_backend)


def _square_crop(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    x, y, side = int(box[0]), int(box[1]), int(box[2])
    return cv2.resize(frame[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)


def _scores_or_reason(score: Callable[[], SyncScores], names: tuple[str, str, str], backend: str) -> dict[str, Metric]:
    """{confidence, distance, offset} from `score()`, or all three None with its ValueError (too few frames, no face
    found in any frame)."""
    try:
        scores = score()
    except ValueError as error:
        return {name: Metric(None, str(error), backend) for name in names}
    values = (scores.lse_c, scores.lse_d, float(scores.av_offset))
    return {name: Metric(value, None, backend) for name, value in zip(names, values, strict=True)}


def write_frame_table(path: Path, frame_ids: np.ndarray, per_frame: dict[str, np.ndarray]) -> None:
    """A TSV for `dvc plots`: column `frame` and one column per metric (empty where a value is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(per_frame)
    rows = ["\t".join(["frame", *names])]
    for row, frame in enumerate(frame_ids):
        values = [per_frame[name][row] for name in names]
        rows.append("\t".join([str(int(frame)), *(f"{value:.6g}" if np.isfinite(value) else "" for value in values)]))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
