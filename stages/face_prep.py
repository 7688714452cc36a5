"""Stage `face_prep`: one subject's speaking video -> an ER-NeRF-compatible training set (damc_core/face/prep.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from damc_core.cli import run_command
from damc_core.config import load_params
from damc_core.face.prep import prepare_subject
from damc_core.face.preview import save_preview


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--video", type=Path, required=True, help="input: the subject's speaking video")
    parser.add_argument("--out-dir", type=Path, required=True, help="output: the dataset folder")
    parser.add_argument("--report", type=Path, required=True, help="output: JSON summary")
    parser.add_argument("--preview", type=Path, required=True, help="output: PNG preview")
    args = parser.parse_args()

    config = load_params(args.params).face_prep
    subject = prepare_subject(args.video, args.out_dir, config)
    save_preview(subject, args.out_dir, args.preview)
    meta = json.loads((args.out_dir / "meta.json").read_text(encoding="utf-8"))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for warning in meta["warnings"]:
        print(f"warning: {warning}")
    print(f"face_prep: {meta['frames']} frames, focal {meta['focal_px']:.0f} px, reprojection "
          f"{meta['reprojection_error_px']['mean']:.2f} px -> {args.out_dir}")


if __name__ == "__main__":
    run_command(main)
