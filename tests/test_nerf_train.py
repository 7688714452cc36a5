"""NeRF training on a tiny synthetic subject: loading the prepared subject, nerf_coarse (export, metrics, learning,
determinism, kill and resume), nerf_fine (with and without LPIPS), the fusion ablation modes, and the fast renderer
with its occupancy grid."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil

import os
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from nerf_fixtures import (
    DYNAMIC_DIM,
    coarse_config,
    fine_config,
    fusion_config,
    make_subject,
    run_folders,
)

from damc_core.audio.extract import CONTENT_NAME, MEL_NAME
from damc_core.config import to_dict
from damc_core.audio.features import FeatureMismatchError, load_features, meta_path, save_features
from damc_core.face.parsing import Part, rgb_to_parsing
from damc_core.fusion import MODES
from damc_core.metrics.lpips import LAYER_CHANNELS, lpips_stand_in
from damc_core.nerf import model as nerf_model
from damc_core.nerf import train as nerf_train
from damc_core.nerf.data import (
    SubjectDataError,
    dynamic_features,
    frame_audio,
    load_split,
    load_subject_audio,
)
from damc_core.nerf.model import (
    MARCH_GROUPS,
    TERMINATION_TRANSMITTANCE,
    FrameCondition,
    frame_rays,
    head_rect,
)
from damc_core.nerf.occupancy import MAX_SKIPPED_OPACITY, OccupancyGrid, occupancy_grid
from damc_core.nerf.rays import intersect_box, pixel_grid
from damc_core.nerf.rendering import sample_deltas, sample_points, stratified_depths
from damc_core.nerf.bundle import HEAD_WEIGHTS, load_head
from damc_core.nerf.train import load_inputs, train_coarse, train_fine
from damc_core.nerf.validation import split_conditions
from damc_core.params import LpipsConfig
from damc_core.sync.train import load_dynamic_encoder
from damc_core.training import setup_distributed

EVAL_GRID = 16
"""Occupancy-grid resolution of the evaluations during training here (the real 48^3 grid costs seconds per call on a
CPU; the grid only lets rendering skip empty space). The occupancy tests below use the real resolution."""


@pytest.fixture(scope="module", autouse=True)
def small_and_single_threaded():
    """One torch thread (the models are tiny: threads only add synchronisation, and a loaded 2-core machine makes
    it very slow) and coarse evaluation grids, for this module only."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nerf_model, "occupancy_grid", functools.partial(occupancy_grid, resolution=EVAL_GRID))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return make_subject(tmp_path_factory.mktemp("subject"))


@pytest.fixture(scope="module")
def inputs(subject):
    return load_inputs(subject.subject_dir, subject.features_dir, subject.encoder_dir)


@pytest.fixture(scope="module")
def coarse(tmp_path_factory, inputs):
    """A 30-step nerf_coarse run, a train_loss row per step: (its folders, its returned metrics)."""
    folders = run_folders(tmp_path_factory.mktemp("coarse"), "run")
    metrics = train_coarse(coarse_config(steps=30), fusion_config(), inputs, folders, setup_distributed())
    return folders, metrics


def copied_subject(subject, tmp_path):
    """A private copy of the subject's face_prep folder, to damage."""
    return shutil.copytree(subject.subject_dir, tmp_path / "subject")


def load_both_splits(subject_dir):
    load_split(subject_dir, "train")
    load_split(subject_dir, "val")


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def head_state(out_dir) -> dict:
    return torch.load(out_dir / HEAD_WEIGHTS, weights_only=True)["talking_head"]


# --- the prepared subject ----------------------------------------------------------------------------------------


def test_load_split_reads_the_face_prep_folder(subject):
    camera, train = load_split(subject.subject_dir, "train")
    _, val = load_split(subject.subject_dir, "val")
    assert (camera.width, camera.height, camera.cx, camera.cy) == (32, 32, 16.0, 16.0)
    assert train.frame_ids.tolist() == subject.train_ids and val.frame_ids.tolist() == subject.val_ids
    assert train.images.shape == (10, 32, 32, 3) and train.images.dtype == torch.uint8
    assert train.camera_to_world.shape == (10, 4, 4) and float(train.camera_to_world[0, 2, 3]) == 18.0
    assert train.blink.tolist() == [0.0] * 10
    # The background is the RGBA torso over the plate: the torso strip at the bottom, the plate above it.
    assert train.backgrounds[:, -2].float().mean(dim=(0, 1)).tolist() == [70.0, 70.0, 150.0]
    plate = torch.from_numpy(cv2.imread(str(subject.subject_dir / "bc.jpg"))[..., ::-1].copy())
    assert torch.equal(train.backgrounds[3, :20], plate[:20])
    # The lips box lies inside the face box, which lies inside the image.
    for face, lips in zip(train.face_rects, train.lips_rects, strict=True):
        assert 0 <= face[0] <= lips[0] < lips[2] <= face[2] <= 32 and 0 <= face[1] <= lips[1] < lips[3] <= face[3] <= 32


def test_head_masks_are_the_parsing_head_pixels(subject):
    _, train = load_split(subject.subject_dir, "train")
    assert train.head_masks.shape == (10, 32, 32) and train.head_masks.dtype == torch.bool
    labels = rgb_to_parsing(cv2.imread(str(subject.subject_dir / "parsing" / "3.png"))[..., ::-1])
    assert torch.equal(train.head_masks[3], torch.from_numpy(labels == Part.HEAD))
    assert 0.1 < float(train.head_masks.float().mean()) < 0.9 and not train.head_masks[:, -1].any()


@pytest.mark.parametrize("name", ["transforms_train.json", "landmarks.npy", "bc.jpg", "gt_imgs/4.jpg",
                                  "torso_imgs/0.png", "parsing/5.png", "transforms_val.json", "gt_imgs/11.jpg"])
def test_a_missing_subject_file_is_named(subject, tmp_path, name):
    copy = copied_subject(subject, tmp_path)
    (copy / name).unlink()
    with pytest.raises(SubjectDataError, match=str(copy / name)):
        load_both_splits(copy)


def test_unreadable_or_inconsistent_subject_files_are_named(subject, tmp_path):
    copy = copied_subject(subject, tmp_path)
    (copy / "gt_imgs" / "2.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SubjectDataError, match=f"{copy / 'gt_imgs' / '2.jpg'} is not a readable image"):
        load_split(copy, "train")
    shutil.copy(copy / "gt_imgs" / "3.jpg", copy / "gt_imgs" / "2.jpg")
    cv2.imwrite(str(copy / "torso_imgs" / "1.png"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(SubjectDataError, match=f"{copy / 'torso_imgs' / '1.png'} is not an RGBA image"):
        load_split(copy, "train")
    shutil.copy(copy / "torso_imgs" / "3.png", copy / "torso_imgs" / "1.png")
    cv2.imwrite(str(copy / "parsing" / "4.png"), np.full((32, 32, 3), 128, np.uint8))
    with pytest.raises(SubjectDataError, match=f"{copy / 'parsing' / '4.png'} is not a parsing image"):
        load_split(copy, "train")
    shutil.copy(copy / "parsing" / "3.png", copy / "parsing" / "4.png")
    transforms = json.loads((copy / "transforms_train.json").read_text())
    (copy / "transforms_train.json").write_text(json.dumps(transforms | {"w": 40}))
    with pytest.raises(SubjectDataError, match="frames are 32x32 but the camera is 40x32"):
        load_split(copy, "train")
    (copy / "transforms_train.json").write_text(json.dumps(transforms | {"frames": []}))
    with pytest.raises(SubjectDataError, match="lists no frames"):
        load_split(copy, "train")
    np.save(copy / "landmarks.npy", np.zeros((5, 68, 2), np.float32))
    with pytest.raises(SubjectDataError, match="frame 11 has no landmarks"):
        load_split(copy, "val")


def test_load_subject_audio_reads_both_features(subject):
    encoder, _ = load_dynamic_encoder(subject.encoder_dir)
    audio, meta = load_subject_audio(subject.features_dir, subject.frames, encoder)
    content, _ = load_features(subject.features_dir / CONTENT_NAME)
    mel, _ = load_features(subject.features_dir / MEL_NAME)
    assert len(audio) == 12 and audio.content.shape == (12, 2 * 32) and audio.dynamic.shape == (12, DYNAMIC_DIM)
    assert torch.equal(audio.content, torch.from_numpy(content).reshape(12, -1))
    assert torch.equal(audio.dynamic, dynamic_features(encoder, mel))
    assert meta == {"encoder": "stand-in:hubert-random-init", "representation": "ctc_logits", "language": "en",
                    "dim": 32, "window": 2, "stand_in": True}
    content_window, dynamic_window = audio.windows(torch.tensor([0, 11]), 3)
    assert content_window.shape == (2, 3, 64) and dynamic_window.shape == (2, 3, DYNAMIC_DIM)
    assert torch.equal(content_window[0, 0], audio.content[0]) and torch.equal(content_window[1, 2], audio.content[11])


@pytest.mark.parametrize("name", [CONTENT_NAME, MEL_NAME])
def test_missing_feature_files_are_named(subject, tmp_path, name):
    features = shutil.copytree(subject.features_dir, tmp_path / "features")
    (features / name).unlink()
    meta_path(features / name).unlink()
    encoder, _ = load_dynamic_encoder(subject.encoder_dir)
    with pytest.raises(FeatureMismatchError, match=str(features / name)):
        load_subject_audio(features, subject.frames, encoder)


def test_content_features_of_another_length_are_refused(subject, tmp_path):
    features = shutil.copytree(subject.features_dir, tmp_path / "features")
    content, meta = load_features(features / CONTENT_NAME)
    save_features(features / CONTENT_NAME, content[:-1], dataclasses.replace(meta, shape=content[:-1].shape))
    encoder, _ = load_dynamic_encoder(subject.encoder_dir)
    with pytest.raises(FeatureMismatchError, match="11 rows of content features for a video of 12 frames"):
        load_subject_audio(features, subject.frames, encoder)
    mel, _ = load_features(features / MEL_NAME)
    with pytest.raises(FeatureMismatchError, match="11 frames but mel windows 12"):
        frame_audio(content[:-1], mel, encoder)


def test_a_missing_encoder_folder_is_named(subject, tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.pt is missing"):
        load_inputs(subject.subject_dir, subject.features_dir, tmp_path / "nowhere")


# --- training rays ------------------------------------------------------------------------------------------------


def test_training_rays_match_each_frames_own_rays(inputs):
    """The vectorised batch over several frames against frame_rays of each frame on its own."""
    head = nerf_train.build_head(inputs, fusion_config(), coarse_config().field)
    positions = np.array([7, 2, 5])
    rng = np.random.default_rng(0)
    pixels = [nerf_train.training_pixels(head, inputs, position, 20, coarse_config().rays, rng)
              for position in positions]
    batch = nerf_train.training_rays(head, inputs, positions, pixels)
    audio = head.audio_condition(inputs.audio, torch.as_tensor(inputs.train.frame_ids[positions]))
    start = 0
    for row, (position, frame_pixels) in enumerate(zip(positions, pixels, strict=True)):
        cols, rows = (torch.as_tensor(frame_pixels[:, axis]) for axis in (0, 1))
        condition = FrameCondition(inputs.train.camera_to_world[position], audio[row],
                                   float(inputs.train.blink[position]), head.field.latents[position],
                                   inputs.train.backgrounds[position])
        background = inputs.train.backgrounds[position][rows, cols].float() / 255.0
        alone = frame_rays(inputs.camera, condition, torch.as_tensor(frame_pixels), background)
        part = batch.rays.chunk(start, start + len(frame_pixels))
        torch.testing.assert_close(part.origins, alone.origins)
        torch.testing.assert_close(part.directions, alone.directions)
        assert torch.equal(part.background, alone.background) and (part.frame == row).all()
        torch.testing.assert_close(part.audio[part.frame], alone.audio[alone.frame])
        torch.testing.assert_close(part.latent[part.frame], alone.latent[alone.frame])
        assert torch.equal(batch.colour[start:start + len(frame_pixels)],
                           inputs.train.images[position][rows, cols].float() / 255.0)
        assert torch.equal(batch.head[start:start + len(frame_pixels)],
                           inputs.train.head_masks[position][rows, cols].float())
        start += len(frame_pixels)
    assert start == len(batch.rays)


def test_losses_are_zero_only_at_their_targets():
    colour = torch.rand(5, 3)
    assert nerf_train.colour_loss(colour, colour) == 0 and nerf_train.colour_loss(colour, colour + 0.1) > 0
    head = torch.tensor([1.0, 0.0, 1.0])
    assert nerf_train.opacity_loss(head, head) == 0
    torch.testing.assert_close(nerf_train.opacity_loss(torch.tensor([0.5, 0.5, 1.0]), head), torch.tensor(1 / 6))


def test_without_jitter_training_samples_sit_where_rendering_samples(inputs):
    head = nerf_train.build_head(inputs, fusion_config(), dataclasses.replace(coarse_config().field, jitter=False))
    rays, _ = frame_of(head, inputs, 0)
    with torch.no_grad():
        drawn = head.render_rays(rays, torch.Generator().manual_seed(3))
        midpoints = head.render_rays(rays, None)
    assert torch.equal(drawn.rgb, midpoints.rgb)
    jittered = nerf_train.build_head(inputs, fusion_config(), coarse_config().field)
    with torch.no_grad():
        assert not torch.equal(jittered.render_rays(rays, torch.Generator().manual_seed(3)).rgb,
                               jittered.render_rays(rays, None).rgb)


def test_a_training_step_and_a_frame_render_create_no_tensor_off_their_device(inputs):
    """Every tensor must be made on an explicit device (or like an existing one): with the default device set to
    `meta`, a tensor created without one lands there and the first operation mixing it with the CPU data fails."""
    head = nerf_train.build_head(inputs, fusion_config(), coarse_config().field)
    optimizer = nerf_train._optimizer(head, 0.01, 0.01)
    rng, generator = nerf_train._step_generators(0, 0, inputs.device)
    positions = np.array([0, 1])
    pixels = [nerf_train.training_pixels(head, inputs, position, 16, coarse_config().rays, rng)
              for position in positions]
    with torch.device("meta"):
        batch = nerf_train.training_rays(head, inputs, positions, pixels)
        rendered = head.render_rays(batch.rays, generator)
        loss = nerf_train.colour_loss(rendered.rgb, batch.colour) + nerf_train.opacity_loss(rendered.opacity,
                                                                                             batch.head)
        loss.backward()
        optimizer.step()
        head.eval()
        occupancy = nerf_model.audio_occupancy(head, inputs.audio)
        condition = split_conditions(head, inputs.val, inputs.audio, np.array([0]))[0]
        frame = nerf_model.render_frame(head, inputs.camera, condition, 256, occupancy)
    assert loss.device.type == "cpu" and frame.device.type == "cpu" and frame.shape == (32, 32, 3)


# --- nerf_coarse --------------------------------------------------------------------------------------------------


def test_train_coarse_exports_the_head_and_its_meta(coarse, inputs, subject):
    folders, metrics = coarse
    assert set(metrics) == {"val_psnr", "occupied_fraction", "train_psnr"}
    meta = json.loads((folders.out_dir / "head.json").read_text())
    assert meta["stage"] == "nerf_coarse" and meta["metrics"] == pytest.approx(metrics)
    assert meta["fusion"] == {"mode": "csfm", "dim": 8, "window": 3, "heads": 1}
    assert meta["field"]["samples_per_ray"] == 6 and meta["field"]["box_min"] == [-1.0, -1.0, -1.0]
    assert meta["content_features"] == inputs.content_meta and meta["dynamic_encoder"]["output_dim"] == DYNAMIC_DIM
    assert meta["train_frame_ids"] == subject.train_ids and meta["latent_count"] == 10
    assert meta["content_dim"] == 64 and meta["dynamic_dim"] == DYNAMIC_DIM
    assert meta["subject_dir"] == str(subject.subject_dir)
    weights = torch.load(folders.out_dir / HEAD_WEIGHTS, weights_only=True)
    assert set(weights) == {"talking_head", "dynamic_encoder"}
    assert state_dicts_equal(weights["dynamic_encoder"], inputs.encoder.state_dict())
    head, encoder, loaded_meta = load_head(folders.out_dir)
    assert loaded_meta == meta and not head.training and not any(p.requires_grad for p in head.parameters())
    assert state_dicts_equal(head.state_dict(), weights["talking_head"])


def test_train_coarse_writes_dvclive_metrics(coarse):
    folders, metrics = coarse
    logged = json.loads((folders.log_dir / "metrics.json").read_text())
    assert logged["val_psnr"] == pytest.approx(metrics["val_psnr"]) and 5.0 < logged["val_psnr"] < 100.0
    assert logged["step"] == 30
    losses = pd.read_csv(folders.log_dir / "plots" / "metrics" / "train_loss.tsv", sep="\t")
    assert losses["step"].tolist() == list(range(1, 31))
    assert (folders.log_dir / "plots" / "metrics" / "val_psnr.tsv").exists()
    assert list(folders.checkpoint_dir.glob("checkpoint-*.pt")) == [], "a finished run leaves no checkpoint"


def test_the_coarse_loss_goes_down(coarse):
    folders, _ = coarse
    losses = pd.read_csv(folders.log_dir / "plots" / "metrics" / "train_loss.tsv", sep="\t")["train_loss"]
    # The box starts opaque (field.INITIAL_LOG_DENSITY) and 30 steps only begin to carve it.
    assert losses.iloc[-5:].mean() < 0.85 * losses.iloc[:5].mean(), losses.round(4).tolist()


def short_run_config():
    return coarse_config(steps=8, log_every=2, checkpoint_every=4)


def test_two_runs_with_the_same_seed_are_bit_identical(tmp_path, inputs):
    context = setup_distributed()
    for name in ("a", "b"):
        train_coarse(short_run_config(), fusion_config(), inputs, run_folders(tmp_path, name), context)
    a, b = (run_folders(tmp_path, name).out_dir for name in ("a", "b"))
    assert state_dicts_equal(head_state(a), head_state(b))
    assert (a / HEAD_WEIGHTS).read_bytes() == (b / HEAD_WEIGHTS).read_bytes()


def test_a_killed_run_resumes_and_ends_where_an_uninterrupted_run_would(tmp_path, inputs, monkeypatch, capsys):
    context, config = setup_distributed(), short_run_config()
    whole, killed = run_folders(tmp_path, "whole"), run_folders(tmp_path, "killed")
    train_coarse(config, fusion_config(), inputs, whole, context)

    calls = {"count": 0}
    real_generators = nerf_train._step_generators

    def dies_in_step_6(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] > 5:
            raise KeyboardInterrupt("killed")
        return real_generators(*args, **kwargs)

    monkeypatch.setattr(nerf_train, "_step_generators", dies_in_step_6)
    with pytest.raises(KeyboardInterrupt):
        train_coarse(config, fusion_config(), inputs, killed, context)
    monkeypatch.setattr(nerf_train, "_step_generators", real_generators)
    assert len(list(killed.checkpoint_dir.glob("checkpoint-*.pt"))) == 1
    assert not (killed.out_dir / HEAD_WEIGHTS).exists()
    capsys.readouterr()
    train_coarse(config, fusion_config(), inputs, killed, context)
    assert "nerf_coarse: resuming from step 4" in capsys.readouterr().out

    assert state_dicts_equal(head_state(whole.out_dir), head_state(killed.out_dir))
    for name in ("train_loss", "learning_rate"):
        whole_rows, killed_rows = (pd.read_csv(run.log_dir / "plots" / "metrics" / f"{name}.tsv", sep="\t")
                                   for run in (whole, killed))
        assert killed_rows["step"].tolist() == [2, 4, 6, 8], "one log row per step, none repeated by the resume"
        assert killed_rows[name].tolist() == whole_rows[name].tolist()
    assert list(killed.checkpoint_dir.glob("checkpoint-*.pt")) == [], "a finished run leaves no checkpoint"


# --- nerf_fine ----------------------------------------------------------------------------------------------------


def save_stand_in_lpips(folder):
    """The stand-in LPIPS's weights in the files' own layouts: torchvision AlexNet and lpips' alex.pth."""
    folder.mkdir(parents=True, exist_ok=True)
    model = lpips_stand_in()
    backbone = dict(model.backbone.state_dict())  # AlexNetFeatures keeps torchvision's "features.<i>.*" keys
    backbone["classifier.1.weight"] = torch.zeros(4, 4)  # torchvision's file has a classifier; it is ignored
    heads = {f"lin{layer}.model.1.weight": model.heads[layer].weight for layer in range(len(LAYER_CHANNELS))}
    torch.save(backbone, folder / "alexnet-owt-7be5be79.pth")
    torch.save(heads, folder / "alex.pth")
    return LpipsConfig(backbone=str(folder / "alexnet-owt-7be5be79.pth"), linear_heads=str(folder / "alex.pth"))


def test_train_fine_without_lpips_weights_trains_with_mse_and_says_so(tmp_path, coarse, inputs, capfd):
    coarse_folders, coarse_metrics = coarse
    missing = LpipsConfig(backbone=str(tmp_path / "absent" / "alexnet.pth"), linear_heads=str(tmp_path / "alex.pth"))
    folders = run_folders(tmp_path, "fine")
    metrics = train_fine(fine_config(missing), coarse_folders.out_dir, inputs, folders, setup_distributed())
    assert metrics["lpips"].startswith("unavailable") and "alexnet.pth" in metrics["lpips"]
    assert metrics["train_lpips"] is None and metrics["val_psnr"] > 5.0
    assert "LPIPS IS UNAVAILABLE" in capfd.readouterr().err
    logged = json.loads((folders.log_dir / "metrics.json").read_text())
    assert logged["lpips"].startswith("unavailable") and logged["train_lpips"] is None
    meta = json.loads((folders.out_dir / "head.json").read_text())
    assert meta["stage"] == "nerf_fine" and meta["coarse_metrics"] == pytest.approx(coarse_metrics)
    coarse_meta = json.loads((coarse_folders.out_dir / "head.json").read_text())
    assert {key: meta[key] for key in ("fusion", "field", "train_frame_ids", "content_features")} == {
        key: coarse_meta[key] for key in ("fusion", "field", "train_frame_ids", "content_features")}
    assert not state_dicts_equal(head_state(folders.out_dir), head_state(coarse_folders.out_dir)), "it trains"
    load_head(folders.out_dir)


def test_train_fine_continues_the_coarse_head_with_lpips(tmp_path, coarse, inputs):
    coarse_folders, _ = coarse
    lpips = save_stand_in_lpips(tmp_path / "weights")
    # At a zero learning rate the steps change nothing: what is exported is exactly what the run started from.
    config = dataclasses.replace(fine_config(lpips, steps=2, learning_rate=0.0), encoding_learning_rate=0.0)
    folders = run_folders(tmp_path, "fine")
    metrics = train_fine(config, coarse_folders.out_dir, inputs, folders, setup_distributed())
    assert metrics["lpips"] == "computed"
    assert isinstance(metrics["train_lpips"], float) and metrics["train_lpips"] > 0.0
    assert state_dicts_equal(head_state(folders.out_dir), head_state(coarse_folders.out_dir))
    logged = json.loads((folders.log_dir / "metrics.json").read_text())
    assert logged["train_lpips"] == pytest.approx(metrics["train_lpips"])


def test_train_fine_refuses_patches_larger_than_the_frames(tmp_path, coarse, inputs):
    config = dataclasses.replace(fine_config(LpipsConfig("absent", "absent"), lpips_weight=0.0), patch_size=33)
    with pytest.raises(ValueError, match="patch_size 33 is larger than the 32x32 frames"):
        train_fine(config, coarse[0].out_dir, inputs, run_folders(tmp_path, "fine"), setup_distributed())


def test_train_fine_refuses_a_coarse_head_trained_on_other_frames(tmp_path, coarse):
    """BUG (damc_core/nerf/train.py, train_fine): the coarse head's training frames are not checked against the
    inputs. Its per-frame latent codes (10 here) are then used for other frames (8 here), and export_head writes
    latent_count = len(inputs.train) = 8 beside a state dict with 10 codes, so load_head cannot read the export
    (size mismatch for field.latents)."""
    other = make_subject(tmp_path / "other", frames=10)
    inputs = load_inputs(other.subject_dir, other.features_dir, other.encoder_dir)
    folders = run_folders(tmp_path, "fine")
    with pytest.raises(ValueError):
        train_fine(fine_config(LpipsConfig("absent", "absent"), steps=1, lpips_weight=0.0), coarse[0].out_dir,
                   inputs, folders, setup_distributed())


# --- the fusion ablation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_fusion_mode_trains_and_is_rebuilt_by_load_head(tmp_path, inputs, mode):
    folders = run_folders(tmp_path, mode)
    metrics = train_coarse(coarse_config(steps=2), fusion_config(mode), inputs, folders, setup_distributed())
    assert np.isfinite(metrics["val_psnr"])
    head, _, meta = load_head(folders.out_dir)
    assert meta["fusion"]["mode"] == mode
    assert set(head.fusion.proj) == set(MODES[mode].branches)
    assert state_dicts_equal(head.state_dict(), head_state(folders.out_dir))
    condition = head.audio_condition(inputs.audio, torch.arange(len(inputs.audio)))
    assert condition.shape == (12, 8) and torch.isfinite(condition).all()


# --- fast rendering and the occupancy grid ------------------------------------------------------------------------


def frame_of(head, inputs, position: int):
    """Rays of every pixel of validation frame `position` that can hit the head's box."""
    val = inputs.val
    audio = head.audio_condition(inputs.audio, torch.as_tensor(val.frame_ids[[position]]))[0]
    frame = FrameCondition(val.camera_to_world[position], audio, 0.0, head.field.mean_latent(),
                           val.backgrounds[position])
    pixels = pixel_grid(head_rect(head, inputs.camera, frame.camera_to_world))
    background = frame.background[pixels[:, 1], pixels[:, 0]].float() / 255.0
    return frame_rays(inputs.camera, frame, pixels, background), audio


def everywhere(head) -> OccupancyGrid:
    low, high = (torch.tensor(corner, dtype=torch.float32) for corner in head.box)
    return OccupancyGrid(torch.ones(8, 8, 8, dtype=torch.bool), low, high)


@pytest.fixture()
def trained_head(coarse):
    head, _, _ = load_head(coarse[0].out_dir)
    return head


def test_fast_rendering_with_everything_occupied_matches_full_rendering(trained_head, inputs):
    rays, _ = frame_of(trained_head, inputs, 0)
    with torch.no_grad():
        full = trained_head.render_rays(rays, terminate=False)
        fast = trained_head.render_rays(rays, occupancy=everywhere(trained_head))
    assert (fast.rgb - full.rgb).abs().max() <= 2e-3
    assert (fast.opacity - full.opacity).abs().max() <= 2e-3


def test_early_termination_changes_colour_by_at_most_the_remaining_transmittance(trained_head, inputs):
    with torch.no_grad():  # a head dense enough for every ray to stop in its first group of samples
        trained_head.field.density_net[-1].bias[0] += 8.0
    rays, _ = frame_of(trained_head, inputs, 0)
    queried = []
    real_field = trained_head.field.forward

    def counting_field(points, *args):
        queried.append(len(points))
        return real_field(points, *args)

    with torch.no_grad():
        full = trained_head.render_rays(rays, terminate=False)
        trained_head.field.forward = counting_field
        fast = trained_head.render_rays(rays, occupancy=everywhere(trained_head))
    assert (fast.rgb - full.rgb).abs().max() <= 2 * TERMINATION_TRANSMITTANCE
    assert full.opacity.max() > 1 - TERMINATION_TRANSMITTANCE
    hits = int(intersect_box(rays.origins, rays.directions, *trained_head.box)[2].sum())
    first_group = len(torch.arange(trained_head.samples_per_ray).chunk(MARCH_GROUPS)[0])
    assert queried[0] == first_group * hits and sum(queried[1:]) == 0, f"rays should stop early: {queried}"


def sharpen_density(head, audio: torch.Tensor, factor: float) -> None:
    """Turn the head's density into a surface: log density scaled by `factor` about its median over the box.

    After 30 steps on a CPU the head is a faint haze all over its box (densities 0.1-0.7 per dm), where nothing can be
    skipped; a longer-trained head is dense at the face and empty around it, which this imitates."""
    axis = torch.linspace(-0.95, 0.95, 16)
    points = torch.cartesian_prod(axis, axis, axis)
    with torch.no_grad():
        log_density = torch.log(head.field.density(points, audio.expand(len(points), -1), torch.zeros(len(points))))
        last = head.field.density_net[-1]
        last.weight[0] *= factor
        last.bias[0] = factor * (last.bias[0] - log_density.median())


def test_fast_rendering_with_the_real_occupancy_grid_matches_full_rendering(trained_head, inputs):
    rays, audio = frame_of(trained_head, inputs, 1)
    sharpen_density(trained_head, audio, 50.0)
    grid = occupancy_grid(trained_head.field, audio[None])  # the frame's own condition, the real resolution
    assert 0.05 < grid.fraction < 0.99, grid.fraction
    with torch.no_grad():
        full = trained_head.render_rays(rays, terminate=False)
        fast = trained_head.render_rays(rays, occupancy=grid)
    difference = (fast.rgb - full.rgb).abs().max(dim=1).values
    assert difference.mean() < 1e-3 and difference.max() < 0.03, (difference.mean(), difference.max())

    # Each ray differs by at most the opacity of the samples it skipped (plus what termination leaves out), and the
    # grid skips only samples whose density is about the grid's threshold or less.
    near, far, hit = intersect_box(rays.origins, rays.directions, *trained_head.box)
    depths = stratified_depths(near, far, trained_head.samples_per_ray, None)
    points = sample_points(rays.origins, rays.directions, depths)
    count = points.shape[0] * points.shape[1]
    with torch.no_grad():
        sigma = trained_head.field.density(points.reshape(-1, 3), audio.expand(count, -1),
                                           torch.zeros(count)).reshape(depths.shape)
    skipped = hit[:, None] & ~grid.contains(points)
    assert skipped.any() and (hit[:, None] & ~skipped).any()
    skipped_depth = (sigma * sample_deltas(depths, far) * skipped).sum(dim=1)
    assert (difference <= skipped_depth + 2 * TERMINATION_TRANSMITTANCE).all()
    diagonal = math.dist(*trained_head.box)
    threshold = -math.log1p(-MAX_SKIPPED_OPACITY) / diagonal
    assert sigma[skipped].max() < 1.5 * threshold


def test_occupancy_grid_contains_nothing_outside_the_box():
    low, high = torch.tensor([-1.0, -2.0, 0.0]), torch.tensor([1.0, 2.0, 4.0])
    grid = OccupancyGrid(torch.ones(4, 4, 4, dtype=torch.bool), low, high)
    inside = torch.tensor([[0.0, 0.0, 2.0], [-1.0, -2.0, 0.0], [1.0, 2.0, 4.0], [0.99, 1.99, 3.99]])
    outside = torch.tensor([[1.01, 0.0, 2.0], [0.0, -2.5, 2.0], [0.0, 0.0, -0.01], [0.0, 0.0, 9.0], [5.0, 5.0, 5.0]])
    assert grid.contains(inside).tolist() == [True] * 4
    assert grid.contains(outside).tolist() == [False] * 5
    assert grid.contains(outside.reshape(5, 1, 3)).shape == (5, 1)
    one = torch.zeros(4, 4, 4, dtype=torch.bool)
    one[3, 0, 1] = True  # x in [0.5, 1], y in [-2, -1], z in [1, 2]
    single = OccupancyGrid(one, low, high)
    assert single.fraction == 1 / 64
    points = torch.tensor([[0.75, -1.5, 1.5], [0.25, -1.5, 1.5], [0.75, -1.5, 2.5], [1.5, -1.5, 1.5]])
    assert single.contains(points).tolist() == [True, False, False, False]


def test_torchrun_trains_nerf_coarse_on_two_cpu_processes(tmp_path, subject, repo_root):
    """Each rank draws its own rays and their gradients are averaged; run_training ends by checking that the ranks
    hold the same weights (check_ranks_agree raises otherwise), and only rank 0 writes."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params |= {"device": "cpu", "fusion": to_dict(fusion_config()),
               "nerf_coarse": to_dict(coarse_config(steps=4, log_every=2, checkpoint_every=2))}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    folders = run_folders(tmp_path, "ddp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(repo_root / "stages" / "nerf_coarse.py"), "--params", str(tmp_path / "params.yaml"),
               "--subject", str(subject.subject_dir), "--features", str(subject.features_dir),
               "--encoder", str(subject.encoder_dir), "--out-dir", str(folders.out_dir),
               "--checkpoint-dir", str(folders.checkpoint_dir), "--log-dir", str(folders.log_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("nerf_coarse: val_psnr") == 1, "only rank 0 reports"
    head, _, meta = load_head(folders.out_dir)
    assert meta["stage"] == "nerf_coarse" and meta["field"]["hash_grid"]["levels"] == 3
