"""Stage `sample`: generate the embedded sample subject and clip set (see damc_core/sample)."""

from __future__ import annotations

import argparse
from pathlib import Path

from damc_core.cli import run_command
from damc_core.config import load_params
from damc_core.media import VIDEO_FPS
from damc_core.sample.generate import generate_clips, generate_subject
from damc_core.sample.preview import save_preview


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--subject-dir", type=Path, required=True, help="output: the speaking subject")
    parser.add_argument("--clips-dir", type=Path, required=True, help="output: the clip set")
    parser.add_argument("--preview", type=Path, required=True, help="output: PNG of a few annotated frames")
    args = parser.parse_args()

    config = load_params(args.params).sample
    subject = generate_subject(config, args.subject_dir)
    save_preview(subject, args.preview)
    manifest = generate_clips(config, args.clips_dir)
    seconds = len(subject.frames) / VIDEO_FPS
    print(f"sample: subject of {len(subject.frames)} frames ({seconds:.1f} s) -> {args.subject_dir}")
    print(f"sample: {len(manifest)} clips ({manifest['duration_s'].sum():.1f} s) -> {args.clips_dir}")


if __name__ == "__main__":
    run_command(main)
