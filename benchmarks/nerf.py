"""Benchmark of the talking-head NeRF: training steps/s and rays/s, frame render rate, occupancy grid build time and
peak memory (prints figures; not a test).

Usage: python benchmarks/nerf.py [--threads 2] [--device cpu|cuda] [--model data/nerf_fine/sample] [--paper-scale]

Each measurement runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own.

- train: one nerf_coarse step, forward + backward + Adam, exactly as damc_core.nerf.train.train_coarse draws it
  (training_pixels, _training_rays, TalkingHead.render_rays, MSE), with params.yaml's nerf_coarse settings, on
  synthetic frames (random images, a camera like the sample's). Cost depends on rays x samples, not on the pixels.
  --paper-scale adds the paper's scale: hash_grid.levels 14 and 65536 rays per step.
- render: render_frame of whole frames at the sample's 256x256 and at 512x512 (the same view, focal scaled), with
  the occupancy grid of the head (audio_occupancy). With --model the trained head, its subject's first training
  pose, torso and audio are used; without it a random-init head and a synthetic camera and condition. How much of
  a random-init head's occupancy grid is occupied depends only on its initial density (field.INITIAL_LOG_DENSITY)
  against the grid's threshold (occupancy.py), not on any head: the measured fraction is printed, and for that case
  the rate with every cell occupied (the upper bound of work) is also measured on --upper-bound-rays rays through
  the middle of the head and extrapolated to a whole frame.
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

SIZES = (256, 512)
SAMPLE_FOCAL_PER_PIXEL = 1536.0 / 256
"""The sample subject's focal length (face_prep's fit) per pixel of image width."""
SAMPLE_POSE = ((1.0, 0.0, 0.0, 0.25), (0.0, 1.0, 0.0, 1.2), (0.0, 0.0, 1.0, 18.6), (0.0, 0.0, 0.0, 1.0))
"""About the sample subject's mean camera-to-world pose (decimetres, head template frame)."""
SYNTHETIC_FRAMES = 16
SYNTHETIC_AUDIO_FRAMES = 64


def _torch(threads: int, device: str):
    import torch

    torch.set_num_threads(threads)
    if device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("benchmarks/nerf.py: --device cuda but torch.cuda.is_available() is False")
        # The NeRF code creates some tensors without a device (e.g. torch.zeros in TalkingHead.render_rays and
        # occupancy_grid), so they follow the default device.
        torch.set_default_device("cuda")
    return torch


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _memory(torch, device: str) -> dict:
    memory = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if device == "cuda":
        memory["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return memory


def _params():
    from damc_core.config import load_params

    return load_params(Path(__file__).resolve().parent.parent / "params.yaml")


def _camera(size: int):
    from damc_core.nerf.data import Camera

    return Camera(SAMPLE_FOCAL_PER_PIXEL * size, size / 2, size / 2, size, size)


def synthetic_inputs(torch, size: int, content_dim: int, dynamic_dim: int):
    """A NerfInputs with random frames seen from around the sample's pose, and random audio features."""
    from damc_core.nerf.data import FrameAudio, SubjectSplit
    from damc_core.nerf.rays import box_pixel_rect
    from damc_core.nerf.train import NerfInputs

    params = _params().nerf_coarse.field
    camera = _camera(size)
    generator = torch.Generator().manual_seed(0)
    poses = torch.tensor(SAMPLE_POSE, dtype=torch.float32).repeat(SYNTHETIC_FRAMES, 1, 1)
    poses[:, :3, 3] += 0.1 * torch.randn(SYNTHETIC_FRAMES, 3, generator=generator)
    rects = [box_pixel_rect(pose, camera.focal, camera.cx, camera.cy, params.box_min, params.box_max, size, size)
             for pose in poses]
    face_rects, lips_rects = [], []
    for col0, row0, col1, row1 in rects:
        width, height = col1 - col0, row1 - row0
        face_rects.append([col0 + width // 5, row0 + height // 5, col1 - width // 5, row1 - height // 5])
        lips_rects.append([col0 + 2 * width // 5, row0 + 3 * height // 5, col1 - 2 * width // 5,
                           row0 + 4 * height // 5])

    def images():
        return torch.randint(0, 256, (SYNTHETIC_FRAMES, size, size, 3), dtype=torch.uint8, generator=generator)

    train = SubjectSplit(
        frame_ids=np.arange(SYNTHETIC_FRAMES), images=images(), backgrounds=images(), camera_to_world=poses,
        blink=torch.zeros(SYNTHETIC_FRAMES), face_rects=np.array(face_rects),
        lips_rects=np.array(lips_rects),
    )
    audio = FrameAudio(torch.randn(SYNTHETIC_AUDIO_FRAMES, content_dim, generator=generator),
                       torch.randn(SYNTHETIC_AUDIO_FRAMES, dynamic_dim, generator=generator))
    return NerfInputs(Path("<synthetic>"), camera, train, train, audio, {}, None, {})


def _to_device(inputs, device: str):
    """The inputs' tensors on `device` (the NerfInputs dataclasses are frozen: rebuilt)."""
    if device == "cpu":
        return inputs
    train = replace(inputs.train, **{name: value.to(device) for name, value in vars(inputs.train).items()
                                     if hasattr(value, "to")})
    audio = replace(inputs.audio, content=inputs.audio.content.to(device), dynamic=inputs.audio.dynamic.to(device))
    return replace(inputs, train=train, val=train, audio=audio)


def coarse_config(paper_scale: bool):
    """params.yaml's nerf_coarse, or with the paper's levels (14) and rays per step (65536)."""
    config = _params().nerf_coarse
    if not paper_scale:
        return config
    field = replace(config.field, hash_grid=replace(config.field.hash_grid, levels=14))
    return replace(config, field=field, rays=replace(config.rays, rays_per_step=65536))


def run_train(torch, device: str, paper_scale: bool, iterations: int, warmup: int) -> dict:
    """Time nerf_coarse steps (forward + backward + Adam) on synthetic frames."""
    from damc_core.nerf.train import _optimizer, _step_generators, _training_rays, build_head, training_pixels

    params = _params()
    config = coarse_config(paper_scale)
    torch.manual_seed(0)
    with torch.device("cpu"):  # built on the CPU (as the stages do), then moved
        # content: 2 steps x 32 stand-in logits per frame (the sample's features); dynamic: E_d's 64.
        inputs = synthetic_inputs(torch, 256, 64, params.sync_encoder.dim)
        head = build_head(inputs, params.fusion, config.field)
    head = head.to(device).train()
    inputs = _to_device(inputs, device)
    optimizer = _optimizer(head, config.encoding_learning_rate, config.training.learning_rate)
    per_frame = max(config.rays.rays_per_step // config.rays.frames_per_step, 1)
    frames_per_step = min(config.rays.frames_per_step, len(inputs.train))
    times = {"data": [], "forward": [], "backward_step": []}
    losses = []
    for step in range(warmup + iterations):
        _sync(torch, device)
        started = time.perf_counter()
        rng, generator = _step_generators(0, step)
        if device != "cpu":  # stratified_depths draws on the rays' device
            generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
        positions = rng.choice(len(inputs.train), frames_per_step, replace=False)
        pixels = [training_pixels(head, inputs, position, per_frame, config, rng) for position in positions]
        rays, target = _training_rays(head, inputs, positions, pixels)
        _sync(torch, device)
        drawn = time.perf_counter()
        loss = torch.mean((head.render_rays(rays, generator).rgb - target) ** 2)
        _sync(torch, device)
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(torch, device)
        done = time.perf_counter()
        losses.append(float(loss))
        if step >= warmup:
            times["data"].append(drawn - started)
            times["forward"].append(forward - drawn)
            times["backward_step"].append(done - forward)
    step_s = float(np.mean(np.sum([times[name] for name in times], axis=0)))
    grid = config.field.hash_grid
    return {
        "phase": "train-paper-scale" if paper_scale else "train",
        "levels": grid.levels, "finest_resolution": grid.finest_resolution,
        "rays_per_step": per_frame * frames_per_step, "samples_per_ray": config.field.samples_per_ray,
        "iterations_timed": iterations,
        "step_s": round(step_s, 4),
        "iterations_per_s": round(1.0 / step_s, 3),
        "rays_per_s": round(per_frame * frames_per_step / step_s),
        "breakdown_s": {name: round(float(np.mean(values)), 4) for name, values in times.items()},
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
        "parameters": sum(parameter.numel() for parameter in head.parameters()),
    } | _memory(torch, device)


def _trained_setup(torch, model: Path):
    """The trained head, its subject's first training frame as a condition, and its audio features."""
    from damc_core.nerf.data import FrameAudio, load_subject_audio
    from damc_core.nerf.model import FrameCondition
    from damc_core.render import load_trained_head

    trained = load_trained_head(model)
    head = trained.head
    features = Path(__file__).resolve().parent.parent / "data" / "features" / model.name
    try:  # the features cover the whole video: face_prep's frame count
        n_frames = json.loads((Path(trained.meta["subject_dir"]) / "meta.json").read_text(encoding="utf-8"))["frames"]
    except (FileNotFoundError, KeyError):
        n_frames = int(trained.train.frame_ids.max()) + 1
    try:
        audio, _ = load_subject_audio(features, n_frames, trained.encoder)
        audio_source = f"{features} (the subject's own features)"
    except (FileNotFoundError, ValueError):
        generator = torch.Generator().manual_seed(0)
        audio = FrameAudio(torch.randn(n_frames, trained.meta["content_dim"], generator=generator),
                           torch.randn(n_frames, trained.meta["dynamic_dim"], generator=generator))
        audio_source = "random features (the subject's audio_features folder is missing)"
    with torch.no_grad():
        condition = head.audio_condition(audio, torch.as_tensor(trained.train.frame_ids[:1]))[0]
    frame = FrameCondition(trained.train.camera_to_world[0], condition, float(trained.train.blink[0]),
                           head.field.latents[0].detach(), trained.train.backgrounds[0])
    return head, trained.camera, frame, audio, {"model": str(model), "audio": audio_source}


def _random_setup(torch):
    from damc_core.nerf.model import FrameCondition, TalkingHead

    params = _params()
    torch.manual_seed(0)
    head = TalkingHead(64, params.sync_encoder.dim, params.fusion, params.nerf_coarse.field, SYNTHETIC_FRAMES)
    head.eval().requires_grad_(False)
    inputs = synthetic_inputs(torch, 256, 64, params.sync_encoder.dim)
    with torch.no_grad():
        condition = head.audio_condition(inputs.audio, torch.tensor([0]))[0]
    frame = FrameCondition(inputs.train.camera_to_world[0], condition, 0.0, head.field.mean_latent(),
                           inputs.train.backgrounds[0])
    return head, inputs.camera, frame, inputs.audio, {"model": "random init (no --model)", "audio": "random features"}


def _scaled(torch, camera, frame, size: int):
    """The same view at size x size: focal and principal point scaled, background resized (nearest)."""
    from damc_core.nerf.data import Camera

    scale = size / camera.width
    scaled = Camera(camera.focal * scale, camera.cx * scale, camera.cy * scale, size, round(camera.height * scale))
    background = torch.nn.functional.interpolate(frame.background.permute(2, 0, 1)[None].float(),
                                                 size=(scaled.height, scaled.width), mode="nearest")
    return scaled, replace(frame, background=background[0].permute(1, 2, 0).round().to(torch.uint8))


def _all_occupied(torch, device: str, head, camera, frame, occupancy, rays_per_chunk: int, count: int) -> dict:
    """Rendering rate with every cell occupied (the work of a head whose box is all density), on the `count` rays
    through the middle rows of the head's rectangle, extrapolated to the whole frame."""
    from damc_core.nerf.model import frame_rays, head_rect
    from damc_core.nerf.occupancy import OccupancyGrid
    from damc_core.nerf.rays import pixel_grid

    full = OccupancyGrid(torch.ones_like(occupancy.occupied), occupancy.box_min, occupancy.box_max)
    pixels = pixel_grid(head_rect(head, camera, frame.camera_to_world))
    start = max((len(pixels) - count) // 2, 0)
    pixels = pixels[start:start + count]
    rays = frame_rays(camera, frame, pixels, frame.background[pixels[:, 1], pixels[:, 0]].float() / 255.0)
    _sync(torch, device)
    started = time.perf_counter()
    for first in range(0, len(rays), rays_per_chunk):
        head.render_rays_fast(rays.chunk(first, first + rays_per_chunk), full)
    _sync(torch, device)
    rays_per_s = len(rays) / (time.perf_counter() - started)
    col0, row0, col1, row1 = head_rect(head, camera, frame.camera_to_world)
    return {"all_occupied_rays_timed": len(rays), "all_occupied_rays_per_s": round(rays_per_s),
            "all_occupied_s_per_frame_extrapolated": round((col1 - col0) * (row1 - row0) / rays_per_s, 3)}


def run_render(
    torch, device: str, size: int, model: Path | None, frames: int, rays_per_chunk: int, upper_bound_rays: int
) -> dict:
    """Time the occupancy grid and render_frame at size x size."""
    from damc_core.nerf.model import audio_occupancy, head_rect, render_frame

    with torch.device("cpu"):  # built on the CPU (as the render command does), then moved
        head, camera, frame, audio, source = _trained_setup(torch, model) if model else _random_setup(torch)
        camera, frame = _scaled(torch, camera, frame, size)
    head = head.to(device)
    frame = replace(frame, **{name: value.to(device) for name, value in vars(frame).items() if hasattr(value, "to")})
    audio = replace(audio, content=audio.content.to(device), dynamic=audio.dynamic.to(device))
    _sync(torch, device)
    started = time.perf_counter()
    occupancy = audio_occupancy(head, audio)
    _sync(torch, device)
    occupancy_s = time.perf_counter() - started
    col0, row0, col1, row1 = head_rect(head, camera, frame.camera_to_world)
    result = {
        "phase": f"render-{size}", "size": f"{camera.width}x{camera.height}", **source,
        "occupancy_build_s": round(occupancy_s, 3), "occupied_fraction": round(occupancy.fraction, 4),
        "rays_per_frame": (col1 - col0) * (row1 - row0), "rays_per_chunk": rays_per_chunk,
    }
    started = time.perf_counter()
    for _ in range(frames):  # no warm-up frame: building the grid already ran the field
        image = render_frame(head, camera, frame, rays_per_chunk, occupancy)
    _sync(torch, device)
    seconds = (time.perf_counter() - started) / frames
    result |= {"s_per_frame": round(seconds, 4), "fps": round(1.0 / seconds, 3),
               "image_mean": round(float(image.float().mean()), 2)}
    if model is None:
        result |= _all_occupied(torch, device, head, camera, frame, occupancy, rays_per_chunk, upper_bound_rays)
    return result | _memory(torch, device)


def run_one(phase: str, args: argparse.Namespace) -> dict:
    torch = _torch(args.threads, args.device)
    if phase in ("train", "train-paper-scale"):
        paper = phase == "train-paper-scale"
        return run_train(torch, args.device, paper, args.paper_iters if paper else args.train_iters,
                         1 if paper else 2)
    size = int(phase.removeprefix("render-"))
    return run_render(torch, args.device, size, args.model, args.render_frames, args.rays_per_chunk,
                      args.upper_bound_rays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", type=Path, help="a trained head (e.g. data/nerf_fine/sample); default: random init")
    parser.add_argument("--paper-scale", action="store_true",
                        help="also time training at levels 14 and 65536 rays per step")
    parser.add_argument("--train-iters", type=int, default=10, help="timed training steps (after 2 warm-up)")
    parser.add_argument("--paper-iters", type=int, default=2, help="timed paper-scale steps (after 1 warm-up)")
    parser.add_argument("--render-frames", type=int, default=2, help="timed frames per size")
    parser.add_argument("--upper-bound-rays", type=int, default=16384,
                        help="rays timed with every cell occupied (random-init head only)")
    parser.add_argument("--rays-per-chunk", type=int, help="default: params.yaml render.rays_per_chunk")
    parser.add_argument("--phases", nargs="+", help="subset of: train train-paper-scale render-256 render-512")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rays_per_chunk is None:
        args.rays_per_chunk = _params().render.rays_per_chunk
    if args.model is not None and not (args.model / "head.pt").exists():
        sys.exit(f"benchmarks/nerf.py: {args.model / 'head.pt'} is missing; omit --model for a random-init head")
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return
    phases = args.phases or ["train", *(["train-paper-scale"] if args.paper_scale else []),
                             *(f"render-{size}" for size in SIZES)]
    import torch

    print(f"torch {torch.__version__}, threads {args.threads} (of {torch.get_num_threads()} default), "
          f"device {args.device}, head for rendering: {args.model or 'random init'}")
    forwarded = ["--threads", str(args.threads), "--device", args.device, "--train-iters", str(args.train_iters),
                 "--paper-iters", str(args.paper_iters), "--render-frames", str(args.render_frames),
                 "--rays-per-chunk", str(args.rays_per_chunk), "--upper-bound-rays", str(args.upper_bound_rays),
                 *(["--model", str(args.model)] if args.model else [])]
    for phase in phases:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, __file__, "--one", phase, *forwarded], capture_output=True,
                                text=True)
        if result.returncode != 0:
            print(f"{phase}: FAILED (exit {result.returncode})\n{result.stderr.strip()[-3000:]}")
            continue
        print(result.stdout.strip().splitlines()[-1])
        print(f"  ({phase}: {time.perf_counter() - started:.1f} s wall, subprocess included)")


if __name__ == "__main__":
    main()
