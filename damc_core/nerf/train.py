"""Training of the talking head: nerf_coarse (colour and opacity on rays) and nerf_fine (the same on patches, plus
lambda * LPIPS), sharing one flat, resumable loop."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from damc_core.config import to_dict
from damc_core.devices import limit_cpu_threads
from damc_core.metrics.image import psnr_of_mse, psnr_per_frame
from damc_core.metrics.lpips import LPIPS, MissingWeightsError, load_lpips
from damc_core.nerf.bundle import HEAD_WEIGHTS, export_head, load_head
from damc_core.nerf.data import Camera, FrameAudio, SubjectSplit, load_split, load_subject_audio
from damc_core.nerf.model import RayBatch, TalkingHead, audio_occupancy, head_rect, render_frame
from damc_core.nerf.validation import split_conditions
from damc_core.nerf.rays import camera_rays
from damc_core.params import FieldConfig, FusionConfig, NerfCoarseConfig, NerfFineConfig, RaySamplingConfig
from damc_core.sync.models import DynamicSyncEncoder
from damc_core.sync.train import load_dynamic_encoder
from damc_core.training import (
    DistributedContext,
    RunFolders,
    TrainingRun,
    run_fingerprint,
    run_training,
    seed_everything,
    shard_seed,
)

EVAL_RAYS_PER_CHUNK = 32768
"""Rays rendered at once when evaluating (as render.rays_per_chunk: larger chunks cost fewer calls per frame)."""


@dataclass(frozen=True)
class NerfInputs:
    """What training reads: the subject's frames, its audio features and the frozen E_d, on one device."""

    subject_dir: Path
    """face_prep's folder of the subject."""
    camera: Camera
    """The camera shared by all frames."""
    train: SubjectSplit
    """Training frames."""
    val: SubjectSplit
    """Validation frames."""
    audio: FrameAudio
    """Features of the subject's whole audio track, one row per video frame."""
    content_meta: dict
    """What the content features are (encoder, representation, language, ...)."""
    encoder: DynamicSyncEncoder
    """The frozen E_d that made `audio.dynamic`."""
    encoder_meta: dict
    """E_d's meta file (sync_encoder's encoder.json)."""

    @property
    def device(self) -> torch.device:
        """Where the frames and features are."""
        return self.train.images.device

    def fingerprint(self) -> str:
        """Identity of the data, for checkpoint names."""
        digest = hashlib.sha256()
        for tensor in (self.train.images, self.val.images, self.train.camera_to_world, self.train.head_masks,
                       self.audio.content, self.audio.dynamic):
            digest.update(tensor.cpu().numpy().tobytes())
        return digest.hexdigest()[:16]


def load_inputs(subject_dir: Path, features_dir: Path, encoder_dir: Path,
                device: torch.device | str = "cpu") -> NerfInputs:
    """Read a face_prep folder, the subject's audio_features folder and sync_encoder's E_d onto `device`."""
    camera, train = load_split(subject_dir, "train")
    _, val = load_split(subject_dir, "val")
    n_frames = int(max(train.frame_ids.max(), val.frame_ids.max())) + 1
    encoder, encoder_meta = load_dynamic_encoder(encoder_dir, device)
    audio, content_meta = load_subject_audio(features_dir, n_frames, encoder)
    return NerfInputs(subject_dir, camera, train.to(device), val.to(device), audio, content_meta, encoder,
                      encoder_meta)


def evaluate_psnr(head: TalkingHead, inputs: NerfInputs, count: int) -> dict[str, float]:
    """Mean full-frame PSNR of `count` evenly spaced validation frames, and the occupied share of the grid."""
    positions = np.unique(np.linspace(0, len(inputs.val) - 1, min(count, len(inputs.val))).round().astype(int))
    head.eval()
    occupancy = audio_occupancy(head, inputs.audio)
    rendered = np.stack([
        render_frame(head, inputs.camera, condition, EVAL_RAYS_PER_CHUNK, occupancy).cpu().numpy()
        for condition in split_conditions(head, inputs.val, inputs.audio, positions)
    ])
    head.train()
    scores = psnr_per_frame(rendered, inputs.val.images[torch.as_tensor(positions)].cpu().numpy())
    return {"val_psnr": float(np.mean(scores)), "occupied_fraction": occupancy.fraction}


def _uniform_pixels(rect: np.ndarray | tuple[int, int, int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    col0, row0, col1, row1 = rect
    return np.stack([rng.integers(col0, col1, count), rng.integers(row0, row1, count)], axis=1)


def training_pixels(
    head: TalkingHead, inputs: NerfInputs, position: int, count: int, config: RaySamplingConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """(count, 2) pixels of training frame `position`: a share from the lips box, one from the face box, the rest
    from the rectangle the head's box projects to."""
    lips = round(config.lips_fraction * count)
    face = round(config.face_fraction * count)
    rest = count - lips - face
    rect = head_rect(head, inputs.camera, inputs.train.camera_to_world[position])
    return np.concatenate([
        _uniform_pixels(inputs.train.lips_rects[position], lips, rng),
        _uniform_pixels(inputs.train.face_rects[position], face, rng),
        _uniform_pixels(rect, rest, rng),
    ])


@dataclass(frozen=True)
class TrainingRays:
    """Rays of training pixels and what they should render."""

    rays: RayBatch
    """The rays."""
    colour: torch.Tensor
    """(R, 3) ground-truth colours in [0, 1]."""
    head: torch.Tensor
    """(R,) 1.0 where face parsing labels the pixel head (the ray should be opaque), else 0.0."""


def training_rays(
    head: TalkingHead, inputs: NerfInputs, positions: np.ndarray, pixels: list[np.ndarray]
) -> TrainingRays:
    """Rays of the given pixels (a (n, 2) array per frame) of training frames (by position in the split), on the
    device of the training frames."""
    split = inputs.train
    device = inputs.device
    frame = torch.cat([torch.full((len(frame_pixels),), row, dtype=torch.int64, device=device)
                       for row, frame_pixels in enumerate(pixels)])
    chosen = torch.as_tensor(positions, device=device)
    position = chosen[frame]
    flat_pixels = torch.as_tensor(np.concatenate(pixels), device=device)
    cols, rows = flat_pixels[:, 0], flat_pixels[:, 1]
    origins, directions = camera_rays(split.camera_to_world[position], flat_pixels, inputs.camera.focal,
                                      inputs.camera.cx, inputs.camera.cy)
    rays = RayBatch(
        origins=origins, directions=directions, frame=frame,
        audio=head.audio_condition(inputs.audio, torch.as_tensor(split.frame_ids[positions], device=device)),
        blink=split.blink[chosen], latent=head.field.latents[chosen],
        background=split.backgrounds[position, rows, cols].float() / 255.0,
    )
    return TrainingRays(rays, split.images[position, rows, cols].float() / 255.0,
                        split.head_masks[position, rows, cols].float())


def colour_loss(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of (R, 3) colours."""
    return torch.mean((rendered - target) ** 2)


def opacity_loss(opacity: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Mean squared error of (R,) ray opacities against the head mask: opaque on the head, clear elsewhere."""
    return torch.mean((opacity - head) ** 2)


def _step_generators(data_seed: int, step: int, device: torch.device) -> tuple[np.random.Generator, torch.Generator]:
    """The step's pixel generator and sample-jitter generator, both fixed by (seed, step): resuming needs no state."""
    rng = np.random.default_rng([data_seed, step])
    return rng, torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))


def _optimizer(head: TalkingHead, encoding_lr: float, network_lr: float) -> torch.optim.Optimizer:
    """Adam with the hash tables at their own learning rate (ER-NeRF: 1e-2) and the networks at theirs."""
    encoding = list(head.field.position_encoding.parameters())
    encoding_ids = {id(parameter) for parameter in encoding}
    networks = [parameter for parameter in head.parameters() if id(parameter) not in encoding_ids]
    return torch.optim.Adam([{"params": encoding, "lr": encoding_lr}, {"params": networks, "lr": network_lr}],
                            betas=(0.9, 0.99), eps=1e-15)


def build_head(inputs: NerfInputs, fusion: FusionConfig, field: FieldConfig) -> TalkingHead:
    """A fresh talking head sized for the inputs (one latent code per training frame), on their device."""
    head = TalkingHead(inputs.audio.content.shape[1], inputs.audio.dynamic.shape[1], fusion, field, len(inputs.train))
    return head.to(inputs.device)


def _bundle_meta(inputs: NerfInputs, extra: dict) -> dict:
    """What head.json records of the data a head was trained on."""
    return {
        "content_features": inputs.content_meta,
        "dynamic_encoder": inputs.encoder_meta,
        "subject_dir": str(inputs.subject_dir),
        "train_frame_ids": inputs.train.frame_ids.tolist(),
    } | extra


def train_coarse(
    config: NerfCoarseConfig, fusion: FusionConfig, inputs: NerfInputs, folders: RunFolders,
    context: DistributedContext,
) -> dict[str, float]:
    """Stage nerf_coarse: colour and opacity losses on rays over the face, lips and head; export head.pt."""
    training = config.training
    limit_cpu_threads(inputs.device, config.cpu_threads)
    seed_everything(training.seed)
    head = build_head(inputs, fusion, config.field)
    optimizer = _optimizer(head, config.encoding_learning_rate, training.learning_rate)
    data_seed = shard_seed(training.seed, context)
    per_frame = max(config.rays.rays_per_step // config.rays.frames_per_step, 1)
    frames_per_step = min(config.rays.frames_per_step, len(inputs.train))

    def batch_losses(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng, generator = _step_generators(data_seed, step, inputs.device)
        positions = rng.choice(len(inputs.train), frames_per_step, replace=False)
        pixels = [training_pixels(head, inputs, position, per_frame, config.rays, rng) for position in positions]
        batch = training_rays(head, inputs, positions, pixels)
        rendered = head.render_rays(batch.rays, generator)
        return colour_loss(rendered.rgb, batch.colour), opacity_loss(rendered.opacity, batch.head)

    def batch_loss(step: int) -> torch.Tensor:
        colour, opacity = batch_losses(step)
        return colour + config.opacity_weight * opacity

    def finish(evaluation: dict[str, float]) -> dict[str, float]:
        with torch.no_grad():
            colour, _ = batch_losses(training.steps)
        return evaluation | {"train_psnr": psnr_of_mse(float(colour))}

    fingerprint = run_fingerprint(config, inputs.fingerprint(), context.world_size, json.dumps(to_dict(fusion)))
    run = TrainingRun("nerf_coarse", {"head": head}, optimizer, training, folders, fingerprint, context)
    metrics = run_training(run, batch_loss, lambda: evaluate_psnr(head, inputs, config.eval_frames), finish)
    if context.is_main:
        export_head(folders.out_dir, head, inputs.encoder,
                    _bundle_meta(inputs, {"stage": "nerf_coarse", "metrics": metrics}))
    return metrics


def patch_pixels(
    inputs: NerfInputs, position: int, size: int, on_lips: bool, rng: np.random.Generator
) -> np.ndarray:
    """(size * size, 2) pixels of a square patch of training frame `position`, row-major, centred at a random point
    of the lips box (or of the face box), kept inside the image."""
    rect = (inputs.train.lips_rects if on_lips else inputs.train.face_rects)[position]
    centre = _uniform_pixels(rect, 1, rng)[0]
    col0 = int(np.clip(centre[0] - size // 2, 0, inputs.camera.width - size))
    row0 = int(np.clip(centre[1] - size // 2, 0, inputs.camera.height - size))
    rows, cols = np.meshgrid(np.arange(row0, row0 + size), np.arange(col0, col0 + size), indexing="ij")
    return np.stack([cols.reshape(-1), rows.reshape(-1)], axis=1)


def load_perceptual_loss(config: NerfFineConfig, device: torch.device) -> tuple[LPIPS | None, str]:
    """The LPIPS module, or None and the reason when its weights are missing (said loudly on stderr)."""
    if config.lpips_weight == 0:
        return None, "lpips_weight is 0"
    try:
        return load_lpips(config.lpips.backbone, config.lpips.linear_heads).to(device), "computed"
    except MissingWeightsError as error:
        banner = "=" * 100
        print(f"{banner}\nnerf_fine: LPIPS IS UNAVAILABLE, TRAINING WITH MSE ONLY (no perceptual loss is computed or "
              f"reported).\n{error}\n{banner}", file=sys.stderr)
        return None, f"unavailable: {error}"


def train_fine(
    config: NerfFineConfig, coarse_dir: Path, inputs: NerfInputs, folders: RunFolders, context: DistributedContext
) -> dict[str, float | str]:
    """Stage nerf_fine: continue nerf_coarse's head on patches over the lips and face, with LPIPS on them."""
    training = config.training
    limit_cpu_threads(inputs.device, config.cpu_threads)
    seed_everything(training.seed)
    head, _, coarse_meta = load_head(coarse_dir, inputs.device)
    if coarse_meta["train_frame_ids"] != inputs.train.frame_ids.tolist():
        raise ValueError(f"{coarse_dir} was trained on other frames than the training split of {inputs.subject_dir} "
                         f"(its per-frame latent codes would land on the wrong frames); rerun nerf_coarse")
    head.train().requires_grad_(True)
    optimizer = _optimizer(head, config.encoding_learning_rate, training.learning_rate)
    perceptual, lpips_status = load_perceptual_loss(config, inputs.device)
    data_seed = shard_seed(training.seed, context)
    size = config.patch_size
    if size > min(inputs.camera.width, inputs.camera.height):
        raise ValueError(f"nerf_fine.patch_size {size} is larger than the {inputs.camera.width}x"
                         f"{inputs.camera.height} frames")

    def patch_losses(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        rng, generator = _step_generators(data_seed, step, inputs.device)
        positions = rng.choice(len(inputs.train), min(config.patches_per_step, len(inputs.train)), replace=False)
        pixels = [patch_pixels(inputs, position, size, bool(rng.random() < config.lips_patch_fraction), rng)
                  for position in positions]
        batch = training_rays(head, inputs, positions, pixels)
        rendered = head.render_rays(batch.rays, generator)
        colour, opacity = colour_loss(rendered.rgb, batch.colour), opacity_loss(rendered.opacity, batch.head)
        if perceptual is None:
            return colour, opacity, None
        as_images = [tensor.reshape(len(positions), size, size, 3).permute(0, 3, 1, 2) * 2 - 1
                     for tensor in (rendered.rgb, batch.colour)]
        return colour, opacity, perceptual(*as_images).mean()

    def batch_loss(step: int) -> torch.Tensor:
        colour, opacity, lpips = patch_losses(step)
        loss = colour + config.opacity_weight * opacity
        return loss if lpips is None else loss + config.lpips_weight * lpips

    def finish(evaluation: dict[str, float]) -> dict[str, float | str]:
        with torch.no_grad():
            colour, _, lpips = patch_losses(training.steps)
        final = evaluation | {"train_psnr": psnr_of_mse(float(colour))}
        final["train_lpips"] = None if lpips is None else float(lpips)
        return final | {"lpips": lpips_status}

    fingerprint = run_fingerprint(config, inputs.fingerprint(), context.world_size,
                                  _file_sha256(coarse_dir / HEAD_WEIGHTS), lpips_status)
    run = TrainingRun("nerf_fine", {"head": head}, optimizer, training, folders, fingerprint, context)
    metrics = run_training(run, batch_loss, lambda: evaluate_psnr(head, inputs, config.eval_frames), finish)
    if context.is_main:
        export_head(folders.out_dir, head, inputs.encoder, _bundle_meta(inputs, {
            "stage": "nerf_fine", "metrics": metrics, "coarse_metrics": coarse_meta["metrics"],
        }))
    return metrics


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
