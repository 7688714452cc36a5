"""Stage `hdtf_filter`: HDTF metadata + raw videos, and/or already-cut clips -> a filtered 25 fps clip set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from damc_core.cli import run_command
from damc_core.config import load_params
from damc_core.face.landmarks import make_detector
from damc_core.hdtf.filtering import filter_clips, filter_report, sources_from_clips, sources_from_metadata
from damc_core.hdtf.metadata import read_metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--clips", type=Path, action="append", default=[], help="input: folder of cut clips")
    parser.add_argument("--metadata", type=Path, help="input: folder of the official HDTF metadata files")
    parser.add_argument("--raw-videos", type=Path, help="input: folder of the downloaded raw videos")
    parser.add_argument("--out-dir", type=Path, required=True, help="output: the clip set")
    parser.add_argument("--report", type=Path, required=True, help="output: JSON filter report")
    args = parser.parse_args()
    if (args.metadata is None) != (args.raw_videos is None):
        parser.error("--metadata and --raw-videos go together")
    if not args.clips and args.metadata is None:
        parser.error("give --clips and/or --metadata with --raw-videos")

    config = load_params(args.params).hdtf_filter
    sources = [source for folder in args.clips for source in sources_from_clips(folder)]
    problems, missing = [], []
    if args.metadata is not None:
        specs, problems = read_metadata(args.metadata)
        from_metadata, missing = sources_from_metadata(specs, args.raw_videos)
        sources += from_metadata
    with make_detector(config.landmarks, max_faces=2, video=False) as detector:
        manifest = filter_clips(sources, args.out_dir, detector.detect, config.thresholds, size=config.size)

    report = {
        **filter_report(manifest),
        "raw_videos_missing": sorted({spec.video for spec in missing}),
        "metadata_problems": problems,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"hdtf_filter: kept {report['kept']} of {report['clips']} clips ({report['hours_kept'] * 60:.1f} min); "
          f"rejected: {report['rejected'] or 'none'}; raw videos missing: {len(report['raw_videos_missing'])} "
          f"({len(missing)} clips)")


if __name__ == "__main__":
    run_command(main)
