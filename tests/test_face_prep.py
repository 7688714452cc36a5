"""Face preparation end to end on real videos, and every kind of bad input it must refuse clearly."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from damc_core.config import load_params
from damc_core.face.prep import (
    FacePrepError,
    changed_pixel_fraction,
    check_face_counts,
    content_warnings,
    fill_gaps,
    prepare_subject,
)
from damc_core.media import MediaError
from damc_core.staging import OUTPUT_MARKER
from damc_core.tools import run_tool

FFMPEG = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]


@pytest.fixture(scope="module")
def config(repo_root):
    return load_params(repo_root / "params.yaml").face_prep


@pytest.fixture(scope="module")
def may(shared_dir):
    return shared_dir / "data" / "subjects" / "May_5s.mp4"


def derived_video(tmp_path, name, *args):
    """A video made from others with ffmpeg; `args` are ffmpeg's input and filter arguments."""
    path = tmp_path / name
    run_tool([*FFMPEG, *args, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)])
    return path


def test_real_subject_gives_a_complete_smooth_dataset(tmp_path, may, config):
    subject = prepare_subject(may, tmp_path / "may", config)
    meta = json.loads((tmp_path / "may" / "meta.json").read_text())
    assert meta["frames"] == 125 and meta["frames_interpolated"] == 0, "a landmark on every frame"
    rotations = subject.pose.camera_to_world[:, :3, :3]
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rotations.shape),
                               atol=1e-5)
    steps = np.degrees(np.arccos(np.clip((np.trace(rotations[1:] @ rotations[:-1].transpose(0, 2, 1), axis1=1,
                                                   axis2=2) - 1) / 2, -1, 1)))
    assert steps.max() < 4.0, f"pose jumps by {steps.max():.1f} deg between frames"
    assert subject.pose.reprojection_error_px.mean() < 6.0
    assert len(subject.val_ids) == int(np.ceil(125 * config.val_fraction))
    lms = np.loadtxt(tmp_path / "may" / "ori_imgs" / "10.lms")
    np.testing.assert_allclose(lms, subject.landmarks[10], atol=0.01)


def test_short_detection_gaps_are_interpolated_and_long_ones_refused():
    landmarks = np.random.default_rng(0).random((30, 68, 2)).astype(np.float32)
    gappy = landmarks.copy()
    gappy[10:13] = np.nan
    filled, interpolated = fill_gaps(gappy, max_gap=3, video="v.mp4")
    assert interpolated.sum() == 3
    np.testing.assert_allclose(filled[11], 0.5 * landmarks[9] + 0.5 * landmarks[13], atol=1e-6)
    gappy[20:26] = np.nan
    with pytest.raises(FacePrepError, match=r"face is lost in frames 20-25 of v\.mp4"):
        fill_gaps(gappy, max_gap=3, video="v.mp4")
    with pytest.raises(FacePrepError, match="no face found in any of the 30 frames"):
        fill_gaps(np.full((30, 68, 2), np.nan), max_gap=3, video="v.mp4")


def test_edges_of_a_gap_hold_the_nearest_detection():
    landmarks = np.arange(10 * 68 * 2, dtype=np.float32).reshape(10, 68, 2)
    gappy = landmarks.copy()
    gappy[:2] = np.nan
    gappy[-1] = np.nan
    filled, _ = fill_gaps(gappy, max_gap=2, video="v.mp4")
    np.testing.assert_array_equal(filled[0], landmarks[2])
    np.testing.assert_array_equal(filled[-1], landmarks[-2])


def test_several_faces_too_often_are_refused(config):
    counts = np.ones(100, dtype=int)
    counts[[5, 50]] = 2
    check_face_counts(counts, config, "v.mp4")
    counts[10:30] = 2
    with pytest.raises(FacePrepError, match=r"more than one face in 22 of 100 frames.*first: frame 5"):
        check_face_counts(counts, config, "v.mp4")


def test_video_without_a_face_is_refused(tmp_path, config):
    video = derived_video(tmp_path, "noface.mp4", "-f", "lavfi", "-i", "testsrc2=size=256x256:rate=25:duration=3",
                          "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000:duration=3")
    with pytest.raises(FacePrepError, match="no face found in any of the 75 frames"):
        prepare_subject(video, tmp_path / "out", config)


def test_face_hidden_for_a_stretch_names_the_frames(tmp_path, may, config):
    video = derived_video(tmp_path, "hidden.mp4", "-i", str(may), "-vf",
                          "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(n,40,70)'")
    with pytest.raises(FacePrepError, match=r"face is lost in frames 40-70"):
        prepare_subject(video, tmp_path / "out", config)


def test_two_people_are_refused(tmp_path, may, config):
    video = derived_video(tmp_path, "two.mp4", "-i", str(may), "-filter_complex",
                          "[0:v]scale=256:256,split[a][b];[a][b]hstack", "-t", "3")
    with pytest.raises(FacePrepError, match="more than one face"):
        prepare_subject(video, tmp_path / "out", config)


def test_video_without_audio_is_refused_before_any_work(tmp_path, may, config):
    video = tmp_path / "silent_film.mp4"
    run_tool([*FFMPEG, "-i", str(may), "-an", "-c:v", "copy", str(video)])
    with pytest.raises(FacePrepError, match="has no audio track"):
        prepare_subject(video, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_small_odd_and_short_videos_are_refused(tmp_path, may, config):
    small = derived_video(tmp_path, "small.mp4", "-i", str(may), "-vf", "scale=96:96")
    with pytest.raises(FacePrepError, match=r"is 96x96: smaller than face_prep\.min_size_px"):
        prepare_subject(small, tmp_path / "out", config)
    short = derived_video(tmp_path, "short.mp4", "-i", str(may), "-t", "1")
    with pytest.raises(FacePrepError, match=r"has 25 frames at 25 fps; at least face_prep\.min_frames=50"):
        prepare_subject(short, tmp_path / "out", config)
    with pytest.raises(MediaError, match="does not exist"):
        prepare_subject(tmp_path / "absent.mp4", tmp_path / "out", config)


def test_other_frame_rates_are_resampled_with_a_warning(tmp_path, shared_dir, config):
    clip = shared_dir / "data" / "hdtf_clips" / "RD_Radio10_0_clip_0_29.97fps.mp4"
    relaxed = dataclasses.replace(config, min_frames=25)
    prepare_subject(clip, tmp_path / "out", relaxed)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["frames"] == 52 and any("29.970 fps" in warning for warning in meta["warnings"])


def test_a_failed_run_leaves_the_earlier_output_untouched(tmp_path, may, config):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    (out / OUTPUT_MARKER).write_text("face_prep\n")
    video = derived_video(tmp_path, "noface.mp4", "-f", "lavfi", "-i", "testsrc2=size=256x256:rate=25:duration=3",
                          "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000:duration=3")
    with pytest.raises(FacePrepError):
        prepare_subject(video, out, config)
    assert sorted(path.name for path in out.iterdir()) == [OUTPUT_MARKER, "keep.txt"]
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".out-")], "no staging folder left"


def test_changed_pixel_fraction_ignores_compression_noise():
    frame = np.full((10, 10, 3), 100, np.uint8)
    noisy = frame.copy()
    noisy[0, :, 1] += 8  # at the threshold: noise
    moved = frame.copy()
    moved[:2, :5, 2] = 200
    assert changed_pixel_fraction(frame, noisy) == 0.0
    assert changed_pixel_fraction(frame, moved) == pytest.approx(0.1)


def test_a_still_picture_and_a_face_leaving_the_frame_are_warned_about():
    landmarks = np.full((20, 68, 2), 50.0, np.float32)
    moving = np.full(19, 0.05)
    assert content_warnings("v.mp4", landmarks, moving, 100, 100) == []
    still = content_warnings("v.mp4", landmarks, np.zeros(19), 100, 100)
    assert len(still) == 1 and "still picture looped as a video" in still[0]
    landmarks[[3, 7], 8] = (50.0, 100.5)  # the chin below the bottom edge in two frames
    landmarks[5] = np.nan  # no face: not counted
    cut = content_warnings("v.mp4", landmarks, moving, 100, 100)
    assert len(cut) == 1 and "leave the picture in 2 of 20 frames" in cut[0]
