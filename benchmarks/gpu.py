"""Paper-scale speed of the talking-head NeRF on a GPU (prints figures; not a test): nerf_coarse and nerf_fine steps
per second at the paper's scale (hash_grid.levels 14, 65,536 rays per coarse step), the projected time of the
paper's 120k + 30k steps, render frames per second at 512x512, and peak GPU memory, per hash-grid backend.

Usage: python benchmarks/gpu.py [--device cuda] [--train-iters 20] [--render-frames 20]

Needs the sample prepared by the pipeline (`dvc repro nerf_fine`). Each figure comes from one of benchmarks/nerf.py's
phases (train-paper-scale, fine-paper-scale, render-512), each in a fresh process, one after the other. Backends: the
pure-PyTorch hash grid is the only one in this version (a fused Triton kernel ships only once it has been run and
checked against it on a GPU), so the table has one column. `--device cpu --train-iters 2 --render-frames 2` checks
the script itself on a machine without a GPU (a paper-scale step takes ~10 s there).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

NERF_BENCHMARK = Path(__file__).with_name("nerf.py")
PAPER_STEPS = {"train-paper-scale": 120_000, "fine-paper-scale": 30_000}
"""The paper's nerf_coarse and nerf_fine iterations."""
BACKENDS = ("torch",)
"""Hash-grid backends of this version."""


def phase_report(phase: str, args: argparse.Namespace) -> dict:
    """One benchmarks/nerf.py phase in a fresh process; its JSON line."""
    command = [sys.executable, str(NERF_BENCHMARK), "--one", phase, "--device", args.device, "--threads",
               str(args.threads), "--train-iters", str(args.train_iters), "--render-frames", str(args.render_frames)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"benchmarks/gpu.py: {phase} failed (exit {result.returncode}):\n{result.stderr.strip()[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--train-iters", type=int, default=20, help="timed steps per stage (after 2 warm-up)")
    parser.add_argument("--render-frames", type=int, default=20, help="timed 512x512 frames")
    args = parser.parse_args()

    reports = {backend: {phase: phase_report(phase, args) for phase in (*PAPER_STEPS, "render-512")}
               for backend in BACKENDS}
    rows = {
        "coarse steps/s (65,536 rays, L = 14)": lambda r: f"{r['train-paper-scale']['steps_per_s']:.2f}",
        "fine steps/s (patches, L = 14)": lambda r: f"{r['fine-paper-scale']['steps_per_s']:.2f}",
        "fine step has LPIPS": lambda r: str(r["fine-paper-scale"]["lpips"]),
        "120k + 30k steps, projected (min)": lambda r: (
            f"{sum(steps * r[phase]['step_s'] for phase, steps in PAPER_STEPS.items()) / 60:.1f}"),
        "render fps at 512x512": lambda r: f"{r['render-512']['fps']:.1f}",
        "peak GPU memory (MB, max of phases)": lambda r: str(max((report["peak_gpu_mb"] or 0) for report in r.values())
                                                            if args.device == "cuda" else "n/a (cpu)"),
    }
    print(f"device {args.device}; {args.train_iters} timed steps per stage, {args.render_frames} frames")
    print(f"{'':<40}" + "".join(f"{backend:>12}" for backend in BACKENDS))
    for label, cell in rows.items():
        print(f"{label:<40}" + "".join(f"{cell(reports[backend]):>12}" for backend in BACKENDS))
    for backend, phases in reports.items():
        for phase, report in phases.items():
            print(f"{backend} {phase}: {json.dumps(report)}")


if __name__ == "__main__":
    main()
