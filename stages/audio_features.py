"""Stage `audio_features`: a subject's content features (E_c) and mel windows (E_d), one row per video frame."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from damc_core.audio.content import load_content_encoder
from damc_core.audio.extract import extract_features
from damc_core.audio.mel import frames_for_samples
from damc_core.cli import run_command
from damc_core.config import load_params
from damc_core.devices import resolve_device
from damc_core.media import count_video_frames, probe, read_audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--media", type=Path, required=True, help="input: the subject's video (or an audio file)")
    parser.add_argument("--out-dir", type=Path, required=True, help="output: content.npy, mel.npy and their meta")
    parser.add_argument("--report", type=Path, required=True, help="output: JSON summary")
    args = parser.parse_args()

    params = load_params(args.params)
    config = params.audio_features
    audio = read_audio(args.media)
    has_video = probe(args.media).video is not None
    n_frames = count_video_frames(args.media) if has_video else frames_for_samples(len(audio))
    encoder = load_content_encoder(config.content_encoder, config.language)
    encoder.to(resolve_device(params.device))
    summary = extract_features(audio, n_frames, encoder, config, args.out_dir, source=str(args.media))

    report = {
        "content_encoder": "random-init stand-in" if encoder.stand_in else encoder.name,
        "content": {"representation": summary.content.representation, "shape": summary.content.shape},
        "mel": {"representation": summary.mel.representation, "shape": summary.mel.shape},
        "frames": n_frames,
        "audio_s": len(audio) / summary.content.sample_rate,
        "language": config.language,
        "warnings": list(summary.warnings),
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for warning in summary.warnings:
        print(f"warning: {warning}")
    print(f"audio_features: {n_frames} frames, content {summary.content.shape} ({report['content_encoder']}), "
          f"mel {summary.mel.shape} -> {args.out_dir}")


if __name__ == "__main__":
    run_command(main)
