"""Drive a trained talking head with speech or text and write an mp4 with the audio muxed in.

    python -m damc_core.render --model data/nerf_fine/sample --audio speech.mp3 -o out.mp4
    python -m damc_core.render --model data/nerf_fine/sample --text "Hello there." -o out.mp4

Features (E_c with the encoder the head was trained with, E_d's mel windows), fusion and rendering run here; the head
pose, torso and background are replayed from the training frames, back and forth, optionally smoothed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import uniform_filter1d
from tqdm import tqdm

from damc_core.audio.content import content_features, load_content_encoder
from damc_core.audio.extract import MEL_WINDOW
from damc_core.audio.levels import check_speech
from damc_core.audio.features import FeatureMismatchError
from damc_core.audio.mel import frames_for_samples, log_mel_windows
from damc_core.cli import exit_status, run_command
from damc_core.config import load_params
from damc_core.devices import resolve_device
from damc_core.face.pose import smooth_rotations
from damc_core.media import AUDIO_SAMPLE_RATE, VIDEO_FPS, read_audio, write_video
from damc_core.nerf.data import Camera, FrameAudio, SubjectDataError, SubjectSplit, frame_audio, load_split
from damc_core.nerf.bundle import load_head
from damc_core.nerf.model import FrameCondition, TalkingHead, audio_occupancy, render_frame
from damc_core.nerf.occupancy import OccupancyGrid
from damc_core.params import AudioFeaturesConfig, RenderConfig, TTSConfig
from damc_core.staging import OutputFolderError
from damc_core.sync.models import DynamicSyncEncoder
from damc_core.tts.text import detect_language

CONTENT_OUTPUTS = {"ctc_logits": "logits", "pinyin_posteriors": "logits", "hidden_states": "hidden_states",
                   "phone_posteriors": "logits"}
"""The audio_features.content_output that produces each content representation."""


@dataclass
class TrainedHead:
    """A trained head with what driving it needs."""

    head: TalkingHead
    """The talking head (eval mode)."""
    encoder: DynamicSyncEncoder
    """Its E_d."""
    meta: dict
    """head.json."""
    camera: Camera
    """The subject's camera."""
    train: SubjectSplit
    """The training frames, whose poses, torsos and latent codes are replayed."""


def load_trained_head(model_dir: Path, subject_dir: Path | None = None,
                      device: torch.device | str = "cpu") -> TrainedHead:
    """Load a nerf_coarse/nerf_fine folder and the training frames of its subject (`subject_dir` overrides the
    face_prep folder recorded at training time) onto `device`."""
    head, encoder, meta = load_head(model_dir, device)
    subject = Path(subject_dir or meta["subject_dir"])
    camera, train = load_split(subject, "train")
    if train.frame_ids.tolist() != meta["train_frame_ids"]:
        raise SubjectDataError(f"{subject} does not hold the training frames {model_dir} was trained on; pass the right "
                         f"face_prep folder with --subject")
    return TrainedHead(head, encoder, meta, camera, train.to(device))


def driving_features(trained: TrainedHead, audio: np.ndarray, config: AudioFeaturesConfig) -> FrameAudio:
    """E_c and E_d features of 16 kHz mono `audio`, one row per 25 fps frame, with the head's content encoder."""
    content_meta = trained.meta["content_features"]
    n_frames = frames_for_samples(len(audio))
    encoder = load_content_encoder(_content_encoder_name(content_meta), content_meta["language"])
    encoder.to(next(trained.encoder.parameters()).device)
    content = content_features(encoder, audio, n_frames, content_meta["language"],
                               CONTENT_OUTPUTS[content_meta["representation"]], config.chunk_s, config.context_s)
    if content.values.shape[2] != content_meta["dim"]:
        raise FeatureMismatchError(f"the content encoder gives {content.values.shape[2]} features per step but the head was "
                         f"trained on {content_meta['dim']}")
    return frame_audio(content.values, log_mel_windows(audio, n_frames, window=MEL_WINDOW), trained.encoder)


def _content_encoder_name(content_meta: dict) -> str:
    """The name load_content_encoder takes for the encoder that made the training features."""
    return "stand-in" if content_meta["stand_in"] else content_meta["encoder"]


def replay_order(n_source: int, n_frames: int) -> np.ndarray:
    """Indices 0, 1, ..., n-1, n-2, ..., 1, 0, 1, ... of `n_source` frames, for `n_frames` output frames."""
    if n_source < 1:
        raise ValueError("no frames to replay")
    if n_source == 1:
        return np.zeros(n_frames, dtype=np.int64)
    cycle = np.concatenate([np.arange(n_source), np.arange(n_source - 2, 0, -1)])
    return cycle[np.arange(n_frames) % len(cycle)]


def smooth_poses(camera_to_world: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of (T, 4, 4) camera poses: rotations as quaternions, translations linearly."""
    if window == 1 or len(camera_to_world) < 2:
        return camera_to_world.copy()
    smoothed = camera_to_world.copy()
    smoothed[:, :3, :3] = smooth_rotations(camera_to_world[:, :3, :3], window)
    smoothed[:, :3, 3] = uniform_filter1d(camera_to_world[:, :3, 3], window, axis=0, mode="nearest")
    return smoothed


def replayed_conditions(trained: TrainedHead, audio: FrameAudio, smoothing_frames: int) -> Iterator[FrameCondition]:
    """One condition per frame of `audio`: its audio condition, and the pose, blink, latent code and torso of the
    training frame replayed at that time."""
    order = replay_order(len(trained.train), len(audio))
    poses = smooth_poses(trained.train.camera_to_world.double().cpu().numpy()[order], smoothing_frames)
    device = audio.content.device
    for start in range(0, len(audio), 64):
        frames = torch.arange(start, min(start + 64, len(audio)), device=device)
        with torch.no_grad():
            conditions = trained.head.audio_condition(audio, frames)
        for row, frame in enumerate(frames.tolist()):
            source = int(order[frame])
            yield FrameCondition(torch.from_numpy(poses[frame]).float().to(device), conditions[row],
                                 float(trained.train.blink[source]), trained.head.field.latents[source].detach(),
                                 trained.train.backgrounds[source])


def render_conditions(
    trained: TrainedHead, conditions: Iterator[FrameCondition], total: int, occupancy: OccupancyGrid,
    config: RenderConfig, desc: str,
) -> Iterator[np.ndarray]:
    """`total` rendered uint8 frames, with a progress bar."""
    for condition in tqdm(conditions, total=total, desc=desc, unit="frame", mininterval=5.0, leave=False):
        yield render_frame(trained.head, trained.camera, condition, config.rays_per_chunk, occupancy).cpu().numpy()


def drive(
    trained: TrainedHead, audio: np.ndarray, source: str, out_path: Path, config: RenderConfig,
    features: AudioFeaturesConfig, desc: str = "render",
) -> int:
    """Render `audio` (16 kHz mono, from `source`, named in messages) into `out_path` (mp4 with the audio); return
    the number of frames. Silent audio raises AudioInputError; clipping is warned about on stderr."""
    for warning in check_speech(audio, source):
        print(f"render: warning: {warning}", file=sys.stderr)
    frame_features = driving_features(trained, audio, features)
    conditions = replayed_conditions(trained, frame_features, config.pose_smoothing_frames)
    occupancy = audio_occupancy(trained.head, frame_features)
    frames = render_conditions(trained, conditions, len(frame_features), occupancy, config, desc)
    write_video(out_path, frames, fps=VIDEO_FPS, audio=audio, sample_rate=AUDIO_SAMPLE_RATE, crf=config.crf)
    return len(frame_features)


def speech_from_text(text: str, language: str, config: TTSConfig) -> np.ndarray:
    """16 kHz speech of `text` through the configured TTS backend."""
    from damc_core.tts.speecht5 import load_speecht5
    from damc_core.tts.synthesis import speak

    speecht5 = None
    if language == "en" and config.backend == "speecht5":
        speecht5 = load_speecht5(config.acoustic_model, config.vocoder, config.speaker_embedding)
    return speak(text, language, config, speecht5).waveform


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m damc_core.render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained head: data/nerf_fine/<subject>")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio", type=Path, help="speech to drive the head (any format ffmpeg reads)")
    source.add_argument("--text", help="text to speak through the TTS backend of params.yaml (section tts)")
    parser.add_argument("--language", choices=("en", "zh"),
                        help="language of --text (default: zh when it has Chinese characters, else en)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the mp4 to write")
    parser.add_argument("--subject", type=Path, help="the subject's face_prep folder, if it moved since training")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="device and sections render, tts and audio_features are read (default params.yaml)")
    args = parser.parse_args(argv)
    if args.output.suffix.lower() != ".mp4":
        parser.error(f"--output must end in .mp4, got {args.output}")
    return exit_status(lambda: render_command(args), "render")


def render_command(args: argparse.Namespace) -> None:
    """What `main` does once its arguments are parsed."""
    if args.output.is_dir():
        raise OutputFolderError(f"--output {args.output} is a folder; give the path of the mp4 file to write")
    params = load_params(args.params)
    trained = load_trained_head(args.model, args.subject, resolve_device(params.device))
    if args.audio:
        audio, source = read_audio(args.audio), str(args.audio)
    else:
        language = args.language or detect_language(args.text)
        audio, source = speech_from_text(args.text, language, params.tts), f"speech of --text {args.text!r}"
    frames = drive(trained, audio, source, args.output, params.render, params.audio_features)
    print(f"render: wrote {args.output} ({frames} frames, {frames / VIDEO_FPS:.2f} s)")


if __name__ == "__main__":
    run_command(main)
