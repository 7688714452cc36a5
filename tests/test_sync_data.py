"""Tests of damc_core.sync.data: face boxes, per-clip arrays and the sync / off-sync batch sampler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from damc_core.audio.mel import log_mel_windows
from damc_core.clipset import read_manifest
from damc_core.face.landmarks import detect_sequence, make_detector
from damc_core.media import read_audio, read_video
from damc_core.sync.data import (
    SYNC_FRAMES,
    ClipArrays,
    NoFaceError,
    face_boxes,
    fingerprint,
    load_clip_arrays,
    load_clip_set,
    min_clip_frames,
    read_clip_arrays,
    sample_batch,
    save_clip_arrays,
    split_clips,
)

FACE_SIZE = 64
MOUTH = slice(48, 68)
SYNTH_SIZE = 160


@pytest.fixture(scope="module")
def clip_root(repo_root: Path) -> Path:
    """The synthetic clip set (data/clips), made by `dvc repro hdtf_filter` when it is missing."""
    root = repo_root / "data" / "clips"
    if not (root / "manifest.csv").is_file():
        subprocess.run([Path(sys.executable).parent / "dvc", "repro", "hdtf_filter"], cwd=repo_root, check=True)
    return root


@pytest.fixture(scope="module")
def detector():
    with make_detector("mediapipe", max_faces=1, video=False) as landmark_detector:
        yield landmark_detector


@pytest.fixture(scope="module")
def synthetic_clips(clip_root: Path, detector) -> list[ClipArrays]:
    return load_clip_set(clip_root, detector, FACE_SIZE)


def truth(repo_root: Path, clip_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The sample generator's landmarks (T, 68, 2) and mouth aperture (T,) of a synthetic clip."""
    folder = repo_root / "data" / "sample" / "clips" / "truth"
    signals = pd.read_csv(folder / f"{clip_id}.signals.tsv", sep="\t")
    return np.load(folder / f"{clip_id}.landmarks.npy"), signals["aperture"].to_numpy()


def toy_clips(lengths: list[int], face_size: int = 8) -> list[ClipArrays]:
    """In-memory clips whose pixels (RGB = clip index, frame, 255 - frame) and mel values encode (clip index, frame)."""
    clips = []
    for index, length in enumerate(lengths):
        frames = np.arange(length)
        colours = np.stack([np.full(length, index), frames, 255 - frames], axis=1)
        faces = np.broadcast_to(colours[:, None, None, :], (length, face_size // 2, face_size, 3)).astype(np.uint8)
        mel = np.broadcast_to((1000.0 * index + frames)[:, None, None], (length, 80, 16)).astype(np.float32)
        clips.append(ClipArrays(f"toy_{index}", faces, mel))
    return clips


def assert_boxes_hold(boxes: np.ndarray, points: np.ndarray, width: int, height: int) -> None:
    """Boxes are square, inside the image, and contain every point of their frame."""
    x, y, box_width, box_height = boxes.T
    assert np.array_equal(box_width, box_height)
    assert (x >= 0).all() and (y >= 0).all() and (x + box_width <= width).all() and (y + box_height <= height).all()
    assert (points[..., 0] >= x[:, None]).all() and (points[..., 0] <= (x + box_width)[:, None]).all()
    assert (points[..., 1] >= y[:, None]).all() and (points[..., 1] <= (y + box_height)[:, None]).all()


def test_face_boxes_hold_the_mouth_of_every_synthetic_frame(clip_root: Path, repo_root: Path):
    for clip_id in read_manifest(clip_root)["clip_id"]:
        landmarks, _ = truth(repo_root, clip_id)
        boxes = face_boxes(landmarks, SYNTH_SIZE, SYNTH_SIZE, margin=0.25)
        assert boxes.shape == (len(landmarks), 4)
        assert_boxes_hold(boxes, landmarks[:, MOUTH], SYNTH_SIZE, SYNTH_SIZE)


def test_face_boxes_enlarge_the_landmark_box_by_the_margin():
    landmarks = np.zeros((3, 68, 2), dtype=np.float32)
    landmarks[:, :, 0] = np.linspace(100, 140, 68)  # 40 wide
    landmarks[:, :, 1] = np.linspace(200, 220, 68)  # 20 high
    boxes = face_boxes(landmarks, 1000, 1000, margin=0.25)
    assert boxes.tolist() == [[90, 180, 60, 60]] * 3


def test_face_boxes_are_clamped_into_the_image():
    landmarks = np.zeros((2, 68, 2), dtype=np.float32)
    landmarks[:, :, 0] = np.linspace(-10, 30, 68)
    landmarks[:, :, 1] = np.linspace(70, 110, 68)
    boxes = face_boxes(landmarks, 100, 100, margin=0.5)
    assert boxes.tolist() == [[0, 20, 80, 80]] * 2
    assert face_boxes(landmarks, 50, 100, margin=0.5).tolist() == [[0, 50, 50, 50]] * 2


def test_face_boxes_smooth_jitter():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 40, size=(1, 68, 2)).astype(np.float32) + 200
    jitter = np.where(np.arange(60) % 2, 4.0, -4.0).astype(np.float32)
    landmarks = base + jitter[:, None, None]
    raw = face_boxes(landmarks, 1000, 1000, smoothing=1)
    smoothed = face_boxes(landmarks, 1000, 1000, smoothing=5)
    assert np.abs(np.diff(raw[:, 0])).max() == 8
    assert np.abs(np.diff(smoothed[2:-2, 0])).max() <= 2


def test_face_boxes_fill_failed_frames_from_the_nearest_detection(repo_root: Path):
    landmarks, _ = truth(repo_root, "synth_00")
    holes = landmarks.copy()
    holes[:3] = holes[10:15] = holes[-2:] = np.nan
    filled = landmarks.copy()
    filled[:3] = landmarks[3]
    filled[10:13], filled[13:15] = landmarks[9], landmarks[15]  # frame 12 is as near to 9 as to 15: the earlier wins
    filled[-2:] = landmarks[-3]
    assert np.array_equal(face_boxes(holes, SYNTH_SIZE, SYNTH_SIZE), face_boxes(filled, SYNTH_SIZE, SYNTH_SIZE))


def test_face_boxes_reject_a_clip_without_any_face():
    with pytest.raises(NoFaceError, match="no face"):
        face_boxes(np.full((4, 68, 2), np.nan, dtype=np.float32), 100, 100)


def test_load_clip_arrays_names_a_clip_without_a_face(clip_root: Path):
    class Blind:
        def detect(self, frame: np.ndarray) -> list[np.ndarray]:
            return []

    with pytest.raises(NoFaceError, match="synth_04"):
        load_clip_arrays(clip_root, "synth_04", Blind(), FACE_SIZE)


def test_clip_set_has_one_lower_face_and_mel_window_per_frame(clip_root: Path, synthetic_clips: list[ClipArrays]):
    manifest = read_manifest(clip_root)
    assert [clip.clip_id for clip in synthetic_clips] == manifest["clip_id"].tolist()
    for clip, frames in zip(synthetic_clips, manifest["frames"], strict=True):
        assert clip.lower_faces.shape == (frames, FACE_SIZE // 2, FACE_SIZE, 3)
        assert clip.lower_faces.dtype == np.uint8
        assert clip.mel.shape == (frames, 80, 16) and clip.mel.dtype == np.float32
    audio = read_audio(clip_root / "clips" / "synth_00.mp4")
    np.testing.assert_array_equal(synthetic_clips[0].mel, log_mel_windows(audio, synthetic_clips[0].n_frames))


def test_lower_faces_show_the_mouth_move(repo_root: Path, synthetic_clips: list[ClipArrays]):
    """Between the frame of widest mouth and the nearest closed one, the crops change mostly where the mouth is."""
    for clip in synthetic_clips:
        landmarks, aperture = truth(repo_root, clip.clip_id)
        widest, closed_frames = aperture.argmax(), np.flatnonzero(aperture < 0.05)
        closed = closed_frames[np.abs(closed_frames - widest).argmin()]
        assert aperture[widest] > 0.9
        box = face_boxes(landmarks, SYNTH_SIZE, SYNTH_SIZE)[widest]
        mouth = (landmarks[widest, MOUTH] - box[:2]) * FACE_SIZE / box[2] - (0, FACE_SIZE // 2)
        assert (mouth[:, 1] > 0).all(), f"{clip.clip_id}: the mouth is not in the lower half of the crop"
        (left, top), (right, bottom) = np.floor(mouth.min(axis=0)).astype(int), np.ceil(mouth.max(axis=0)).astype(int)
        change = np.abs(clip.lower_faces[widest].astype(float) - clip.lower_faces[closed]).mean(axis=2)
        in_mouth = np.zeros(change.shape, dtype=bool)
        in_mouth[top : bottom + 1, left : right + 1] = True
        assert change[in_mouth].mean() > 2.5 * change[~in_mouth].mean(), clip.clip_id  # 3.4 to 5.3 on the sample


def test_fingerprint_covers_ids_order_and_bytes():
    clips = toy_clips([20, 30])
    reference = fingerprint(clips)
    assert len(reference) == 64 and fingerprint(toy_clips([20, 30])) == reference
    assert fingerprint(clips[::-1]) != reference
    renamed = ClipArrays("other", clips[0].lower_faces, clips[0].mel)
    assert fingerprint([renamed, clips[1]]) != reference
    mel = clips[1].mel.copy()
    mel[7, 3, 2] += 1
    assert fingerprint([clips[0], ClipArrays(clips[1].clip_id, clips[1].lower_faces, mel)]) != reference


def test_saved_clip_arrays_read_back_identical(tmp_path: Path):
    clips = toy_clips([20, 30])
    assert save_clip_arrays(tmp_path / "sync", clips) == fingerprint(clips)
    restored = read_clip_arrays(tmp_path / "sync")
    assert [clip.clip_id for clip in restored] == ["toy_0", "toy_1"]
    for saved, read in zip(clips, restored, strict=True):
        np.testing.assert_array_equal(saved.lower_faces, read.lower_faces)
        np.testing.assert_array_equal(saved.mel, read.mel)
    np.save(tmp_path / "sync" / "toy_1.mel.npy", np.zeros_like(clips[1].mel))
    with pytest.raises(ValueError, match="fingerprint"):
        read_clip_arrays(tmp_path / "sync")


def test_clip_arrays_reject_misaligned_arrays():
    clip = toy_clips([20])[0]
    with pytest.raises(ValueError, match="per frame"):
        ClipArrays("bad", clip.lower_faces, clip.mel[:-1])


def test_split_clips_holds_out_the_last_clips():
    clips = toy_clips([20, 21, 22])
    train, held_out = split_clips(clips, 1)
    assert [c.clip_id for c in train] == ["toy_0", "toy_1"] and [c.clip_id for c in held_out] == ["toy_2"]
    for bad in (0, 3):
        with pytest.raises(ValueError, match="hold out"):
            split_clips(clips, bad)


def test_sample_batch_gathers_what_its_index_says():
    clips = toy_clips([20, 37, 25])
    batch = sample_batch(clips, 64, np.random.default_rng(1), min_offset=5)
    clip_index, start, mel_frame, reference_start = batch.index.T
    assert batch.faces.shape == batch.reference.shape == (64, 15, 4, 8)
    assert batch.mel.shape == (64, 1, 80, 16) and batch.target_mels.shape == (64, 5, 1, 80, 16)
    assert batch.faces.dtype == torch.float32 and 0 <= batch.faces.min() and batch.faces.max() <= 1
    faces, references = (np.rint(pixels.numpy() * 255) for pixels in (batch.faces, batch.reference))
    for item, (clip, t, m, r) in enumerate(zip(clip_index, start, mel_frame, reference_start, strict=True)):
        frames = clips[clip].lower_faces
        assert 0 <= t and t + SYNC_FRAMES <= len(frames)
        for k in range(SYNC_FRAMES):  # frame t + k fills channels 3k..3k+2, as RGB
            np.testing.assert_array_equal(faces[item, 3 * k : 3 * k + 3], frames[t + k].transpose(2, 0, 1))
            np.testing.assert_array_equal(references[item, 3 * k : 3 * k + 3], frames[r + k].transpose(2, 0, 1))
        np.testing.assert_array_equal(batch.mel[item, 0], clips[clip].mel[m])
        np.testing.assert_array_equal(batch.target_mels[item, :, 0], clips[clip].mel[t : t + SYNC_FRAMES])


def test_sample_batch_balances_sync_and_off_sync():
    clips = toy_clips([20, 37, 25])
    batch = sample_batch(clips, 200, np.random.default_rng(2), min_offset=5)
    clip_index, start, mel_frame, reference_start = batch.index.T
    in_sync = batch.label.numpy() == 1
    assert batch.label.tolist() == [1.0] * 100 + [0.0] * 100
    assert np.array_equal(mel_frame[in_sync], start[in_sync] + 2)
    offset = mel_frame[~in_sync] - (start[~in_sync] + 2)
    assert (np.abs(offset) >= 5).all() and (offset > 0).any() and (offset < 0).any()
    lengths = np.array([20, 37, 25])[clip_index]
    assert (mel_frame >= 0).all() and (mel_frame < lengths).all()
    assert (np.abs(reference_start - start) >= SYNC_FRAMES).all()
    assert (reference_start >= 0).all() and (reference_start + SYNC_FRAMES <= lengths).all()


def test_sample_batch_weighs_clips_by_their_starts_and_reaches_every_start():
    clips = toy_clips([20, 100])
    index = sample_batch(clips, 4000, np.random.default_rng(3), min_offset=5).index
    share_of_short = np.mean(index[:, 0] == 0)
    assert share_of_short == pytest.approx(16 / (16 + 96), abs=0.03)
    assert set(index[index[:, 0] == 0, 1]) == set(range(16))
    assert index[:, 1].max() == 95


def test_sample_batch_is_deterministic_given_the_seed():
    clips = toy_clips([20, 37, 25])
    first, again = (sample_batch(clips, 16, np.random.default_rng(7)) for _ in range(2))
    other = sample_batch(clips, 16, np.random.default_rng(8))
    assert np.array_equal(first.index, again.index) and not np.array_equal(first.index, other.index)
    for name in ("faces", "mel", "label", "reference", "target_mels"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name


def test_sample_batch_rejects_clips_too_short_for_off_sync_windows():
    assert min_clip_frames(5) == 15 and min_clip_frames(1) == 14
    sample_batch(toy_clips([15, 40]), 64, np.random.default_rng(0), min_offset=5)
    with pytest.raises(ValueError, match="toy_0"):
        sample_batch(toy_clips([14, 40]), 8, np.random.default_rng(0), min_offset=5)
    with pytest.raises(ValueError, match="toy_1"):
        sample_batch(toy_clips([40, 20]), 8, np.random.default_rng(0), min_offset=8)


def test_sample_batch_needs_an_even_batch():
    with pytest.raises(ValueError, match="even"):
        sample_batch(toy_clips([40]), 7, np.random.default_rng(0))


def test_sample_batch_draws_from_the_synthetic_clip_set(synthetic_clips: list[ClipArrays]):
    batch = sample_batch(synthetic_clips, 8, np.random.default_rng(0))
    assert batch.faces.shape == (8, 15, FACE_SIZE // 2, FACE_SIZE)
    for item, (clip, t, m, _) in enumerate(batch.index):
        assert m == t + 2 if batch.label[item] == 1 else abs(m - (t + 2)) >= 5
        np.testing.assert_array_equal(batch.mel[item, 0], synthetic_clips[clip].mel[m])
        np.testing.assert_array_equal(batch.target_mels[item, 2, 0], synthetic_clips[clip].mel[t + 2])


def test_real_hdtf_clip_crops_hold_the_mouth(shared_dir: Path, tmp_path: Path, detector):
    source = shared_dir / "data" / "hdtf_clips" / "RD_Radio10_0_clip_0_29.97fps.mp4"
    if not source.is_file():
        pytest.skip(f"{source} is absent")
    clip_id = source.stem
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / source.name).symlink_to(source)
    clip = load_clip_arrays(tmp_path, clip_id, detector, 96)
    frames = read_video(source)
    assert clip.lower_faces.shape == (len(frames), 48, 96, 3) and clip.mel.shape == (len(frames), 80, 16)
    landmarks, _, found = detect_sequence(detector, frames)
    assert found.all()
    height, width = frames.shape[1:3]
    boxes = face_boxes(landmarks, width, height)
    assert_boxes_hold(boxes, landmarks[:, MOUTH], width, height)
    assert (landmarks[:, MOUTH, 1] > (boxes[:, 1] + boxes[:, 3] / 2)[:, None]).all()
