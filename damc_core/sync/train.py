"""Training loops of the lip-sync expert D_lip and the Dynamic-Sync Encoder E_d: flat, resumable, logged."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from damc_core.media import VIDEO_FPS
from damc_core.params import BatchTrainingConfig, SyncEncoderConfig, SyncExpertConfig
from damc_core.sync.data import ClipArrays, SyncBatch, sample_batch, split_clips
from damc_core.sync.models import DynamicSyncEncoder, LipDecoder, SyncExpert, reconstruction_l1, sync_bce
from damc_core.training import (
    DistributedContext,
    RunFolders,
    TrainingRun,
    all_reduce_mean,
    export_weights,
    run_fingerprint,
    run_training,
    seed_everything,
    shard_seed,
    wrap_ddp,
)

EXPERT_WEIGHTS = "expert.pt"
ENCODER_WEIGHTS = "encoder.pt"
MEL_CONVENTION = {
    "input": "log-mel window (1, 80, 16): Wav2Lip convention (16 kHz, pre-emphasis 0.97, n_fft 800, hop 200, "
    "80 Slaney bins 55-7600 Hz, normalised to [-4, 4]), the 16 mel frames (0.2 s) centred on a 25 fps video frame",
    "source": "damc_core.audio.mel.log_mel_windows",
}
EVAL_SEED_OFFSET = 10_000
"""Held-out batches are drawn from seed + this, so every evaluation sees the same batches."""
ENCODER_EVAL_BATCHES = 4
"""Held-out batches per evaluation of the encoder."""


def on_device(batch: SyncBatch, device: torch.device) -> SyncBatch:
    """The batch with its tensors moved to `device`."""
    tensors = {
        field.name: value.to(device)
        for field in dataclasses.fields(batch)
        if isinstance(value := getattr(batch, field.name), torch.Tensor)
    }
    return dataclasses.replace(batch, **tensors)


class LipReconstructor(torch.nn.Module):
    """E_d and the lip decoder together: each of 5 lower faces rebuilt from the reference face at the same position
    and its own mel window (one module, so DDP can wrap it)."""

    def __init__(self, encoder: DynamicSyncEncoder, decoder: LipDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, reference: torch.Tensor, target_mels: torch.Tensor) -> torch.Tensor:
        """(B, 3F, H, W) references and (B, F, 1, 80, 16) mels -> (B, 3F, H, W) reconstructions, F frames at once."""
        batch, frames = target_mels.shape[:2]
        faces = reference.reshape(batch * frames, 3, *reference.shape[2:])
        features = self.encoder(target_mels.reshape(batch * frames, *target_mels.shape[2:]))
        return self.decoder(faces, features).reshape(reference.shape)


def _evaluate(held_out: list[ClipArrays], batches: int, batch_size: int, seed: int, metric: Callable) -> dict:
    """Mean of `metric(batch) -> dict of floats` over fixed held-out batches."""
    rng = np.random.default_rng(seed + EVAL_SEED_OFFSET)
    results = [metric(sample_batch(held_out, batch_size, rng)) for _ in range(batches)]
    return {name: float(np.mean([result[name] for result in results])) for name in results[0]}


def _final_metrics(held_out: dict, step_fn: Callable[[SyncBatch], torch.Tensor],
                   train: list[ClipArrays], training: BatchTrainingConfig, context: DistributedContext) -> dict:
    """The last held-out metrics and the training loss on one more batch, for the summary."""
    final = dict(held_out)
    rng = np.random.default_rng([shard_seed(training.seed, context), training.steps])
    with torch.no_grad():
        final["train_loss"] = float(all_reduce_mean(step_fn(sample_batch(train, training.batch_size, rng)), context))
    return final


def _train(
    run: TrainingRun[BatchTrainingConfig], step_fn: Callable[[SyncBatch], torch.Tensor], evaluate: Callable[[], dict],
    train: list[ClipArrays],
) -> dict:
    """run_training with batches of clip windows drawn from a generator seeded by (seed, rank, step)."""
    training, context = run.training, run.context
    data_seed = shard_seed(training.seed, context)

    def step_loss(step: int) -> torch.Tensor:
        return step_fn(sample_batch(train, training.batch_size, np.random.default_rng([data_seed, step])))

    def held_out() -> dict:
        return {f"held_out_{name}": value for name, value in evaluate().items()}

    return run_training(run, step_loss, held_out,
                        lambda evaluation: _final_metrics(evaluation, step_fn, train, training, context))


def train_expert(
    config: SyncExpertConfig, clips: list[ClipArrays], data_fingerprint: str, folders: RunFolders,
    context: DistributedContext,
) -> dict:
    """Train D_lip on in-sync vs shifted mel windows; export expert.pt + expert.json; return the final metrics."""
    train, held_out = split_clips(clips, config.held_out_clips)
    seed_everything(config.training.seed)
    expert = SyncExpert(embed_dim=config.embed_dim).to(context.device)
    model = wrap_ddp(expert, context)
    optimizer = torch.optim.Adam(expert.parameters(), lr=config.training.learning_rate)

    def step_fn(batch: SyncBatch) -> torch.Tensor:
        batch = on_device(batch, context.device)
        return sync_bce(model(batch.faces, batch.mel), batch.label)

    def metric(batch: SyncBatch) -> dict:
        batch = on_device(batch, context.device)
        with torch.no_grad():
            similarity = expert.eval()(batch.faces, batch.mel)
        expert.train()
        accuracy = ((similarity > 0.5).float() == batch.label).float().mean()
        return {"loss": float(sync_bce(similarity, batch.label)), "accuracy": float(accuracy)}

    def evaluate() -> dict:
        return _evaluate(held_out, config.eval_batches, config.training.batch_size, config.training.seed, metric)

    fingerprint = run_fingerprint(config, data_fingerprint, context.world_size)
    run = TrainingRun("sync_expert", {"expert": expert}, optimizer, config.training, folders, fingerprint, context)
    metrics = _train(run, step_fn, evaluate, train)
    if context.is_main:
        meta = {
            "model": "SyncExpert (damc_core.sync.models)",
            "face_size": config.face_size,
            "embed_dim": config.embed_dim,
            "faces": f"(15, {config.face_size // 2}, {config.face_size}): lower halves of 5 consecutive face crops, "
            f"RGB in [0, 1], frame-major",
            "mel": MEL_CONVENTION,
            "training_data_sha256": data_fingerprint,
            "train_clips": [clip.clip_id for clip in train],
            "held_out_clips": [clip.clip_id for clip in held_out],
            "metrics": metrics,
        }
        export_weights(folders.out_dir / EXPERT_WEIGHTS, expert.state_dict(), meta)
    return metrics


def load_expert(folder: Path, device: torch.device) -> tuple[SyncExpert, dict]:
    """The exported expert (frozen, eval mode) and its meta."""
    meta = json.loads((folder / EXPERT_WEIGHTS).with_suffix(".json").read_text(encoding="utf-8"))
    expert = SyncExpert(embed_dim=meta["embed_dim"])
    expert.load_state_dict(torch.load(folder / EXPERT_WEIGHTS, map_location=device, weights_only=True))
    expert.to(device).eval().requires_grad_(False)
    return expert, meta


def load_dynamic_encoder(folder: Path, device: torch.device | str = "cpu") -> tuple[DynamicSyncEncoder, dict]:
    """The exported E_d (frozen, eval mode) and its meta, from a sync_encoder output folder."""
    path = Path(folder) / ENCODER_WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: expected the output folder of the sync_encoder stage")
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    encoder = DynamicSyncEncoder(out_dim=meta["output_dim"])
    encoder.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    encoder.to(device).eval().requires_grad_(False)
    return encoder, meta


def train_encoder(
    config: SyncEncoderConfig, expert_dir: Path, clips: list[ClipArrays], data_fingerprint: str,
    folders: RunFolders, context: DistributedContext,
) -> dict:
    """Train E_d with the lip decoder (L1 reconstruction + frozen expert's sync loss); export encoder.pt + .json."""
    expert, expert_meta = load_expert(expert_dir, context.device)
    held_out_ids = set(expert_meta["held_out_clips"])
    train = [clip for clip in clips if clip.clip_id not in held_out_ids]
    held_out = [clip for clip in clips if clip.clip_id in held_out_ids]
    seed_everything(config.training.seed)
    encoder = DynamicSyncEncoder(out_dim=config.dim)
    widths = tuple(config.decoder_width * 2**level for level in range(4))
    reconstructor = LipReconstructor(encoder, LipDecoder(feature_dim=config.dim, widths=widths))
    reconstructor.to(context.device)
    model = wrap_ddp(reconstructor, context)
    optimizer = torch.optim.Adam(reconstructor.parameters(), lr=config.training.learning_rate)

    def losses(batch: SyncBatch, module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction = module(batch.reference, batch.target_mels)
        similarity = expert(reconstruction, batch.target_mels[:, 2])
        return reconstruction_l1(reconstruction, batch.faces), sync_bce(similarity, torch.ones_like(similarity))

    def step_fn(batch: SyncBatch) -> torch.Tensor:
        reconstruction, sync = losses(on_device(batch, context.device), model)
        return config.reconstruction_weight * reconstruction + config.sync_weight * sync

    def metric(batch: SyncBatch) -> dict:
        reconstructor.eval()
        with torch.no_grad():
            reconstruction, sync = losses(on_device(batch, context.device), reconstructor)
        reconstructor.train()
        return {"reconstruction_l1": float(reconstruction), "sync_loss": float(sync)}

    def evaluate() -> dict:
        return _evaluate(held_out, ENCODER_EVAL_BATCHES, config.training.batch_size, config.training.seed, metric)

    fingerprint = run_fingerprint(config, data_fingerprint, context.world_size, expert_meta["training_data_sha256"])
    run = TrainingRun("sync_encoder", {"reconstructor": reconstructor}, optimizer, config.training, folders,
                      fingerprint, context)
    metrics = _train(run, step_fn, evaluate, train)
    if context.is_main:
        meta = {
            "model": "DynamicSyncEncoder (damc_core.sync.models)",
            "output_dim": config.dim,
            "mel": MEL_CONVENTION,
            "fps": VIDEO_FPS,
            "training_data_sha256": data_fingerprint,
            "expert": {key: expert_meta[key] for key in ("face_size", "embed_dim", "training_data_sha256")},
            "metrics": metrics,
        }
        export_weights(folders.out_dir / ENCODER_WEIGHTS, encoder.state_dict(), meta)
    return metrics
