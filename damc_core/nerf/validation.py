"""A subject's validation frames rendered with their own audio, scored against their ground truth beside the trivial
baselines any head must beat: showing the mean training frame, the last training frame, the nearest-pose one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from damc_core.metrics.image import psnr_per_frame, still_frame_baselines
from damc_core.metrics.mouth import correlation, detected_mouth_opening, mean_intensity
from damc_core.nerf.data import Camera, FrameAudio, SubjectSplit
from damc_core.nerf.model import FrameCondition, TalkingHead, audio_occupancy, render_frame
from damc_core.nerf.rays import BoxCorner, box_corners, project_points


def split_conditions(
    head: TalkingHead, split: SubjectSplit, audio: FrameAudio, positions: np.ndarray
) -> list[FrameCondition]:
    """Conditions of frames of a split that was not trained on (by position in the split): their own pose, torso,
    blink and audio, and the mean latent code."""
    with torch.no_grad():
        frames = torch.as_tensor(split.frame_ids[positions], device=audio.content.device)
        conditions = head.audio_condition(audio, frames)
        latent = head.field.mean_latent()
    return [
        FrameCondition(split.camera_to_world[index], conditions[row], float(split.blink[index]), latent,
                       split.backgrounds[index])
        for row, index in enumerate(positions)
    ]


def render_split(
    head: TalkingHead, camera: Camera, split: SubjectSplit, audio: FrameAudio, rays_per_chunk: int,
) -> np.ndarray:
    """(n, H, W, 3) uint8 renders of every frame of a split that was not trained on: its own pose, blink, torso and
    audio, the mean latent code."""
    occupancy = audio_occupancy(head, audio)
    conditions = split_conditions(head, split, audio, np.arange(len(split)))
    progress = tqdm(conditions, desc="render validation", unit="frame", mininterval=5.0, leave=False)
    return np.stack([render_frame(head, camera, condition, rays_per_chunk, occupancy).cpu().numpy()
                     for condition in progress])


def nearest_poses(train: torch.Tensor, val: torch.Tensor, camera: Camera, box: tuple[BoxCorner, BoxCorner]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """For each (4, 4) validation pose, the position of the training pose that projects the head box's 8 corners
    and centre nearest (mean pixel distance, which weighs rotation and translation in one unit), and that distance."""
    corners = box_corners(*box)
    points = torch.cat([corners, corners.mean(dim=0, keepdim=True)])

    def projected(poses: torch.Tensor) -> torch.Tensor:
        return torch.stack([project_points(points, pose.double().cpu(), camera.focal, camera.cx, camera.cy)
                            for pose in poses])

    distances = (projected(val)[:, None] - projected(train)[None]).norm(dim=-1).mean(dim=-1)
    best = distances.argmin(dim=1)
    return best.numpy(), distances[torch.arange(len(val)), best].numpy()


def baseline_frames(train: SubjectSplit, val: SubjectSplit, camera: Camera, box: tuple[BoxCorner, BoxCorner]
                    ) -> dict[str, np.ndarray]:
    """Per validation frame, the frame each baseline shows instead of a render, (n, H, W, 3) uint8 each: the still
    frames of metrics.image.STILL_FRAME_BASELINES and the training frame of the nearest pose."""
    images = train.images.cpu().numpy()
    nearest, _ = nearest_poses(train.camera_to_world, val.camera_to_world, camera, box)
    return still_frame_baselines(images, len(val)) | {"nearest_pose_training_frame": images[nearest]}


@dataclass(frozen=True)
class MouthAgreement:
    """How the rendered mouth opens against the real one, from the inner-lip landmarks of both."""

    rendered: np.ndarray
    """(n,) inner-lip opening of the rendered frames, pixels (NaN where no face was found)."""
    real: np.ndarray
    """(n,) the same on the ground-truth frames."""

    @property
    def range_ratio(self) -> float | None:
        """Peak-to-peak opening rendered over real, on the frames where both were measured (1: opens as far)."""
        finite = np.isfinite(self.rendered) & np.isfinite(self.real)
        real_range = np.ptp(self.real[finite]) if finite.any() else 0.0
        return float(np.ptp(self.rendered[finite]) / real_range) if real_range > 0 else None

    @property
    def correlation(self) -> float | None:
        """Pearson correlation of the two openings over the frames."""
        return correlation(self.rendered, self.real)


def validation_report(rendered: np.ndarray, truth: np.ndarray, baselines: dict[str, np.ndarray],
                      lips_rect: tuple[int, int, int, int]) -> dict:
    """Full-frame PSNR of the renders and of every baseline against the ground truth, the margin over the best
    baseline, and how the rendered mouth follows the real one (landmark opening and darkness in the lips box)."""
    psnr = float(np.mean(psnr_per_frame(rendered, truth)))
    baseline_psnr = {name: float(np.mean(psnr_per_frame(frames, truth))) for name, frames in baselines.items()}
    mouth = MouthAgreement(detected_mouth_opening(rendered), detected_mouth_opening(truth))
    return {
        "frames": len(truth),
        "psnr": psnr,
        "baselines_psnr": baseline_psnr,
        "psnr_above_best_baseline": psnr - max(baseline_psnr.values()),
        "mouth_opening_range_ratio": mouth.range_ratio,
        "mouth_opening_correlation": mouth.correlation,
        "mouth_opening_frames_detected": int(np.isfinite(mouth.rendered).sum()),
        "mouth_intensity_correlation": correlation(mean_intensity(rendered, lips_rect),
                                                   mean_intensity(truth, lips_rect)),
        "mouth_opening_px": {"rendered": _finite_list(mouth.rendered), "ground_truth": _finite_list(mouth.real)},
    }


def _finite_list(values: np.ndarray) -> list[float | None]:
    return [round(float(value), 3) if np.isfinite(value) else None for value in values]
