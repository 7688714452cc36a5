"""Print the experiments table (fusion mode and dimension, PSNR, LMD, Sync, our expert's confidence on validation and
TTS: the paper's Table 3 on this project's runs) as markdown, and write it as reports/experiments.html.

Runs `dvc exp show --json` (read-only) in the current repository; arguments after `--` go to it, e.g.
`python scripts/experiments_table.py -- -A` for the experiments of every commit. Not a DVC stage: a stage cannot
depend on the list of experiments. The gallery (reports/gallery.html) links to the page once it exists.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from damc_core.experiments import METRICS_FILE, PARAMS_FILE, experiment_rows, markdown_table, write_experiments_page


def dvc_exp_show(extra: list[str]) -> list:
    """The parsed output of `dvc exp show --json` (plus `extra` arguments); SystemExit with dvc's message on error."""
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json", *extra]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(command[2:])}` failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise SystemExit(f"`{' '.join(command[2:])}` printed no JSON ({error}): {done.stdout[:500]!r}") from error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("reports/experiments.html"), help="the HTML page")
    parser.add_argument("--gallery", type=Path, default=Path("reports/gallery.html"),
                        help="the results gallery, linked from the page when it exists")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="read saved `dvc exp show --json` output from this file instead of running dvc")
    parser.add_argument("--metrics-file", default=METRICS_FILE, help="the evaluate stage's metrics file")
    parser.add_argument("--params-file", default=PARAMS_FILE, help="the params file holding fusion.*")
    parser.add_argument("dvc_args", nargs="*", help="after `--`: more arguments for `dvc exp show`")
    args = parser.parse_args()

    if args.from_json is not None:
        shown = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        shown = dvc_exp_show(args.dvc_args)
    rows = experiment_rows(shown, args.metrics_file, args.params_file)
    print(markdown_table(rows), end="")
    write_experiments_page(args.output, rows, args.gallery if args.gallery.is_file() else None)
    print(f"\nwrote {args.output} ({len(rows)} rows)", file=sys.stderr)


if __name__ == "__main__":
    main()
