"""Experiment: held-out PSNR of a head trained briefly on a real subject, against showing a training frame instead
(prints figures and step timings; writes only into --work).

Usage: python benchmarks/nerf_real_subject.py [--video ../shared/data/subjects/May_5s.mp4] [--work /tmp/damc_may]
                                              [--steps 2400] [--encoder data/sync_encoder] [--reuse]
                                              [--picture reports/nerf_real_subject/May_5s.png]

Steps, all in --work: face preparation (params.yaml face_prep with val_fraction 0.2: the first 80% of the frames
train, the last 20% are held out), audio features (params.yaml audio_features, as stages/audio_features.py), the
existing E_d (--encoder, sync_encoder's output), nerf_coarse training (params.yaml nerf_coarse with --steps and
hash_grid.finest_resolution 512), then every held-out frame rendered as the render stage does (nerf/validation.py)
(its own pose, blink, torso and audio; the mean latent code) and scored by mean full-frame PSNR against its ground
truth. Baselines, each a held-out frame's ground truth against:

- nearest-pose training frame: the training frame whose head pose is closest, measured as the mean image
  displacement (pixels) of the head box's 8 corners and centre projected with the two camera poses (this weighs
  rotation and translation in one unit); its rotation angle and translation distance are reported too;
- last training frame: the frame just before the held-out part;
- best training frame (oracle): the training frame with the highest PSNR against it (an upper bound of any
  frame-retrieval baseline);
- background only: the held-out frame's own torso over the background plate, with no head (what the render is
  composited over, so the render starts from this; the training-frame baselines do not get the held-out torso).

PSNR is also reported inside each held-out frame's face box (landmarks' box with forehead, as training samples it).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _face_prep(video: Path, out_dir: Path, params) -> dict:
    from damc_core.face.prep import FacePrepError, prepare_subject

    config = replace(params.face_prep, val_fraction=0.2)
    try:
        prepare_subject(video, out_dir, config)
    except FacePrepError as error:
        sys.exit(f"nerf_real_subject: face_prep: {error}")
    return json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))


def _audio_features(video: Path, out_dir: Path, params) -> dict:
    """As stages/audio_features.py."""
    from damc_core.audio.content import load_content_encoder
    from damc_core.audio.extract import extract_features
    from damc_core.media import count_video_frames, read_audio

    config = params.audio_features
    audio = read_audio(video)
    n_frames = count_video_frames(video)
    encoder = load_content_encoder(config.content_encoder, config.language)
    summary = extract_features(audio, n_frames, encoder, config, out_dir, source=str(video))
    return {"frames": n_frames, "content_encoder": "random-init stand-in" if encoder.stand_in else encoder.name,
            "content_shape": list(summary.content.shape), "mel_shape": list(summary.mel.shape),
            "warnings": list(summary.warnings)}


def coarse_config(params, steps: int, samples_per_ray: int | None, box: tuple | None):
    """params.yaml's nerf_coarse with `steps` steps, a finest hash-grid resolution of 512 (512x512 video), and the
    given samples per ray and box (box_min + box_max) where set."""
    config = params.nerf_coarse
    field = replace(config.field, hash_grid=replace(config.field.hash_grid, finest_resolution=512))
    if samples_per_ray:
        field = replace(field, samples_per_ray=samples_per_ray)
    if box:
        field = replace(field, box_min=tuple(box[:3]), box_max=tuple(box[3:]))
    return replace(config, field=field, training=replace(config.training, steps=steps))


def _rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cosine = (np.trace(a[:3, :3].T @ b[:3, :3]) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(cosine, -1.0, 1.0))))


def _box_psnr(frames: np.ndarray, truth: np.ndarray, rects: np.ndarray) -> float:
    """Mean PSNR inside each frame's rect (col0, row0, col1, row1)."""
    from damc_core.metrics.image import psnr_per_frame

    return float(np.mean([psnr_per_frame(np.ascontiguousarray(frame[None, r0:r1, c0:c1]),
                                         np.ascontiguousarray(target[None, r0:r1, c0:c1]))[0]
                          for frame, target, (c0, r0, c1, r1) in zip(frames, truth, rects, strict=True)]))


def evaluate(model_dir: Path, inputs, params, work: Path, tag: str) -> dict:
    """Render every held-out frame (damc_core.nerf.validation, as the render stage does) and score it and the
    baselines: the validation report's three, the best training frame per held-out frame (oracle) and the held-out
    frame's own torso over the plate with no head."""
    from damc_core.metrics.image import psnr_per_frame
    from damc_core.nerf.bundle import load_head
    from damc_core.nerf.validation import baseline_frames, nearest_poses, render_split

    head, _, _ = load_head(model_dir)
    val, train, camera = inputs.val, inputs.train, inputs.camera
    started = time.perf_counter()
    rendered = render_split(head, camera, val, inputs.audio, params.render.rays_per_chunk)
    render_s = time.perf_counter() - started
    truth, train_images = val.images.numpy(), train.images.numpy()
    oracle = np.array([int(np.argmax(psnr_per_frame(train_images, np.broadcast_to(target, train_images.shape))))
                       for target in truth])
    candidates = {"render": rendered} | baseline_frames(train, val, camera, head.box) | {
        "best_training_frame_oracle": train_images[oracle], "background_only": val.backgrounds.numpy()}
    summary = {name: {"psnr_full_frame": float(np.mean(psnr_per_frame(np.ascontiguousarray(frames), truth))),
                      "psnr_face_box": _box_psnr(frames, truth, val.face_rects)}
               for name, frames in candidates.items()}
    nearest, displacement = nearest_poses(train.camera_to_world, val.camera_to_world, camera, head.box)
    _save_comparison(work / f"compare_{tag}.png", truth, rendered, train_images[nearest], np.arange(len(val)))
    last_pose = train.camera_to_world[-1].double().numpy()
    return {
        "val_frames": len(val), "train_frames": len(train), "size": f"{camera.width}x{camera.height}",
        "render_s_per_frame": render_s / len(val),
        "mean_nearest_pose_displacement_px": float(displacement.mean()),
        "mean_last_train_rotation_deg": float(np.mean([_rotation_angle_deg(pose.double().numpy(), last_pose)
                                                       for pose in val.camera_to_world])),
        "summary": summary,
    }


def _save_comparison(path: Path, truth, rendered, nearest, positions) -> None:
    """Rows of (ground truth | render | nearest-pose training frame) for 3 held-out frames."""
    picks = sorted({int(positions[0]), int(positions[len(positions) // 2]), int(positions[-1])})
    rows = [np.concatenate([truth[index], rendered[index], nearest[index]], axis=1) for index in picks]
    cv2.imwrite(str(path), np.concatenate(rows, axis=0)[..., ::-1])


def _rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=ROOT.parent / "shared" / "data" / "subjects" / "May_5s.mp4")
    parser.add_argument("--work", type=Path, default=Path("/tmp/damc_may"), help="every output goes here")
    parser.add_argument("--encoder", type=Path, default=ROOT / "data" / "sync_encoder",
                        help="sync_encoder's output folder (E_d)")
    parser.add_argument("--steps", type=int, default=2400,
                        help="nerf_coarse steps (default 2400: about the wall time 300 steps took before the 2-sample "
                             "field; params.yaml's sample: 3600)")
    parser.add_argument("--threads", type=int,
                        help="torch.set_num_threads outside training (default: torch's, as the render stage); "
                             "training runs on params.yaml's nerf_coarse.cpu_threads, which train_coarse applies")
    parser.add_argument("--samples-per-ray", type=int, help="default: params.yaml's")
    parser.add_argument("--box", type=float, nargs=6, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
                        help="the head's box (decimetres, face template frame); default: params.yaml's")
    parser.add_argument("--picture", type=Path, help="also write the comparison picture here (e.g. under reports/)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep face preparation and audio features already in --work")
    args = parser.parse_args()

    if not (args.encoder / "encoder.pt").exists():
        sys.exit(f"nerf_real_subject: {args.encoder / 'encoder.pt'} is missing: --encoder must be the sync_encoder "
                 f"stage's output folder (run the pipeline up to sync_encoder first)")
    if not args.video.exists():
        sys.exit(f"nerf_real_subject: {args.video} is missing")
    import torch

    from damc_core.config import load_params, to_dict
    from damc_core.nerf.train import load_inputs, train_coarse
    from damc_core.training import RunFolders, distributed

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params.yaml")
    args.work.mkdir(parents=True, exist_ok=True)
    face_dir, features_dir = args.work / "face", args.work / "features"
    timings, report = {}, {"video": str(args.video), "encoder": str(args.encoder), "steps": args.steps,
                           "threads": torch.get_num_threads()}

    started = time.perf_counter()
    if args.reuse and (face_dir / "meta.json").exists():
        report["face_prep"] = json.loads((face_dir / "meta.json").read_text(encoding="utf-8")) | {"reused": True}
    else:
        report["face_prep"] = _face_prep(args.video, face_dir, params)
    timings["face_prep_s"] = time.perf_counter() - started
    meta = report["face_prep"]
    print(f"face_prep: {meta['frames']} frames {meta['width']}x{meta['height']}, train {meta['train_frames']}, "
          f"val {meta['val_frames']}, focal {meta['focal_px']:.0f} px, reprojection "
          f"{meta['reprojection_error_px']['mean']:.2f} px ({timings['face_prep_s']:.1f} s)")

    started = time.perf_counter()
    if args.reuse and (features_dir / "content.npy").exists():
        report["audio_features"] = {"reused": True}
    else:
        report["audio_features"] = _audio_features(args.video, features_dir, params)
    timings["audio_features_s"] = time.perf_counter() - started
    print(f"audio_features: {report['audio_features']} ({timings['audio_features_s']:.1f} s)")

    started = time.perf_counter()
    inputs = load_inputs(face_dir, features_dir, args.encoder)
    timings["load_inputs_s"] = time.perf_counter() - started

    config = coarse_config(params, args.steps, args.samples_per_ray, args.box)
    report["nerf_coarse"] = to_dict(config)
    tag = f"{args.steps}steps"
    model_dir = args.work / f"nerf_coarse_{tag}"
    folders = RunFolders(model_dir, args.work / "checkpoints", args.work / f"log_{tag}")
    started = time.perf_counter()
    with distributed() as context:
        metrics = train_coarse(config, params.fusion, inputs, folders, context)
    timings["train_s"] = time.perf_counter() - started
    report["train_metrics"] = metrics
    print(f"nerf_coarse ({args.steps} steps, finest_resolution 512, {config.rays.rays_per_step} rays/step, on "
          f"{context.device}): "
          + ", ".join(f"{name} {value:.3f}" for name, value in metrics.items())
          + f" ({timings['train_s']:.1f} s, {timings['train_s'] / args.steps:.2f} s/step incl. 2 eval renders per "
            f"{config.training.eval_every} steps)")

    started = time.perf_counter()
    report["evaluation"] = evaluate(model_dir, inputs, params, args.work, tag)
    timings["evaluate_s"] = time.perf_counter() - started
    timings["total_s"] = sum(timings.values())
    report["timings_s"] = {name: round(value, 2) for name, value in timings.items()}
    report["peak_rss_mb"] = _rss_mb()

    evaluation = report["evaluation"]
    print(f"\nheld-out frames: {evaluation['val_frames']} ({evaluation['size']}), trained on "
          f"{evaluation['train_frames']}; {evaluation['render_s_per_frame']:.2f} s/frame to render")
    print(f"{'method':<34}{'PSNR full frame':>16}{'PSNR face box':>15}")
    labels = {"render": f"NeRF render ({args.steps} steps)",
              "nearest_pose_training_frame": "nearest-pose training frame",
              "last_training_frame": "last training frame", "mean_training_frame": "mean training frame",
              "best_training_frame_oracle": "best training frame (oracle)",
              "background_only": "background only (torso + plate)"}
    for name, label in labels.items():
        scores = evaluation["summary"][name]
        print(f"{label:<34}{scores['psnr_full_frame']:>13.2f} dB{scores['psnr_face_box']:>12.2f} dB")
    print(f"nearest-pose match: mean {evaluation['mean_nearest_pose_displacement_px']:.1f} px box displacement; "
          f"last training frame: mean {evaluation['mean_last_train_rotation_deg']:.2f} deg rotation away")
    print("timings: " + ", ".join(f"{name} {value:.1f}" for name, value in report["timings_s"].items())
          + f"; peak RSS {report['peak_rss_mb']} MB")
    if args.picture:
        args.picture.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.work / f"compare_{tag}.png", args.picture)
    out = args.work / f"report_{tag}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out} and {args.work / f'compare_{tag}.png'} (rows: ground truth | render | nearest-pose frame)")


if __name__ == "__main__":
    main()
