"""Stage `nerf_coarse`: train a subject's talking head (CSFM + tri-plane hash NeRF) with MSE on rays."""

from __future__ import annotations

import argparse
from pathlib import Path

from damc_core.cli import run_command
from damc_core.config import load_params
from damc_core.nerf.train import load_inputs, train_coarse
from damc_core.training import RunFolders, distributed, metrics_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--subject", type=Path, required=True, help="input: the subject's face_prep folder")
    parser.add_argument("--features", type=Path, required=True, help="input: the subject's audio_features folder")
    parser.add_argument("--encoder", type=Path, required=True, help="input: sync_encoder's output folder (E_d)")
    parser.add_argument("--out-dir", type=Path, required=True, help="output: head.pt and head.json")
    parser.add_argument("--checkpoint-dir", type=Path, required=True, help="checkpoints for resuming (kept)")
    parser.add_argument("--log-dir", type=Path, required=True, help="output: dvclive metrics and plots")
    args = parser.parse_args()

    params = load_params(args.params)
    with distributed(device=params.device) as context:
        inputs = load_inputs(args.subject, args.features, args.encoder, context.device)
        folders = RunFolders(args.out_dir, args.checkpoint_dir, args.log_dir)
        metrics = train_coarse(params.nerf_coarse, params.fusion, inputs, folders, context)
    if context.is_main:
        print(metrics_line("nerf_coarse", metrics))


if __name__ == "__main__":
    run_command(main)
