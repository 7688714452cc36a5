"""The evaluate stage's metrics on known cases: identical and shifted videos, missing weights as reasons."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from damc_core.config import load_params
from damc_core.evaluation import evaluate_validation, load_backends, write_frame_table
from damc_core.media import read_audio, read_video
from damc_core.metrics.image import psnr_per_frame
from damc_core.sync.models import SyncExpert

FRAMES = 40


@pytest.fixture(scope="module")
def real_clip(shared_dir):
    video = shared_dir / "data/subjects/May_5s.mp4"
    frames = read_video(video)[:FRAMES, ::2, ::2].copy()  # 256 x 256
    return frames, read_audio(video)[: FRAMES * 640]


@pytest.fixture(scope="module")
def backends(repo_root):
    config = load_params(repo_root / "params.yaml").evaluate
    expert = SyncExpert(embed_dim=16).eval()
    meta = {"face_size": 48, "training_data_sha256": "random-init-stand-in"}
    return config, load_backends(config, expert, meta)


def test_identical_videos_give_capped_psnr_and_zero_lmd(real_clip, backends):
    frames, audio = real_clip
    config, loaded = backends
    metrics, reference, per_frame = evaluate_validation(frames, frames.copy(), frames[::-1], audio, config, loaded)
    assert metrics["psnr"].value == 100.0 and (per_frame["psnr"] == 100.0).all()
    # The baselines show one still frame throughout: the clip's own last frame is its first one reversed.
    assert metrics["psnr_last_training_frame"].value == pytest.approx(
        float(np.mean(psnr_per_frame(np.broadcast_to(frames[0], frames.shape), frames))))
    assert metrics["psnr_mean_training_frame"].value < 100.0 and "mean" in metrics["psnr_mean_training_frame"].backend
    assert metrics["lmd"].value == pytest.approx(0.0, abs=1e-6)
    for name in ("expert_confidence", "expert_distance", "expert_offset"):
        assert metrics[name].value == pytest.approx(reference[name].value), "same frames and audio, same scores"


def test_a_shifted_copy_loses_psnr_but_not_lmd(real_clip, backends):
    """LMD mean-centres each mouth (DESIGN.md), so moving the whole picture by 4 px leaves it near 0, while PSNR
    drops to that of the shifted pixels."""
    frames, audio = real_clip
    config, loaded = backends
    shifted = np.roll(frames, 4, axis=2)
    metrics, _, per_frame = evaluate_validation(shifted, frames, frames, audio, config, loaded)
    expected = -10 * np.log10(np.mean(((shifted.astype(float) - frames) / 255) ** 2, axis=(1, 2, 3)))
    assert per_frame["psnr"] == pytest.approx(expected, rel=1e-9)
    assert metrics["psnr"].value < 40
    assert metrics["lmd"].value < 1.0, "the detector's jitter, not the shift"


def test_missing_weights_give_null_with_the_file_and_the_backend(real_clip, backends, tmp_path):
    frames, audio = real_clip
    config, loaded = backends
    missing = dataclasses.replace(config, syncnet_weights=str(tmp_path / "syncnet_v2.model"),
                                  fid_weights=str(tmp_path / "pt_inception.pth"))
    metrics, _, _ = evaluate_validation(frames[:8], frames[:8], frames, audio[: 8 * 640], missing,
                                        load_backends(missing, loaded.expert, loaded.expert_meta))
    for name in ("lse_c", "lse_d", "av_offset"):
        assert metrics[name].value is None and "syncnet_v2.model" in metrics[name].reason
        assert "syncnet_python" in metrics[name].backend
    assert metrics["fid"].value is None and metrics["fid"].reason
    assert metrics["lpips"].value is None and "alexnet" in metrics["lpips"].reason
    assert metrics["expert_confidence"].value is None and "frames" in metrics["expert_confidence"].reason, \
        "8 frames are too few for offsets of +-15"


def test_frame_table_leaves_missing_values_empty(tmp_path):
    path = tmp_path / "frames.tsv"
    write_frame_table(path, np.array([7, 8]), {"psnr": np.array([30.0, 31.5]), "lmd": np.array([1.25, np.nan])})
    assert path.read_text().splitlines() == ["frame\tlmd\tpsnr", "7\t1.25\t30", "8\t\t31.5"]


def test_lmd_names_its_judge_and_counts_the_frames_without_a_face(real_clip, backends):
    frames, audio = real_clip
    config, loaded = backends
    judged_by_dlib = dataclasses.replace(config, landmarks="dlib")
    truth = frames[:8]
    rendered = truth.copy()
    rendered[:3] = 128
    metrics, _, per_frame = evaluate_validation(rendered, truth, frames, audio[: 8 * 640], judged_by_dlib, loaded)
    lmd = metrics["lmd"]
    assert "dlib 68-point" in lmd.backend and "non-commercial" in lmd.backend
    assert "no face in 3 of 8 rendered and 0 of 8 ground-truth frames" in lmd.backend
    assert np.isnan(per_frame["lmd"][:3]).all() and np.isfinite(per_frame["lmd"][3:]).all()
    assert lmd.value == pytest.approx(per_frame["lmd"][3:].mean()) and lmd.reason is None
    assert lmd.value < 1.0, "the same frames: only the detector's own jitter (its search starts afresh after a gap)"
    blank = np.full_like(truth, 128)
    metrics, _, _ = evaluate_validation(blank, truth, frames, audio[: 8 * 640], judged_by_dlib, loaded)
    assert metrics["lmd"].value is None
    assert metrics["lmd"].reason == ("no frame where both sets have a face "
                                     "(no face in 8 of 8 rendered and 0 of 8 ground-truth frames)")
