"""Training of the talking head: nerf_coarse (MSE on rays) and nerf_fine (MSE + lambda * LPIPS on patches), sharing
one flat, resumable loop, and the exported model bundle the render command reads."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from damc_core.config import from_dict, to_dict
from damc_core.metrics.lpips import LPIPS, MissingWeightsError, load_lpips
from damc_core.nerf.data import Camera, FrameAudio, SubjectSplit, load_split, load_subject_audio
from damc_core.nerf.model import (
    FrameCondition,
    RayBatch,
    TalkingHead,
    audio_occupancy,
    frame_rays,
    head_rect,
    render_frame,
)
from damc_core.params import FieldConfig, FusionConfig, NerfCoarseConfig, NerfFineConfig
from damc_core.sync.models import DynamicSyncEncoder
from damc_core.sync.train import load_dynamic_encoder
from damc_core.training import (
    DistributedContext,
    RunFolders,
    export_weights,
    run_fingerprint,
    run_training,
    seed_everything,
    shard_seed,
)

HEAD_WEIGHTS = "head.pt"
"""The exported bundle: {"talking_head": state dict, "dynamic_encoder": state dict}; meta in head.json."""
EVAL_RAYS_PER_CHUNK = 2048
"""Rays rendered at once when evaluating."""
MAX_PSNR = 100.0
"""PSNR reported for identical images."""


@dataclass(frozen=True)
class NerfInputs:
    """What training reads: the subject's frames, its audio features and the frozen E_d."""

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

    def fingerprint(self) -> str:
        """Identity of the data, for checkpoint names."""
        digest = hashlib.sha256()
        for tensor in (self.train.images, self.val.images, self.train.camera_to_world, self.audio.content,
                       self.audio.dynamic):
            digest.update(tensor.numpy().tobytes())
        return digest.hexdigest()[:16]


def load_inputs(subject_dir: Path, features_dir: Path, encoder_dir: Path) -> NerfInputs:
    """Read a face_prep folder, the subject's audio_features folder and sync_encoder's E_d."""
    camera, train = load_split(subject_dir, "train")
    _, val = load_split(subject_dir, "val")
    n_frames = int(max(train.frame_ids.max(), val.frame_ids.max())) + 1
    encoder, encoder_meta = load_dynamic_encoder(encoder_dir)
    audio, content_meta = load_subject_audio(features_dir, n_frames, encoder)
    return NerfInputs(subject_dir, camera, train, val, audio, content_meta, encoder, encoder_meta)


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1], capped at MAX_PSNR."""
    return MAX_PSNR if mse <= 10 ** (-MAX_PSNR / 10) else -10.0 * math.log10(mse)


def split_conditions(
    head: TalkingHead, split: SubjectSplit, audio: FrameAudio, positions: np.ndarray
) -> list[FrameCondition]:
    """Conditions of frames of a split that was not trained on (by position in the split): their own pose, torso,
    blink and audio, and the mean latent code."""
    with torch.no_grad():
        conditions = head.audio_condition(audio, torch.as_tensor(split.frame_ids[positions]))
        latent = head.field.mean_latent()
    return [
        FrameCondition(split.camera_to_world[index], conditions[row], float(split.blink[index]), latent,
                       split.backgrounds[index])
        for row, index in enumerate(positions)
    ]


def frame_mse(rendered: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Mean squared error of two (H, W, 3) uint8 frames (arrays or CPU tensors) in [0, 1] units."""
    difference = (np.asarray(rendered, dtype=np.float64) - np.asarray(target, dtype=np.float64)) / 255.0
    return float(np.mean(difference**2))


def evaluate_psnr(head: TalkingHead, inputs: NerfInputs, count: int) -> dict[str, float]:
    """Mean full-frame PSNR of `count` evenly spaced validation frames."""
    positions = np.unique(np.linspace(0, len(inputs.val) - 1, min(count, len(inputs.val))).round().astype(int))
    head.eval()
    occupancy = audio_occupancy(head, inputs.audio)
    scores = [
        psnr(frame_mse(render_frame(head, inputs.camera, condition, EVAL_RAYS_PER_CHUNK, occupancy),
                       inputs.val.images[index]))
        for index, condition in zip(positions, split_conditions(head, inputs.val, inputs.audio, positions),
                                    strict=True)
    ]
    head.train()
    return {"val_psnr": float(np.mean(scores)), "occupied_fraction": occupancy.fraction}


def _uniform_pixels(rect: np.ndarray | tuple[int, int, int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    col0, row0, col1, row1 = rect
    return np.stack([rng.integers(col0, col1, count), rng.integers(row0, row1, count)], axis=1)


def training_pixels(
    head: TalkingHead, inputs: NerfInputs, position: int, count: int, config: NerfCoarseConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """(count, 2) pixels of training frame `position`: a share from the lips box, one from the face box, the rest
    from the rectangle the head's box projects to."""
    lips = round(config.rays.lips_fraction * count)
    face = round(config.rays.face_fraction * count)
    rest = count - lips - face
    rect = head_rect(head, inputs.camera, inputs.train.camera_to_world[position])
    return np.concatenate([
        _uniform_pixels(inputs.train.lips_rects[position], lips, rng),
        _uniform_pixels(inputs.train.face_rects[position], face, rng),
        _uniform_pixels(rect, rest, rng),
    ])


def _training_rays(
    head: TalkingHead, inputs: NerfInputs, positions: np.ndarray, pixels: list[np.ndarray]
) -> tuple[RayBatch, torch.Tensor]:
    """Rays of the given pixels of training frames (by position) and their ground-truth colours in [0, 1]."""
    split = inputs.train
    audio = head.audio_condition(inputs.audio, torch.as_tensor(split.frame_ids[positions]))
    batches, targets = [], []
    for row, (position, frame_pixels) in enumerate(zip(positions, pixels, strict=True)):
        cols, rows = torch.as_tensor(frame_pixels[:, 0]), torch.as_tensor(frame_pixels[:, 1])
        condition = FrameCondition(split.camera_to_world[position], audio[row], float(split.blink[position]),
                                   head.field.latents[position], split.backgrounds[position])
        background = split.backgrounds[position][rows, cols].float() / 255.0
        batches.append(frame_rays(inputs.camera, condition, torch.as_tensor(frame_pixels), background))
        targets.append(split.images[position][rows, cols].float() / 255.0)
    fields = {name: torch.cat([getattr(batch, name) for batch in batches]) for name in vars(batches[0])}
    return RayBatch(**fields), torch.cat(targets)


def _step_generators(data_seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """The step's pixel generator and sample-jitter generator, both fixed by (seed, step): resuming needs no state."""
    rng = np.random.default_rng([data_seed, step])
    return rng, torch.Generator().manual_seed(int(rng.integers(2**62)))


def _optimizer(head: TalkingHead, encoding_lr: float, network_lr: float) -> torch.optim.Optimizer:
    """Adam with the hash tables at their own learning rate (ER-NeRF: 1e-2) and the networks at theirs."""
    encoding = list(head.field.position_encoding.parameters())
    encoding_ids = {id(parameter) for parameter in encoding}
    networks = [parameter for parameter in head.parameters() if id(parameter) not in encoding_ids]
    return torch.optim.Adam([{"params": encoding, "lr": encoding_lr}, {"params": networks, "lr": network_lr}],
                            betas=(0.9, 0.99), eps=1e-15)


def check_single_process(context: DistributedContext, stage: str) -> None:
    """The NeRF stages train in one process on the CPU: refuse a multi-process (torchrun) launch rather than train
    unsynchronised copies."""
    if context.world_size > 1:
        raise RuntimeError(f"{stage} trains in one process ({context.world_size} were launched); run it with "
                           f"`python`, not `torchrun`")


def build_head(inputs: NerfInputs, fusion: FusionConfig, field: FieldConfig) -> TalkingHead:
    """A fresh talking head sized for the inputs (one latent code per training frame)."""
    return TalkingHead(inputs.audio.content.shape[1], inputs.audio.dynamic.shape[1], fusion, field, len(inputs.train))


def train_coarse(
    config: NerfCoarseConfig, fusion: FusionConfig, inputs: NerfInputs, folders: RunFolders,
    context: DistributedContext,
) -> dict[str, float]:
    """Stage nerf_coarse: MSE on rays sampled over the face, lips and head; export head.pt + head.json."""
    check_single_process(context, "nerf_coarse")
    training = config.training
    seed_everything(training.seed)
    head = build_head(inputs, fusion, config.field)
    optimizer = _optimizer(head, config.encoding_learning_rate, training.learning_rate)
    data_seed = shard_seed(training.seed, context)
    per_frame = max(config.rays.rays_per_step // config.rays.frames_per_step, 1)
    frames_per_step = min(config.rays.frames_per_step, len(inputs.train))

    def batch_loss(step: int) -> torch.Tensor:
        rng, generator = _step_generators(data_seed, step)
        positions = rng.choice(len(inputs.train), frames_per_step, replace=False)
        pixels = [training_pixels(head, inputs, position, per_frame, config, rng) for position in positions]
        rays, target = _training_rays(head, inputs, positions, pixels)
        return torch.mean((head.render_rays(rays, generator).rgb - target) ** 2)

    def finish() -> dict[str, float]:
        with torch.no_grad():
            mse = float(batch_loss(training.steps))
        return evaluate_psnr(head, inputs, config.eval_frames) | {"train_psnr": psnr(mse)}

    fingerprint = run_fingerprint(config, inputs.fingerprint(), context.world_size, json.dumps(to_dict(fusion)))
    metrics = run_training(batch_loss, lambda: evaluate_psnr(head, inputs, config.eval_frames), finish,
                           {"head": head}, optimizer, training, folders, fingerprint, context, "nerf_coarse")
    if context.is_main:
        export_head(folders.out_dir, head, inputs, fusion, config.field, {"stage": "nerf_coarse",
                                                                          "metrics": metrics})
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


def load_perceptual_loss(config: NerfFineConfig) -> tuple[LPIPS | None, str]:
    """The LPIPS module, or None and the reason when its weights are missing (said loudly on stderr)."""
    if config.lpips_weight == 0:
        return None, "lpips_weight is 0"
    try:
        return load_lpips(config.lpips.backbone, config.lpips.linear_heads), "computed"
    except MissingWeightsError as error:
        banner = "=" * 100
        print(f"{banner}\nnerf_fine: LPIPS IS UNAVAILABLE, TRAINING WITH MSE ONLY (no perceptual loss is computed or "
              f"reported).\n{error}\n{banner}", file=sys.stderr)
        return None, f"unavailable: {error}"


def train_fine(
    config: NerfFineConfig, coarse_dir: Path, inputs: NerfInputs, folders: RunFolders, context: DistributedContext
) -> dict[str, float | str]:
    """Stage nerf_fine: continue nerf_coarse's head with MSE + lambda * LPIPS on patches over the lips and face."""
    check_single_process(context, "nerf_fine")
    training = config.training
    seed_everything(training.seed)
    head, _, coarse_meta = load_head(coarse_dir)
    if coarse_meta["train_frame_ids"] != inputs.train.frame_ids.tolist():
        raise ValueError(f"{coarse_dir} was trained on other frames than the training split of {inputs.subject_dir} "
                         f"(its per-frame latent codes would land on the wrong frames); rerun nerf_coarse")
    head.train().requires_grad_(True)
    fusion, field = from_dict(FusionConfig, coarse_meta["fusion"]), from_dict(FieldConfig, coarse_meta["field"])
    optimizer = _optimizer(head, config.encoding_learning_rate, training.learning_rate)
    perceptual, lpips_status = load_perceptual_loss(config)
    data_seed = shard_seed(training.seed, context)
    size = config.patch_size
    if size > min(inputs.camera.width, inputs.camera.height):
        raise ValueError(f"nerf_fine.patch_size {size} is larger than the {inputs.camera.width}x"
                         f"{inputs.camera.height} frames")

    def patch_losses(step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        rng, generator = _step_generators(data_seed, step)
        positions = rng.choice(len(inputs.train), min(config.patches_per_step, len(inputs.train)), replace=False)
        pixels = [patch_pixels(inputs, position, size, bool(rng.random() < config.lips_patch_fraction), rng)
                  for position in positions]
        rays, target = _training_rays(head, inputs, positions, pixels)
        rendered = head.render_rays(rays, generator).rgb
        mse = torch.mean((rendered - target) ** 2)
        if perceptual is None:
            return mse, None
        as_images = [tensor.reshape(len(positions), size, size, 3).permute(0, 3, 1, 2) * 2 - 1
                     for tensor in (rendered, target)]
        return mse, perceptual(*as_images).mean()

    def batch_loss(step: int) -> torch.Tensor:
        mse, lpips = patch_losses(step)
        return mse if lpips is None else mse + config.lpips_weight * lpips

    def finish() -> dict[str, float | str]:
        with torch.no_grad():
            mse, lpips = patch_losses(training.steps)
        final = evaluate_psnr(head, inputs, config.eval_frames) | {"train_psnr": psnr(float(mse))}
        final["train_lpips"] = None if lpips is None else float(lpips)
        return final | {"lpips": lpips_status}

    fingerprint = run_fingerprint(config, inputs.fingerprint(), context.world_size,
                                  _file_sha256(coarse_dir / HEAD_WEIGHTS), lpips_status)
    metrics = run_training(batch_loss, lambda: evaluate_psnr(head, inputs, config.eval_frames), finish,
                           {"head": head}, optimizer, training, folders, fingerprint, context, "nerf_fine")
    if context.is_main:
        export_head(folders.out_dir, head, inputs, fusion, field, {
            "stage": "nerf_fine", "metrics": metrics, "coarse_metrics": coarse_meta["metrics"],
        })
    return metrics


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_head(
    out_dir: Path, head: TalkingHead, inputs: NerfInputs, fusion: FusionConfig, field: FieldConfig, extra: dict
) -> None:
    """head.pt (the head and E_d, so the bundle alone turns audio into frames) and head.json (what it is)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": "TalkingHead (damc_core.nerf.model)",
        "fusion": to_dict(fusion),
        "field": to_dict(field),
        "content_dim": int(inputs.audio.content.shape[1]),
        "dynamic_dim": int(inputs.audio.dynamic.shape[1]),
        "latent_count": len(inputs.train),
        "content_features": inputs.content_meta,
        "dynamic_encoder": inputs.encoder_meta,
        "subject_dir": str(inputs.subject_dir),
        "train_frame_ids": inputs.train.frame_ids.tolist(),
    } | extra
    weights = {"talking_head": head.state_dict(), "dynamic_encoder": inputs.encoder.state_dict()}
    export_weights(out_dir / HEAD_WEIGHTS, weights, meta)


def load_head(model_dir: Path) -> tuple[TalkingHead, DynamicSyncEncoder, dict]:
    """The exported head (eval mode, frozen), its E_d, and its meta, from a nerf_coarse or nerf_fine folder."""
    path = Path(model_dir) / HEAD_WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: --model must be a nerf_coarse or nerf_fine output folder "
                                f"(e.g. data/nerf_fine/<subject>); run `dvc repro` to train one")
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    weights = torch.load(path, map_location="cpu", weights_only=True)
    head = TalkingHead(meta["content_dim"], meta["dynamic_dim"], from_dict(FusionConfig, meta["fusion"]),
                       from_dict(FieldConfig, meta["field"]), meta["latent_count"])
    head.load_state_dict(weights["talking_head"])
    encoder = DynamicSyncEncoder(out_dim=meta["dynamic_encoder"]["output_dim"])
    encoder.load_state_dict(weights["dynamic_encoder"])
    for module in (head, encoder):
        module.eval().requires_grad_(False)
    return head, encoder, meta

