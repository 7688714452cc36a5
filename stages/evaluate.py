"""Stage `evaluate`: PSNR, LPIPS, FID, LMD and Sync (LSE-C / LSE-D) of every subject's validation renders, Sync of
its TTS-driven renders, our expert's confidence on both; reports/metrics.json, per-frame plots and the gallery."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from damc_core.cli import run_command
from damc_core.config import load_params
from damc_core.evaluation import Backends, evaluate_validation, load_backends, sync_metrics, write_frame_table
from damc_core.gallery import PAPER_TABLE_1, SubjectResults, write_gallery
from damc_core.gallery_figures import load_validation_figures
from damc_core.media import read_audio, read_video
from damc_core.metrics.image import detect_landmarks
from damc_core.nerf.data import load_split
from damc_core.params import EvaluateConfig
from damc_core.renders import GROUND_TRUTH_VIDEO, TTS_PREFIX, VALIDATION_VIDEO, tts_video_name
from damc_core.sync.train import load_expert


def evaluate_subject(name: str, renders: Path, faces: Path, config: EvaluateConfig, backends: Backends) -> dict:
    """Metrics of one subject: `validation` (rendered val.mp4 vs the GT frames gt_imgs/), the sync metrics of the GT
    frames with the same audio (`validation_ground_truth`, the reference a perfect head would reach) and `tts`."""
    _, train = load_split(faces, "train")
    _, val = load_split(faces, "val")
    rendered = read_video(renders / VALIDATION_VIDEO)
    truth = val.images.numpy()
    if rendered.shape != truth.shape:
        raise ValueError(f"{renders / VALIDATION_VIDEO}: {rendered.shape} frames but the validation split of {faces} "
                         f"has {truth.shape}; rerun the render stage")
    metrics, reference, per_frame = evaluate_validation(rendered, truth, train.images.numpy(),
                                                        read_audio(renders / VALIDATION_VIDEO), config, backends)
    tts = {}
    for video in sorted(renders.glob(f"{TTS_PREFIX}*.mp4")):
        frames = read_video(video)
        landmarks = detect_landmarks(frames, config.landmarks)
        tts[video.stem.removeprefix(TTS_PREFIX)] = sync_metrics(frames, read_audio(video), landmarks, config, backends)
    return {"validation": metrics, "validation_ground_truth": reference, "tts": tts, "frame_ids": val.frame_ids,
            "per_frame": per_frame}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--renders", type=Path, required=True, help="input: the render stage's folder (per subject)")
    parser.add_argument("--faces", type=Path, required=True, help="input: face_prep's folder (per subject)")
    parser.add_argument("--expert", type=Path, required=True, help="input: sync_expert's output folder")
    parser.add_argument("--logs", type=Path, nargs="+", default=[],
                        help="input: training log folders holding <subject>/plots/metrics/*.tsv (for the gallery)")
    parser.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON (DVC metrics)")
    parser.add_argument("--frames-dir", type=Path, required=True, help="output: per-frame TSV per subject")
    parser.add_argument("--render-reports", type=Path, required=True,
                        help="input: the render stage's reports <subject>.json (mouth openings, for the gallery)")
    parser.add_argument("--gallery", type=Path, required=True, help="output: the results page (HTML)")
    parser.add_argument("--gallery-figures", type=Path, required=True,
                        help="output: the gallery's images, one folder per subject")
    parser.add_argument("--experiments-page", type=Path, default=None,
                        help="the page scripts/experiments_table.py writes, linked from the gallery if it exists")
    args = parser.parse_args()

    params = load_params(args.params)
    expert, expert_meta = load_expert(args.expert, "cpu")
    backends = load_backends(params.evaluate, expert, expert_meta)
    report, gallery = {}, []
    for name in params.subjects:
        started = time.perf_counter()
        result = evaluate_subject(name, args.renders / name, args.faces / name, params.evaluate, backends)
        write_frame_table(args.frames_dir / f"{name}.tsv", result["frame_ids"], result["per_frame"])
        report[name] = {
            "validation": {metric: value.as_dict() for metric, value in result["validation"].items()},
            "validation_ground_truth": {metric: value.as_dict()
                                        for metric, value in result["validation_ground_truth"].items()},
            "tts": {clip: {metric: value.as_dict() for metric, value in scores.items()}
                    for clip, scores in result["tts"].items()},
        }
        gallery.append(SubjectResults(
            name=name,
            gt_video=args.renders / name / GROUND_TRUTH_VIDEO,
            rendered_video=args.renders / name / VALIDATION_VIDEO,
            tts_videos={clip: args.renders / name / tts_video_name(clip) for clip in result["tts"]},
            metrics=report[name]["validation"],
            curves={f"{log.name}: {tsv.stem}": tsv for log in args.logs
                    for tsv in sorted((log / name / "plots" / "metrics").glob("*.tsv")) if tsv.stem != "learning_rate"},
            validation=load_validation_figures(args.renders / name, args.faces / name,
                                               args.render_reports / f"{name}.json"),
        ))
        summary = {metric: value["value"] for metric, value in report[name]["validation"].items()}
        print(f"evaluate {name} ({time.perf_counter() - started:.1f} s): "
              + ", ".join(f"{metric} {_shown(value)}" for metric, value in summary.items()))
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    experiments = args.experiments_page if args.experiments_page and args.experiments_page.is_file() else None
    write_gallery(args.gallery, gallery, PAPER_TABLE_1, "DAMC results", figures_dir=args.gallery_figures,
                  experiments_page=experiments)


def _shown(value: float | None) -> str:
    return "null" if value is None or not np.isfinite(value) else f"{value:.4g}"


if __name__ == "__main__":
    run_command(main)
