"""A tiny synthetic prepared subject (face_prep's layout, audio_features' folder, sync_encoder's E_d) and tiny NeRF
configs, shared by test_nerf_train.py and test_render_command.py (imported as `nerf_fixtures`: tests/ is on
sys.path under pytest's default rootdir-relative import mode, as tests/ is not a package)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import soundfile
import torch

from damc_core.audio.content import build_stand_in
from damc_core.audio.extract import extract_features
from damc_core.face.parsing import Part, parsing_to_rgb
from damc_core.media import AUDIO_SAMPLE_RATE, SAMPLES_PER_FRAME, write_audio
from damc_core.params import (
    AudioFeaturesConfig,
    FieldConfig,
    FusionConfig,
    HashGridConfig,
    LpipsConfig,
    NerfCoarseConfig,
    NerfFineConfig,
    RaySamplingConfig,
    TrainingConfig,
)
from damc_core.sync.models import DynamicSyncEncoder
from damc_core.sync.train import ENCODER_WEIGHTS, MEL_CONVENTION
from damc_core.training import RunFolders, export_weights

BOX_MIN = (-1.0, -1.0, -1.0)
BOX_MAX = (1.0, 1.0, 1.0)
"""The head's box, decimetres around the origin."""
CAMERA_DISTANCE = 18.0
"""The camera sits on +z this far from the origin, looking at it (OpenGL: it looks along its -z)."""
DYNAMIC_DIM = 8
"""E_d's output size."""
VAL_FRAMES = 2
"""The last frames of the subject are its validation split."""
FEATURES_CONFIG = AudioFeaturesConfig(language="en", content_encoder="stand-in", content_output="logits",
                                      chunk_s=20.0, context_s=1.0)


@dataclass(frozen=True)
class Subject:
    """The folders of one synthetic subject and what they were made from."""

    subject_dir: Path
    """face_prep's folder."""
    features_dir: Path
    """audio_features' folder (content.npy, mel.npy and their meta files)."""
    encoder_dir: Path
    """sync_encoder's folder (encoder.pt + encoder.json)."""
    frames: int
    """Video frames (= audio feature rows)."""
    size: int
    """Side of the square frames."""
    loudness: np.ndarray
    """(frames,) loudness of the audio per frame in [0, 1]; the mouth's brightness follows it."""

    @property
    def train_ids(self) -> list[int]:
        return list(range(self.frames - VAL_FRAMES))

    @property
    def val_ids(self) -> list[int]:
        return list(range(self.frames - VAL_FRAMES, self.frames))


def speech_like(samples: int, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated tone (float32, 16 kHz, peak 0.6): harmonics of 140 Hz under a 5 Hz envelope
    whose syllables have random strengths, plus a little noise."""
    rng = np.random.default_rng(seed)
    time = np.arange(samples) / AUDIO_SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * 140 * k * time + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 8))
    syllable = np.floor(time * 5).astype(int)
    strength = rng.uniform(0.2, 1.0, syllable.max() + 1)[syllable]
    envelope = strength * np.sin(np.pi * (time * 5 % 1.0)) ** 2
    signal = voice * envelope + 0.01 * rng.standard_normal(samples)
    return (0.6 * signal / np.abs(signal).max()).astype(np.float32)


def frame_loudness(audio: np.ndarray, frames: int) -> np.ndarray:
    """RMS of each frame's 640 samples, scaled to [0, 1]."""
    padded = np.zeros(frames * SAMPLES_PER_FRAME, dtype=np.float64)
    padded[:min(len(audio), len(padded))] = audio[:len(padded)]
    rms = np.sqrt(np.mean(padded.reshape(frames, SAMPLES_PER_FRAME) ** 2, axis=1))
    return rms / max(rms.max(), 1e-9)


def landmarks_68(size: int) -> np.ndarray:
    """(68, 2) landmarks of the synthetic face: 48 points on the face's outline, 20 around the mouth."""
    centre = size / 2
    outline = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    face = np.stack([centre + 0.27 * size * np.cos(outline), centre - 0.03 * size + 0.32 * size * np.sin(outline)],
                    axis=1)
    around = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    mouth = np.stack([centre + 0.12 * size * np.cos(around), 0.67 * size + 0.05 * size * np.sin(around)], axis=1)
    return np.concatenate([face, mouth])


def _frame_images(
    size: int, loudness: float, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RGB plate, RGBA torso, RGB ground truth and part labels of one frame: a bright face whose mouth brightens
    with `loudness`, above a torso strip, over a dark graded plate."""
    rows, cols = np.mgrid[0:size, 0:size]
    plate = np.stack([20 + 40 * cols / size, 40 + 30 * rows / size, np.full((size, size), 90.0)], axis=-1)
    torso = np.zeros((size, size, 4))
    strip = rows >= size - 4
    torso[strip] = (70, 70, 150, 255)
    centre = points[:48].mean(axis=0)
    radii = (points[:48].max(axis=0) - points[:48].min(axis=0)) / 2
    face = ((cols + 0.5 - centre[0]) / radii[0]) ** 2 + ((rows + 0.5 - centre[1]) / radii[1]) ** 2 <= 1
    mouth_low, mouth_high = points[48:].min(axis=0), points[48:].max(axis=0)
    mouth = ((cols + 0.5 >= mouth_low[0]) & (cols + 0.5 <= mouth_high[0]) & (rows + 0.5 >= mouth_low[1])
             & (rows + 0.5 <= mouth_high[1]))
    truth = plate.copy()
    truth[face] = (210, 170, 150)
    truth[mouth] = 30 + 220 * loudness
    alpha = torso[..., 3:] / 255
    truth = truth * (1 - alpha) + torso[..., :3] * alpha
    labels = np.full((size, size), Part.BACKGROUND, dtype=np.uint8)
    labels[face | mouth] = Part.HEAD
    labels[strip] = Part.TORSO
    as_uint8 = lambda image: np.clip(np.round(image), 0, 255).astype(np.uint8)  # noqa: E731
    return as_uint8(plate), as_uint8(torso), as_uint8(truth), labels


def _transforms(ids: list[int], size: int, focal: float) -> dict:
    camera_to_world = np.eye(4)
    camera_to_world[2, 3] = CAMERA_DISTANCE
    return {
        "focal_len": focal, "cx": size / 2, "cy": size / 2, "w": size, "h": size, "units": "dm",
        "frames": [{"img_id": index, "aud_id": index, "transform_matrix": camera_to_world.tolist(), "blink": 0.0}
                   for index in ids],
    }


def write_encoder(encoder_dir: Path, seed: int = 0) -> None:
    """sync_encoder's output: a random-init E_d (out_dim DYNAMIC_DIM) exported as train_encoder exports it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = DynamicSyncEncoder(out_dim=DYNAMIC_DIM)
    meta = {"model": "DynamicSyncEncoder (random init, test)", "output_dim": DYNAMIC_DIM, "mel": MEL_CONVENTION,
            "training_data_sha256": "synthetic"}
    export_weights(encoder_dir / ENCODER_WEIGHTS, encoder.state_dict(), meta)


def make_subject(tmp_path: Path, frames: int = 12, size: int = 32, seed: int = 0) -> Subject:
    """A complete synthetic subject under `tmp_path`: subject/ (face_prep), features/ (audio_features, made by the
    real stand-in content encoder) and encoder/ (sync_encoder)."""
    subject_dir, features_dir, encoder_dir = tmp_path / "subject", tmp_path / "features", tmp_path / "encoder"
    for folder in (subject_dir / "gt_imgs", subject_dir / "torso_imgs", subject_dir / "parsing", features_dir,
                   encoder_dir):
        folder.mkdir(parents=True, exist_ok=True)

    write_audio(subject_dir / "aud.wav", speech_like(frames * SAMPLES_PER_FRAME, seed), AUDIO_SAMPLE_RATE)
    audio, _ = soundfile.read(subject_dir / "aud.wav", dtype="float32")  # as stored (16-bit)
    loudness = frame_loudness(audio, frames)

    points = landmarks_68(size)
    np.save(subject_dir / "landmarks.npy", np.repeat(points[None], frames, axis=0).astype(np.float32))
    for index in range(frames):
        plate, torso, truth, labels = _frame_images(size, float(loudness[index]), points)
        cv2.imwrite(str(subject_dir / "parsing" / f"{index}.png"), parsing_to_rgb(labels)[..., ::-1])
        cv2.imwrite(str(subject_dir / "gt_imgs" / f"{index}.jpg"), truth[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(subject_dir / "torso_imgs" / f"{index}.png"), torso[..., [2, 1, 0, 3]])
    cv2.imwrite(str(subject_dir / "bc.jpg"), plate[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])

    # The front face of the box (1 dm in front of the origin) spans 1.6 * 0.35 * size pixels: it covers the face.
    focal = 0.35 * size * (CAMERA_DISTANCE - 1.0)
    train_ids, val_ids = list(range(frames - VAL_FRAMES)), list(range(frames - VAL_FRAMES, frames))
    for split, ids in (("train", train_ids), ("val", val_ids)):
        (subject_dir / f"transforms_{split}.json").write_text(json.dumps(_transforms(ids, size, focal)))

    extract_features(audio, frames, build_stand_in("en"), FEATURES_CONFIG, features_dir,
                     source=str(subject_dir / "aud.wav"))
    write_encoder(encoder_dir, seed)
    return Subject(subject_dir, features_dir, encoder_dir, frames, size, loudness)


def field_config(samples_per_ray: int = 6, jitter: bool = True) -> FieldConfig:
    return FieldConfig(
        hash_grid=HashGridConfig(levels=3, features_per_level=1, log2_table_size=8, base_resolution=4,
                                 finest_resolution=32),
        box_min=BOX_MIN, box_max=BOX_MAX, hidden_dim=16, geometry_dim=8, density_layers=2, colour_hidden_dim=16,
        colour_layers=2, latent_dim=2, samples_per_ray=samples_per_ray, jitter=jitter,
    )


def fusion_config(mode: str = "csfm") -> FusionConfig:
    return FusionConfig(mode=mode, dim=8, window=3, heads=1)


def training_config(steps: int, **changes) -> TrainingConfig:
    values = {"seed": 0, "steps": steps, "learning_rate": 0.01, "warmup_steps": 1, "log_every": 1,
              "eval_every": 1000, "checkpoint_every": 1000} | changes
    return TrainingConfig(**values)


def coarse_config(steps: int = 8, rays_per_step: int = 64, **training) -> NerfCoarseConfig:
    return NerfCoarseConfig(
        field=field_config(),
        rays=RaySamplingConfig(rays_per_step=rays_per_step, frames_per_step=2, face_fraction=0.5, lips_fraction=0.25),
        encoding_learning_rate=0.03, opacity_weight=0.1, eval_frames=1, cpu_threads=1,
        training=training_config(steps, **training),
    )


def fine_config(lpips: LpipsConfig, steps: int = 3, lpips_weight: float = 0.1, **training) -> NerfFineConfig:
    return NerfFineConfig(
        patch_size=32, patches_per_step=1, lips_patch_fraction=0.5, lpips_weight=lpips_weight, lpips=lpips,
        encoding_learning_rate=0.01, opacity_weight=0.1, eval_frames=1, cpu_threads=1,
        training=training_config(steps, **({"learning_rate": 0.002, "warmup_steps": 0} | training)),
    )


def run_folders(root: Path, name: str) -> RunFolders:
    return RunFolders(root / name / "out", root / name / "checkpoints", root / name / "log")
