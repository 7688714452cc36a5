"""Training the lip-sync expert and the Dynamic-Sync Encoder: resume after a kill, learning on real clips, export."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from damc_core.clipset import write_manifest
from damc_core.config import load_params
from damc_core.face.landmarks import make_detector
from damc_core.sync import train as sync_train
from damc_core.sync.data import ClipArrays, load_clip_set, save_clip_arrays
from damc_core.sync.train import load_expert, train_encoder, train_expert
from damc_core.training import RunFolders, setup_distributed


def synthetic_clips(count: int = 3, frames: int = 40, face_size: int = 48) -> list[ClipArrays]:
    """Clips whose mouth brightness follows the loudness of their mel windows (learnable sync)."""
    rng = np.random.default_rng(0)
    clips = []
    for index in range(count):
        loudness = rng.random(frames)
        faces = np.repeat((loudness * 255).astype(np.uint8)[:, None, None, None], 3, axis=3)
        faces = np.broadcast_to(faces, (frames, face_size // 2, face_size, 3)).copy()
        mel = (np.broadcast_to(loudness[:, None, None], (frames, 80, 16)) * 8 - 4).astype(np.float32)
        clips.append(ClipArrays(f"clip{index}", faces, mel))
    return clips


@pytest.fixture(scope="module")
def expert_config(repo_root):
    config = load_params(repo_root / "params.yaml").sync_expert
    training = dataclasses.replace(config.training, steps=30, batch_size=8, warmup_steps=5, log_every=5,
                                   eval_every=10, checkpoint_every=10)
    return dataclasses.replace(config, face_size=48, embed_dim=32, eval_batches=2, training=training)


def folders(root, name) -> RunFolders:
    return RunFolders(root / name / "out", root / name / "checkpoints", root / name / "log")


def test_a_killed_run_resumes_and_ends_where_an_uninterrupted_run_would(tmp_path, expert_config, monkeypatch):
    clips, context = synthetic_clips(), setup_distributed()
    train_expert(expert_config, clips, "data", folders(tmp_path, "whole"), context)

    calls = {"count": 0}
    real_sample = sync_train.sample_batch

    def dies_after_step_15(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] > 15:
            raise KeyboardInterrupt("killed")
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(sync_train, "sample_batch", dies_after_step_15)
    with pytest.raises(KeyboardInterrupt):
        train_expert(expert_config, clips, "data", folders(tmp_path, "killed"), context)
    monkeypatch.setattr(sync_train, "sample_batch", real_sample)
    assert len(list((tmp_path / "killed" / "checkpoints").glob("checkpoint-*.pt"))) == 1
    train_expert(expert_config, clips, "data", folders(tmp_path, "killed"), context)

    whole, _ = load_expert(tmp_path / "whole" / "out", torch.device("cpu"))
    resumed, _ = load_expert(tmp_path / "killed" / "out", torch.device("cpu"))
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    losses = pd.read_csv(tmp_path / "killed" / "log" / "plots" / "metrics" / "train_loss.tsv", sep="\t")
    assert losses["step"].tolist() == [5, 10, 15, 20, 25, 30], "one log row per step, none repeated by the resume"


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path, expert_config):
    clips, context = synthetic_clips(), setup_distributed()
    run = folders(tmp_path, "run")
    train_expert(expert_config, clips, "data", run, context)
    changed = dataclasses.replace(expert_config, embed_dim=16)
    train_expert(changed, clips, "data", run, context)
    _, meta = load_expert(run.out_dir, torch.device("cpu"))
    assert meta["embed_dim"] == 16
    assert len(list(run.checkpoint_dir.glob("checkpoint-*.pt"))) == 0, "a finished run leaves no checkpoint behind"


def test_the_encoder_is_exported_alone_with_its_input_convention(tmp_path, expert_config, repo_root):
    clips, context = synthetic_clips(), setup_distributed()
    expert_run = folders(tmp_path, "expert")
    train_expert(expert_config, clips, "data-sha", expert_run, context)
    config = load_params(repo_root / "params.yaml").sync_encoder
    training = dataclasses.replace(config.training, steps=10, batch_size=4, warmup_steps=2, log_every=5,
                                   eval_every=5, checkpoint_every=5)
    encoder_config = dataclasses.replace(config, dim=24, decoder_width=8, training=training)
    metrics = train_encoder(encoder_config, expert_run.out_dir, clips, "data-sha", folders(tmp_path, "enc"), context)
    meta = json.loads((tmp_path / "enc" / "out" / "encoder.json").read_text())
    assert meta["output_dim"] == 24 and meta["training_data_sha256"] == "data-sha"
    assert "log-mel window (1, 80, 16)" in meta["mel"]["input"]
    state = torch.load(tmp_path / "enc" / "out" / "encoder.pt", weights_only=True)
    assert not any(key.startswith("decoder") for key in state), "the decoder is a training aid, not exported"
    assert set(metrics) == {"held_out_reconstruction_l1", "held_out_sync_loss", "train_loss"}


def test_the_expert_learns_on_real_hdtf_clips(tmp_path, shared_dir, expert_config):
    clip_root = tmp_path / "clips"
    (clip_root / "clips").mkdir(parents=True)
    rows = []
    for path in sorted((shared_dir / "data" / "hdtf_clips").glob("*_000.mp4")):
        (clip_root / "clips" / path.name).symlink_to(path)
        rows.append({"clip_id": path.stem, "source": path.stem, "start_s": 0.0, "end_s": 8.0, "frames": 200,
                     "duration_s": 8.0, "face_size_px": 250.0, "head_motion": 0.01, "speech_ratio": 0.8,
                     "kept": True, "reason": ""})
    write_manifest(clip_root, rows)
    with make_detector("mediapipe", max_faces=1, video=False) as detector:
        clips = load_clip_set(clip_root, detector, 48, 0.25)
    training = dataclasses.replace(expert_config.training, steps=200, batch_size=16, log_every=10, eval_every=200,
                                   checkpoint_every=200, learning_rate=0.001)
    train_expert(dataclasses.replace(expert_config, training=training), clips, "real", folders(tmp_path, "real"),
                 setup_distributed())
    losses = pd.read_csv(tmp_path / "real" / "log" / "plots" / "metrics" / "train_loss.tsv", sep="\t")["train_loss"]
    assert losses.iloc[-3:].mean() < losses.iloc[:2].mean(), f"the loss should go down: {losses.tolist()}"


def test_torchrun_with_two_cpu_processes_trains_and_exports(tmp_path, repo_root):
    save_clip_arrays(tmp_path / "data", synthetic_clips())
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["sync_expert"].update(face_size=48, embed_dim=32, eval_batches=2)
    params["sync_expert"]["training"].update(steps=10, batch_size=8, warmup_steps=2, log_every=5, eval_every=5,
                                             checkpoint_every=5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(repo_root / "stages" / "sync_expert.py"), "--params", str(tmp_path / "params.yaml"),
               "--data", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out"),
               "--checkpoint-dir", str(tmp_path / "checkpoints"), "--log-dir", str(tmp_path / "log")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((tmp_path / "out" / "expert.json").read_text())
    assert meta["embed_dim"] == 32 and set(meta["metrics"]) >= {"held_out_accuracy", "train_loss"}
    assert result.stdout.count("sync_expert: held_out") == 1, "only rank 0 reports"
