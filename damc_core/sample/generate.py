"""Generates the sample's speaking subject and clip set: videos, exact ground truth, manifest and a preview."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from damc_core import clipset
from damc_core.config import to_dict
from damc_core.media import AUDIO_SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS, write_video
from damc_core.params import ArticulationConfig, BlinkConfig, LookConfig, SampleConfig
from damc_core.sample.articulation import articulate, blink_schedule
from damc_core.sample.portrait import TalkingPortrait, astronaut, frame_crop, restyle
from damc_core.sample.speech import speak

FRAME_MULTIPLE = 8
"""Frame counts are rounded up to a multiple of this, so the audio (frames x 640 samples) is a whole number of
1024-sample AAC frames and the muxed audio and video streams have exactly the same length."""

SIGNALS_NAME = "signals.tsv"
LANDMARKS_NAME = "landmarks.npy"


@dataclass(frozen=True)
class Performance:
    """A rendered talking face and everything the generator knows about it."""

    frames: np.ndarray
    """Video frames, (T, H, W, 3) uint8 RGB at 25 fps."""
    audio: np.ndarray
    """Speech, float32 mono at 16 kHz, exactly T x 640 samples."""
    signals: pd.DataFrame
    """Per-frame ground truth: time_s, aperture, spread, blink, mouth_opening_px."""
    landmarks: np.ndarray
    """Per-frame 68 iBUG landmarks of the rendered frames, (T, 68, 2) float32 pixels (pixel centres at integers)."""


def pad_to_whole_frames(audio: np.ndarray) -> np.ndarray:
    """Append silence so the audio fills a multiple of FRAME_MULTIPLE video frames."""
    block = SAMPLES_PER_FRAME * FRAME_MULTIPLE
    return np.pad(audio, (0, -len(audio) % block))


def perform(
    audio: np.ndarray,
    look: LookConfig,
    image_size: int,
    articulation: ArticulationConfig,
    blink: BlinkConfig,
    rng: np.random.Generator,
    progress: str,
) -> Performance:
    """Animate the astronaut portrait, restyled by `look`, to say `audio`."""
    audio = pad_to_whole_frames(audio)
    n_frames = len(audio) // SAMPLES_PER_FRAME
    mouth = articulate(audio, n_frames, AUDIO_SAMPLE_RATE, VIDEO_FPS, articulation)
    closure = blink_schedule(n_frames, VIDEO_FPS, blink, rng)
    portrait = TalkingPortrait(*restyle(*astronaut(), look), articulation)

    frames = np.empty((n_frames, image_size, image_size, 3), dtype=np.uint8)
    landmarks = np.empty((n_frames, 68, 2), dtype=np.float32)
    for index in tqdm(range(n_frames), desc=progress, unit="frame", leave=False):
        image, points = portrait.render(mouth.aperture[index], mouth.spread[index], closure[index])
        frames[index], landmarks[index] = frame_crop(image, points, look.crop, image_size)

    signals = pd.DataFrame(
        {
            "frame": np.arange(n_frames),
            "time_s": np.arange(n_frames) / VIDEO_FPS,
            "aperture": mouth.aperture,
            "spread": mouth.spread,
            "blink": closure,
            "mouth_opening_px": np.linalg.norm(landmarks[:, 66] - landmarks[:, 62], axis=1),
        }
    )
    return Performance(frames=frames, audio=audio, signals=signals, landmarks=landmarks)


def save_truth(performance: Performance, signals_path: Path, landmarks_path: Path) -> None:
    """Write the per-frame signals as TSV and the landmarks as .npy (both byte-deterministic)."""
    performance.signals.to_csv(signals_path, sep="\t", index=False, float_format="%.5f", lineterminator="\n")
    np.save(landmarks_path, performance.landmarks)


def generate_subject(config: SampleConfig, out_dir: Path) -> Performance:
    """The single speaking subject: video.mp4, signals.tsv, landmarks.npy and meta.json in `out_dir`."""
    subject = config.subject
    out_dir.mkdir(parents=True, exist_ok=True)
    audio = speak(subject.sentences, subject.speaker, subject.pause_s, AUDIO_SAMPLE_RATE)
    rng = np.random.default_rng(config.seed)
    performance = perform(
        audio, subject.look, subject.image_size, config.articulation, config.blink, rng, "sample subject"
    )
    write_video(out_dir / "video.mp4", performance.frames, audio=performance.audio)
    save_truth(performance, out_dir / SIGNALS_NAME, out_dir / LANDMARKS_NAME)
    meta = {
        "fps": VIDEO_FPS,
        "sample_rate": AUDIO_SAMPLE_RATE,
        "frames": len(performance.frames),
        "duration_s": len(performance.frames) / VIDEO_FPS,
        "image_size": subject.image_size,
        "landmarks": "iBUG-68, (frames, 68, 2) float32, x right / y down, pixel centres at integer coordinates",
        "signals": {
            "aperture": "jaw opening driving the mouth, 0..1 (rule: damc_core/sample/articulation.py)",
            "spread": "lip shape, -1 rounded .. +1 spread",
            "blink": "eyelid closure, 0 open .. 1 shut",
            "mouth_opening_px": "distance between inner-lip landmarks 62 and 66 in the video, pixels",
        },
        "subject": to_dict(subject),
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return performance


def generate_clips(config: SampleConfig, out_dir: Path) -> pd.DataFrame:
    """The multi-speaker clip set in the layout of damc_core.clipset, with ground truth under `truth/`."""
    clips = config.clips
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, clip in enumerate(clips.clips):
        audio = speak((clip.sentence,), clip.speaker, clips.pause_s, AUDIO_SAMPLE_RATE)
        rng = np.random.default_rng([config.seed, index + 1])
        performance = perform(
            audio, clip.look, clips.image_size, config.articulation, config.blink, rng, f"clip {clip.name}"
        )
        write_video(clipset.clip_path(out_dir, clip.name), performance.frames, audio=performance.audio)
        save_truth(performance, truth_dir / f"{clip.name}.{SIGNALS_NAME}", truth_dir / f"{clip.name}.{LANDMARKS_NAME}")
        rows.append(manifest_row(clip.name, performance))
    return pd.read_csv(clipset.write_manifest(out_dir, rows))


def manifest_row(clip_id: str, performance: Performance) -> dict:
    """The manifest entry of a synthetic clip, measured from its known landmarks and signals."""
    n_frames = len(performance.frames)
    return {
        "clip_id": clip_id,
        "source": "synthetic",
        "start_s": 0.0,
        "end_s": n_frames / VIDEO_FPS,
        "frames": n_frames,
        "duration_s": n_frames / VIDEO_FPS,
        "face_size_px": clipset.face_size(performance.landmarks),
        "head_motion": clipset.head_motion(performance.landmarks),
        "speech_ratio": float((performance.signals["aperture"] > 0).mean()),
        "kept": True,
        "reason": "",
    }
