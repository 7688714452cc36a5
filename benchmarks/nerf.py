"""Benchmark of the talking-head NeRF on the embedded sample: validation PSNR against training wall time for the
previous and the current settings side by side, training rays per second, render seconds per frame, and the
paper-scale step time (prints figures; not a test).

Usage: python benchmarks/nerf.py [--phases convergence train render] [--paper-scale] [--threads N]
                                 [--device cpu|cuda] [--eval-frames 8]

Needs the sample prepared by the pipeline (`dvc repro nerf_coarse` at least: data/faces/sample,
data/features/sample, data/sync_encoder). Each measurement runs in a fresh subprocess, one after the other, so
timings do not share a process or compete for cores, and peak memory (ru_maxrss) is its own.

- convergence: nerf_coarse trained as the stage trains it (damc_core.nerf.train.train_coarse) with the "previous"
  settings (16 jittered samples per ray from a nearly transparent start, no opacity loss, 2048 rays per step: the
  defaults before this benchmark's settings; run for about the wall time of the current ones) and the "current"
  ones (params.yaml); val PSNR over `--eval-frames` validation frames at evenly spaced steps, against the training
  wall time (evaluations excluded).
- train: steps of the current settings, timed apart from evaluation: steps/s, rays/s, and the forward /
  backward split of a step.
- render: render_frame of the validation frames by the current head (at 256x256, the sample's size), its
  occupancy grid built once per clip as the render stage does.
- --paper-scale adds training steps at the paper's scale (hash_grid.levels 14, 65536 rays per coarse step; a
  nerf_fine step of its patches, with LPIPS when its weights are there) and a render at 512x512 (the sample's camera
  scaled by 2). benchmarks/gpu.py runs these on a GPU and projects the paper's 120k + 30k steps.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = {"subject": ROOT / "data/faces/sample", "features": ROOT / "data/features/sample",
          "encoder": ROOT / "data/sync_encoder"}
PREVIOUS = {"samples_per_ray": 16, "jitter": True, "opacity_weight": 0.0, "initial_log_density": -4.0,
            "learning_rate": 0.002, "steps": 600}
"""The settings before the current ones, run for about the current run's wall time (600 of their steps)."""
EVALUATIONS = 6
"""Validation PSNR measurements along each run."""


def _torch(threads: int | None):
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch


def _phase_threads(phase: str, threads: int | None) -> int | None:
    """The torch threads of a phase: `threads` when given, else the stage's own (training: nerf_*.cpu_threads;
    rendering: torch's default, as the render stage runs)."""
    if threads is not None or phase.startswith("render"):
        return threads
    params = _params()
    return (params.nerf_fine if phase.startswith("fine") else params.nerf_coarse).cpu_threads


def _params():
    from damc_core.config import load_params

    return load_params(ROOT / "params.yaml")


def _inputs(device: str):
    from damc_core.nerf.train import load_inputs

    missing = [str(path) for path in SAMPLE.values() if not path.exists()]
    if missing:
        sys.exit(f"benchmarks/nerf.py: {', '.join(missing)} missing: run `dvc repro nerf_coarse` first")
    return load_inputs(SAMPLE["subject"], SAMPLE["features"], SAMPLE["encoder"], device)


def settings(name: str, params):
    """nerf_coarse's config of the named settings ("previous" or "current")."""
    config = params.nerf_coarse
    if name == "current":
        return config
    field = replace(config.field, samples_per_ray=PREVIOUS["samples_per_ray"], jitter=PREVIOUS["jitter"])
    training = replace(config.training, steps=PREVIOUS["steps"], learning_rate=PREVIOUS["learning_rate"])
    return replace(config, field=field, training=training, opacity_weight=PREVIOUS["opacity_weight"])


def run_convergence(torch, device: str, name: str, eval_frames: int) -> dict:
    """Train with the named settings as the stage does; val PSNR at EVALUATIONS evenly spaced steps."""
    import tempfile

    from damc_core.nerf import field as nerf_field
    from damc_core.nerf import train as nerf_train
    from damc_core.training import RunFolders, setup_distributed

    if name == "previous":
        nerf_field.INITIAL_LOG_DENSITY = PREVIOUS["initial_log_density"]
    params = _params()
    config = settings(name, params)
    every = max(config.training.steps // EVALUATIONS, 1)
    config = replace(config, eval_frames=eval_frames,
                     training=replace(config.training, eval_every=every, checkpoint_every=10**9))
    inputs = _inputs(device)
    points, evaluating = [], {"seconds": 0.0}
    real_evaluate = nerf_train.evaluate_psnr
    started = time.perf_counter()

    def timed_evaluate(head, inputs, count):
        if len(points) == EVALUATIONS:  # the final metrics, after the last evaluation
            return real_evaluate(head, inputs, count)
        begun = time.perf_counter()
        result = real_evaluate(head, inputs, count)
        points.append({"step": every * (len(points) + 1),
                       "train_s": round(begun - started - evaluating["seconds"], 1),
                       "val_psnr": round(result["val_psnr"], 2)})
        evaluating["seconds"] += time.perf_counter() - begun
        return result

    nerf_train.evaluate_psnr = timed_evaluate
    with tempfile.TemporaryDirectory() as work:
        folders = RunFolders(Path(work, "out"), Path(work, "checkpoints"), Path(work, "log"))
        nerf_train.train_coarse(config, params.fusion, inputs, folders, setup_distributed(device=device))
    return {"phase": f"convergence-{name}", "samples_per_ray": config.field.samples_per_ray,
            "jitter": config.field.jitter, "opacity_weight": config.opacity_weight,
            "steps": config.training.steps, "points": points}


PAPER_LEVELS = 14
"""The paper's hash-grid levels L."""
PAPER_RAYS_PER_STEP = 65536
"""The paper's rays per coarse step (a 256 x 256 image's worth)."""


def run_train(torch, device: str, paper_scale: bool, iterations: int, stage: str = "coarse") -> dict:
    """Time training steps (forward + backward + Adam) of the current settings on the sample: nerf_coarse's rays,
    or nerf_fine's patches (LPIPS included when its weights are there)."""
    from damc_core.nerf import train as nerf_train

    params = _params()
    config = params.nerf_coarse
    if paper_scale:
        grid = replace(config.field.hash_grid, levels=PAPER_LEVELS)
        config = replace(config, field=replace(config.field, hash_grid=grid),
                         rays=replace(config.rays, rays_per_step=PAPER_RAYS_PER_STEP))
    fine = params.nerf_fine
    inputs = _inputs(device)
    torch.manual_seed(0)
    head = nerf_train.build_head(inputs, params.fusion, config.field)
    perceptual = nerf_train.load_perceptual_loss(fine, inputs.device)[0] if stage == "fine" else None
    optimizer = nerf_train._optimizer(head, config.encoding_learning_rate, config.training.learning_rate)
    per_frame = config.rays.rays_per_step // config.rays.frames_per_step
    frames = config.rays.frames_per_step if stage == "coarse" else fine.patches_per_step
    times = {"data": [], "forward": [], "backward_step": []}

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for step in range(2 + iterations):
        sync()
        begun = time.perf_counter()
        rng, generator = nerf_train._step_generators(0, step, inputs.device)
        positions = rng.choice(len(inputs.train), frames, replace=False)
        if stage == "coarse":
            pixels = [nerf_train.training_pixels(head, inputs, position, per_frame, config.rays, rng)
                      for position in positions]
        else:
            pixels = [nerf_train.patch_pixels(inputs, position, fine.patch_size, True, rng) for position in positions]
        batch = nerf_train.training_rays(head, inputs, positions, pixels)
        sync()
        drawn = time.perf_counter()
        rendered = head.render_rays(batch.rays, generator)
        loss = (nerf_train.colour_loss(rendered.rgb, batch.colour)
                + config.opacity_weight * nerf_train.opacity_loss(rendered.opacity, batch.head))
        if perceptual is not None:
            as_images = [tensor.reshape(frames, fine.patch_size, fine.patch_size, 3).permute(0, 3, 1, 2) * 2 - 1
                         for tensor in (rendered.rgb, batch.colour)]
            loss = loss + fine.lpips_weight * perceptual(*as_images).mean()
        sync()
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        if step >= 2:
            times["data"].append(drawn - begun)
            times["forward"].append(forward - drawn)
            times["backward_step"].append(time.perf_counter() - forward)
    step_s = float(np.mean(np.sum([times[name] for name in times], axis=0)))
    rays = len(batch.colour)
    phase = ("train" if stage == "coarse" else "fine") + ("-paper-scale" if paper_scale else "")
    return {"phase": phase, "levels": config.field.hash_grid.levels, "lpips": perceptual is not None,
            "rays_per_step": rays, "samples_per_ray": config.field.samples_per_ray,
            "step_s": round(step_s, 4), "steps_per_s": round(1 / step_s, 2), "rays_per_s": round(rays / step_s),
            "breakdown_s": {name: round(float(np.mean(values)), 4) for name, values in times.items()}}


def scaled(camera, conditions: list, scale: int):
    """The camera and frame conditions at `scale` times the resolution (the background repeated per pixel)."""
    from damc_core.nerf.data import Camera

    camera = Camera(camera.focal * scale, camera.cx * scale, camera.cy * scale, camera.width * scale,
                    camera.height * scale)
    conditions = [replace(condition, background=condition.background.repeat_interleave(scale, 0)
                          .repeat_interleave(scale, 1)) for condition in conditions]
    return camera, conditions


def run_render(torch, device: str, frames: int, scale: int = 1) -> dict:
    """Render the sample's validation frames with a head trained at the current settings (data/nerf_fine/sample),
    at the sample's 256x256 or `scale` times that."""
    from damc_core.nerf.bundle import load_head
    from damc_core.nerf.model import audio_occupancy, render_frame
    from damc_core.nerf.validation import split_conditions

    model = ROOT / "data/nerf_fine/sample"
    if not (model / "head.pt").exists():
        sys.exit(f"benchmarks/nerf.py: {model / 'head.pt'} is missing: run `dvc repro nerf_fine` first")
    head, _, _ = load_head(model, device)
    inputs = _inputs(device)
    params = _params()
    begun = time.perf_counter()
    occupancy = audio_occupancy(head, inputs.audio)
    occupancy_s = time.perf_counter() - begun
    conditions = split_conditions(head, inputs.val, inputs.audio, np.arange(min(frames, len(inputs.val))))
    camera, conditions = scaled(inputs.camera, conditions, scale)
    render_frame(head, camera, conditions[0], params.render.rays_per_chunk, occupancy)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    begun = time.perf_counter()
    for condition in conditions:
        render_frame(head, camera, condition, params.render.rays_per_chunk, occupancy)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - begun) / len(conditions)
    return {"phase": f"render-{camera.width}", "frames": len(conditions), "s_per_frame": round(seconds, 4),
            "fps": round(1 / seconds, 2), "occupancy_build_s": round(occupancy_s, 2),
            "occupied_fraction": round(occupancy.fraction, 3)}


def run_one(phase: str, args: argparse.Namespace) -> dict:
    torch = _torch(_phase_threads(phase, args.threads))
    if phase.startswith("convergence-"):
        result = run_convergence(torch, args.device, phase.removeprefix("convergence-"), args.eval_frames)
    elif phase.startswith(("train", "fine")):
        result = run_train(torch, args.device, phase.endswith("-paper-scale"), args.train_iters,
                           "fine" if phase.startswith("fine") else "coarse")
    else:
        result = run_render(torch, args.device, args.render_frames, 2 if phase == "render-512" else 1)
    peak_gpu = round(torch.cuda.max_memory_allocated() / 2**20) if args.device == "cuda" else None
    return result | {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                     "peak_gpu_mb": peak_gpu}


def print_convergence(results: dict[str, dict]) -> None:
    """The two runs' PSNR-against-time rows side by side."""
    names = [name for name in ("previous", "current") if name in results]
    print("\nvalidation PSNR (dB) against training wall time (s, evaluations excluded):")
    print("".join(f"{name + ' (' + str(results[name]['samples_per_ray']) + ' samples/ray)':<40}" for name in names))
    rows = max(len(results[name]["points"]) for name in names)
    for row in range(rows):
        cells = []
        for name in names:
            points = results[name]["points"]
            point = points[row] if row < len(points) else None
            cells.append(f"step {point['step']:>5}  {point['train_s']:>6.1f} s  {point['val_psnr']:>6.2f} dB"
                         if point else "")
        print("".join(f"{cell:<40}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int,
                        help="torch.set_num_threads of every phase (default: as the stages run, training on "
                             "params.yaml's nerf_*.cpu_threads and rendering on torch's default)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--phases", nargs="+", choices=("convergence", "train", "render"),
                        default=["convergence", "train", "render"])
    parser.add_argument("--paper-scale", action="store_true", help="also time a step at the paper's scale")
    parser.add_argument("--eval-frames", type=int, default=8, help="validation frames per PSNR measurement")
    parser.add_argument("--train-iters", type=int, default=30, help="timed training steps (after 2 warm-up)")
    parser.add_argument("--render-frames", type=int, default=24, help="timed validation frames")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return
    import torch

    threads = "the stages' threads" if args.threads is None else f"{args.threads} threads"
    print(f"torch {torch.__version__}, {threads} (torch's default here: {torch.get_num_threads()}), device {args.device}")
    phases = [*(["convergence-previous", "convergence-current"] if "convergence" in args.phases else []),
              *(["train"] if "train" in args.phases else []),
              *(["train-paper-scale", "fine-paper-scale"] if args.paper_scale else []),
              *(["render"] if "render" in args.phases else []), *(["render-512"] if args.paper_scale else [])]
    forwarded = [*(["--threads", str(args.threads)] if args.threads is not None else []), "--device", args.device,
                 "--eval-frames", str(args.eval_frames), "--train-iters", str(args.train_iters),
                 "--render-frames", str(args.render_frames)]
    convergence = {}
    for phase in phases:
        begun = time.perf_counter()
        result = subprocess.run([sys.executable, __file__, "--one", phase, *forwarded], capture_output=True,
                                text=True)
        if result.returncode != 0:
            print(f"{phase}: FAILED (exit {result.returncode})\n{result.stderr.strip()[-3000:]}")
            continue
        report = json.loads(result.stdout.strip().splitlines()[-1])
        print(json.dumps(report))
        print(f"  ({phase}: {time.perf_counter() - begun:.1f} s wall, subprocess included)")
        if phase.startswith("convergence-"):
            convergence[phase.removeprefix("convergence-")] = report
    if convergence:
        print_convergence(convergence)


if __name__ == "__main__":
    main()
