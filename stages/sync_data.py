"""Stage `sync_data`: a clip set -> per-frame lower-face crops and mel windows, the input of both lip-sync stages."""

from __future__ import annotations

import argparse
from pathlib import Path

from damc_core.cli import run_command
from damc_core.config import load_params
from damc_core.face.landmarks import make_detector
from damc_core.sync.data import load_clip_set, save_clip_arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--clips", type=Path, required=True, help="input: a clip set (hdtf_filter's output)")
    parser.add_argument("--out-dir", type=Path, required=True, help="output: the arrays, one pair of files per clip")
    args = parser.parse_args()

    config = load_params(args.params).sync_expert
    with make_detector("mediapipe", max_faces=1, video=False) as detector:
        clips = load_clip_set(args.clips, detector, config.face_size, config.crop_margin)
    fingerprint = save_clip_arrays(args.out_dir, clips)
    frames = sum(len(clip.mel) for clip in clips)
    print(f"sync_data: {len(clips)} clips, {frames} frames, sha256 {fingerprint[:12]} -> {args.out_dir}")


if __name__ == "__main__":
    run_command(main)
