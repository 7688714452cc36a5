"""Stage `sync_encoder`: train the Dynamic-Sync Encoder E_d against the frozen expert; export E_d alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from damc_core.cli import run_command
from damc_core.config import load_params
from damc_core.sync.data import fingerprint, read_clip_arrays
from damc_core.sync.train import train_encoder
from damc_core.training import RunFolders, distributed, metrics_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="input: sync_data's arrays")
    parser.add_argument("--expert", type=Path, required=True, help="input: sync_expert's output folder")
    parser.add_argument("--out-dir", type=Path, required=True, help="output: encoder.pt and encoder.json")
    parser.add_argument("--checkpoint-dir", type=Path, required=True, help="checkpoints for resuming (kept)")
    parser.add_argument("--log-dir", type=Path, required=True, help="output: dvclive metrics and plots")
    args = parser.parse_args()

    params = load_params(args.params)
    config = params.sync_encoder
    with distributed(device=params.device) as context:
        clips = read_clip_arrays(args.data)
        folders = RunFolders(args.out_dir, args.checkpoint_dir, args.log_dir)
        metrics = train_encoder(config, args.expert, clips, fingerprint(clips), folders, context)
    if context.is_main:
        print(metrics_line("sync_encoder", metrics))


if __name__ == "__main__":
    run_command(main)
