"""Stage `render`: a subject's validation frames driven by their own audio, and every TTS clip, to mp4 with audio;
a report with the validation PSNR and how well the rendered mouth follows the real one (deterministic: no timings,
which the progress bars show and benchmarks/nerf.py measures)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from damc_core.cli import run_command
from damc_core.config import load_params
from damc_core.media import AUDIO_SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS, read_audio, write_video
from damc_core.nerf.data import load_split, load_subject_audio
from damc_core.nerf.validation import baseline_frames, render_split, validation_report
from damc_core.render import TrainedHead, drive, load_trained_head
from damc_core.renders import GROUND_TRUTH_VIDEO, VALIDATION_VIDEO, tts_video_name
from damc_core.devices import resolve_device
from damc_core.tts.synthesis import CLIP_NAME, SPEECH_NAME


def render_validation(trained: TrainedHead, subject: Path, features: Path, out_dir: Path, params) -> dict:
    """val.mp4 (rendered) and val_gt.mp4 (the real frames), both with the validation audio; their comparison and
    the baselines'."""
    camera, val = load_split(subject, "val")
    val = val.to(trained.train.images.device)
    n_frames = int(max(val.frame_ids.max(), trained.train.frame_ids.max())) + 1
    audio, _ = load_subject_audio(features, n_frames, trained.encoder)
    rendered = render_split(trained.head, camera, val, audio, params.render.rays_per_chunk)
    truth = val.images.cpu().numpy()
    waveform = read_audio(subject / "aud.wav")
    first, last = int(val.frame_ids[0]), int(val.frame_ids[-1]) + 1
    soundtrack = waveform[first * SAMPLES_PER_FRAME:last * SAMPLES_PER_FRAME]
    for name, frames in ((VALIDATION_VIDEO, rendered), (GROUND_TRUTH_VIDEO, truth)):
        write_video(out_dir / name, frames, fps=VIDEO_FPS, audio=soundtrack, sample_rate=AUDIO_SAMPLE_RATE,
                    crf=params.render.crf)
    lips = tuple(int(value) for value in np.median(val.lips_rects, axis=0))
    baselines = baseline_frames(trained.train, val, camera, trained.head.box)
    return validation_report(rendered, truth, baselines, lips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, required=True, help="input: the subject's nerf_fine folder")
    parser.add_argument("--subject", type=Path, required=True, help="input: the subject's face_prep folder")
    parser.add_argument("--features", type=Path, required=True, help="input: the subject's audio_features folder")
    parser.add_argument("--tts", type=Path, required=True, help="input: the tts stage's folder of clips")
    parser.add_argument("--out-dir", type=Path, required=True, help="output: val.mp4, val_gt.mp4, tts_<name>.mp4")
    parser.add_argument("--report", type=Path, required=True, help="output: JSON report")
    args = parser.parse_args()

    params = load_params(args.params)
    trained = load_trained_head(args.model, args.subject, resolve_device(params.device))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report = {"model": str(args.model), "validation": render_validation(trained, args.subject, args.features,
                                                                         args.out_dir, params), "tts": {}}
    for clip in sorted(path.parent for path in args.tts.glob(f"*/{CLIP_NAME}")):
        speech = clip / SPEECH_NAME
        frames = drive(trained, read_audio(speech), str(speech), args.out_dir / tts_video_name(clip.name),
                       params.render, params.audio_features, desc=f"render {clip.name}")
        report["tts"][clip.name] = {"frames": frames}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    validation = report["validation"]
    baselines = ", ".join(f"{name.replace('_', ' ')} {value:.2f} dB"
                          for name, value in validation["baselines_psnr"].items())
    print(f"render: validation PSNR {validation['psnr']:.2f} dB ({baselines}); mouth opening range ratio "
          f"{validation['mouth_opening_range_ratio']}, correlation {validation['mouth_opening_correlation']}; "
          f"{len(report['tts'])} TTS clips")


if __name__ == "__main__":
    run_command(main)
