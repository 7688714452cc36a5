"""Tests for damc_core.hdtf.filtering: cutting and cropping clips, their statistics, the filters and the clip set."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from damc_core import clipset
from damc_core.face.landmarks import make_detector
from damc_core.hdtf import filtering
from damc_core.hdtf.filtering import (
    ClipSource,
    FaceCrop,
    FilterThresholds,
    FixedCrop,
    clip_statistics,
    cut_clip,
    decide,
    face_crop_box,
    filter_clips,
    filter_report,
    scale_box,
    sources_from_clips,
    sources_from_metadata,
    speech_ratio,
)
from damc_core.hdtf.metadata import ClipSpec, read_metadata
from damc_core.media import (
    AUDIO_SAMPLE_RATE,
    VIDEO_FPS,
    MediaError,
    count_video_frames,
    iter_video_frames,
    probe,
    read_video,
)
from damc_core.tools import ToolError, run_tool

SIZE = 256
# The defaults are for 512x512 clips: the face-size threshold scales with the clip; short synthetic clips are kept.
THRESHOLDS = dataclasses.replace(FilterThresholds(), min_face_size_px=64.0, min_duration_s=1.0)
REAL_CLIPS = ("RD_Radio10_0_clip_0_29.97fps", "RD_Radio2_000", "RD_Radio34_000", "WDA_EdMarkey0_000",
              "WDA_KatieHill_000")
FAST_H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-crf", "12", "-pix_fmt", "yuv420p", "-c:a", "aac")


def ffmpeg(*args: str | Path) -> None:
    """Run ffmpeg quietly, overwriting outputs."""
    run_tool(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args])


@pytest.fixture(scope="module")
def clips_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "hdtf_clips"


@pytest.fixture(scope="module")
def detect() -> Iterator[filtering.Detector]:
    with make_detector("mediapipe", max_faces=2, video=False) as detector:
        yield detector.detect


@pytest.fixture(scope="module")
def real_set(clips_dir, detect, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The five real clips filtered into a clip set at 256x256."""
    root = tmp_path_factory.mktemp("real_set")
    return root, filter_clips(sources_from_clips(clips_dir), root, detect, THRESHOLDS, size=SIZE)


def synthetic_inputs(clips_dir: Path, folder: Path) -> dict[str, Path]:
    """Source videos that each fail one filter, named by the reason they should be rejected for."""
    talker, other = clips_dir / "RD_Radio34_000.mp4", clips_dir / "WDA_KatieHill_000.mp4"
    inputs = {
        "no face": ["-f", "lavfi", "-i", "testsrc2=size=256x256:rate=25:duration=2",
                    "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=2"],
        "multiple faces": ["-t", "2", "-i", talker, "-filter_complex",
                           "[0:v]split[a][b];[a][b]hstack,scale=256:128,pad=256:256:0:64[v]", "-map", "[v]",
                           "-map", "0:a"],
        "face too small": ["-t", "2", "-i", talker, "-vf", "scale=64:64,pad=256:256:96:96"],
        "rapid head motion": ["-t", "2", "-i", talker,
                              "-vf", "crop=384:384:'64+64*sin(2*PI*1.5*t)':64,scale=256:256"],
        "too little speech": ["-t", "2", "-i", talker, "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                              "-map", "0:v", "-map", "1:a", "-shortest", "-vf", "scale=256:256"],
        "scene cut": ["-t", "1.5", "-i", talker, "-t", "1.5", "-i", other, "-filter_complex",
                      "[0:v][0:a][1:v][1:a]concat=n=2:v=1:a=1[v][a];[v]scale=256:256[s]", "-map", "[s]",
                      "-map", "[a]"],
        "too short": ["-t", "0.6", "-i", talker, "-vf", "scale=256:256"],
    }
    paths = {}
    for reason, args in inputs.items():
        paths[reason] = folder / f"{reason.replace(' ', '_')}.mp4"
        ffmpeg(*args, *FAST_H264, paths[reason])
    return paths


@pytest.fixture(scope="module")
def rejected_set(clips_dir, detect, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Synthetic clips that should each be rejected, plus a file that is not a video."""
    inputs = synthetic_inputs(clips_dir, tmp_path_factory.mktemp("synthetic"))
    unreadable = tmp_path_factory.mktemp("broken") / "broken.mp4"
    unreadable.write_bytes(b"not a video at all")
    sources = [(reason, "synthetic", path, 0.0, None) for reason, path in inputs.items()]
    sources.append(("unreadable", "broken", unreadable, 0.0, 8.0))
    root = tmp_path_factory.mktemp("rejected_set")
    return root, filter_clips(sources, root, detect, THRESHOLDS, size=SIZE)


def test_real_clips_are_all_kept(real_set):
    root, manifest = real_set
    assert manifest["clip_id"].tolist() == list(REAL_CLIPS)
    assert manifest["kept"].all() and (manifest["reason"] == "").all()
    assert clipset.read_manifest(root)["clip_id"].tolist() == list(REAL_CLIPS)


def test_real_clips_are_normalised(real_set):
    root, manifest = real_set
    for row in manifest.itertuples():
        info = probe(clipset.clip_path(root, row.clip_id))
        assert (info.video.width, info.video.height, info.video.fps) == (SIZE, SIZE, VIDEO_FPS)
        assert (info.audio.sample_rate, info.audio.channels, info.audio.codec) == (AUDIO_SAMPLE_RATE, 1, "aac")
        assert count_video_frames(info.path) == row.frames == round(row.duration_s * VIDEO_FPS)


def test_29_97_fps_clip_comes_out_at_25_fps_with_its_duration(real_set, clips_dir):
    root, manifest = real_set
    source = probe(clips_dir / "RD_Radio10_0_clip_0_29.97fps.mp4")
    assert source.video.fps == pytest.approx(29.97, abs=0.01)
    source_duration = source.video.n_frames / source.video.fps
    row = manifest.set_index("clip_id").loc["RD_Radio10_0_clip_0_29.97fps"]
    assert row.frames == round(source_duration * VIDEO_FPS) == 52
    assert row.duration_s == pytest.approx(source_duration, abs=1 / VIDEO_FPS)


def test_real_clip_statistics_are_plausible(real_set):
    _, manifest = real_set
    assert manifest["face_fraction"].eq(1.0).all() and manifest["multi_face_fraction"].eq(0.0).all()
    assert manifest["face_size_px"].between(0.4 * SIZE, 0.6 * SIZE).all()
    assert manifest["head_motion"].between(0.002, THRESHOLDS.max_head_motion / 1.5).all()
    assert manifest["speech_ratio"].between(0.7, 1.0).all()
    assert (manifest["scene_cut_score"] < THRESHOLDS.max_scene_cut_score / 1.5).all()


def test_manifest_on_disk_matches_the_returned_rows(rejected_set):
    root, manifest = rejected_set
    on_disk = clipset.read_manifest(root, kept_only=False)
    assert list(on_disk.columns) == list(clipset.MANIFEST_COLUMNS)
    pd.testing.assert_frame_equal(on_disk, manifest[list(clipset.MANIFEST_COLUMNS)], atol=1e-4, check_dtype=False)


@pytest.mark.parametrize("reason", ["no face", "multiple faces", "face too small", "rapid head motion",
                                    "too little speech", "scene cut", "too short"])
def test_synthetic_clips_are_rejected_for_the_right_reason(rejected_set, reason):
    root, manifest = rejected_set
    row = manifest.set_index("clip_id").loc[reason]
    assert (row.kept, row.reason) == (False, reason)
    assert not clipset.clip_path(root, reason).exists()


def test_unreadable_source_becomes_a_rejected_row(rejected_set):
    root, manifest = rejected_set
    row = manifest.set_index("clip_id").loc["unreadable"]
    assert not row.kept
    assert row.reason.startswith("unreadable: ") and "broken.mp4" in row.reason and "\n" not in row.reason
    assert (row.frames, row.duration_s, row.face_size_px) == (0, 0.0, 0.0)
    assert sorted(path.name for path in root.iterdir()) == ["manifest.csv"]


def test_filter_report_of_a_run(rejected_set, real_set):
    manifest = pd.concat([real_set[1], rejected_set[1]])
    report = filter_report(manifest)
    assert report["clips"] == 13 and report["kept"] == 5
    assert report["rejected"] == {reason: 1 for reason in ["face too small", "multiple faces", "no face",
                                                           "rapid head motion", "scene cut", "too little speech",
                                                           "too short", "unreadable"]}
    assert report["hours_kept"] == pytest.approx((4 * 8.0 + 2.08) / 3600)
    assert report["hours_total"] == pytest.approx(manifest.eval("end_s - start_s").sum() / 3600)


def test_filter_report_when_every_clip_is_kept(real_set):
    report = filter_report(real_set[1])
    assert (report["clips"], report["kept"], report["rejected"]) == (5, 5, {})


def test_a_clip_rejected_on_a_rerun_leaves_the_clip_set(clips_dir, detect, tmp_path):
    source = [("clip", "real", clips_dir / "RD_Radio10_0_clip_0_29.97fps.mp4", 0.0, None)]
    assert filter_clips(source, tmp_path, detect, THRESHOLDS, size=SIZE)["kept"].all()
    strict = dataclasses.replace(THRESHOLDS, min_duration_s=5.0)
    assert filter_clips(source, tmp_path, detect, strict, size=SIZE)["reason"].tolist() == ["too short"]
    assert not clipset.clip_path(tmp_path, "clip").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clips", "manifest.csv"]


@pytest.fixture(scope="module")
def raw_metadata_run(clips_dir, detect, tmp_path_factory) -> dict:
    """A 16:9 raw video "Radio99" (two real clips, 4 s each, side-padded), metadata cutting one clip from each half
    (the first by a crop_wh row given at 720p, the second, without crop rows, from landmarks), and a missing video."""
    raw = tmp_path_factory.mktemp("raw")
    ffmpeg("-t", "4", "-i", clips_dir / "RD_Radio2_000.mp4", "-t", "4", "-i", clips_dir / "RD_Radio34_000.mp4",
           "-filter_complex", "[0:v][0:a][1:v][1:a]concat=n=2:v=1:a=1[v][a];[v]scale=360:360,pad=640:360:140:0[p]",
           "-map", "[p]", "-map", "[a]", *FAST_H264, raw / "Radio99.mp4")
    metadata = tmp_path_factory.mktemp("metadata")
    for kind, text in {
        "video_url": "Radio99 https://www.youtube.com/watch?v=AAAAAAAAAAA&t=6s\n"
                     "Radio98 https://www.youtube.com/watch?v=BBBBBBBBBBB\n",
        "annotion_time": "Radio99.mp4 00:01-00:03 00:05-00:07\nRadio98.mp4 00:00-00:10\n",
        "resolution": "Radio99.mp4 720\nRadio98.mp4 720\n",
        "crop_wh": "Radio99_0.mp4 280 720 0 720\nRadio98_0.mp4 0 720 0 720\n",
        "crop_ratio": "Radio99_0.mp4 1.2\nRadio98_0.mp4 1.2\n",
    }.items():
        (metadata / f"RD_{kind}.txt").write_text(text, encoding="utf-8")
    specs, problems = read_metadata(metadata)
    sources, missing = sources_from_metadata(specs, raw)
    root = tmp_path_factory.mktemp("from_metadata")
    manifest = filter_clips(sources, root, detect, THRESHOLDS, size=SIZE)
    return {"root": root, "manifest": manifest, "sources": sources, "missing": missing, "problems": problems}


def test_metadata_driven_cutting(raw_metadata_run):
    manifest = raw_metadata_run["manifest"]
    assert raw_metadata_run["problems"] == ["RD Radio99_1: no crop_wh row", "RD Radio99_1: no crop_ratio row"]
    assert manifest["clip_id"].tolist() == ["RD_Radio99_000", "RD_Radio99_001"]
    assert manifest["source"].tolist() == ["RD_Radio99", "RD_Radio99"]
    assert manifest[["start_s", "end_s"]].values.tolist() == [[1.0, 3.0], [5.0, 7.0]]
    assert manifest["kept"].all()
    assert manifest["frames"].tolist() == [50, 50]
    for clip_id in manifest["clip_id"]:
        info = probe(clipset.clip_path(raw_metadata_run["root"], clip_id))
        assert (info.video.width, info.video.height, info.audio.sample_rate) == (SIZE, SIZE, AUDIO_SAMPLE_RATE)


def test_missing_raw_videos_are_reported(raw_metadata_run):
    assert [spec.clip_id for spec in raw_metadata_run["missing"]] == ["RD_Radio98_000"]
    assert [source.crop for source in raw_metadata_run["sources"]] == [FixedCrop((280, 0, 720, 720), 720),
                                                                       FaceCrop(1.2)]


def test_crop_wh_window_is_scaled_to_the_raw_video(raw_metadata_run, clips_dir):
    """The 720p window (280, 0, 720, 720) is (140, 0, 360, 360) in the 360p raw video: exactly the padded clip."""
    cut = read_video(clipset.clip_path(raw_metadata_run["root"], "RD_Radio99_000"))
    original = list(iter_video_frames(clips_dir / "RD_Radio2_000.mp4", size=(SIZE, SIZE)))[25:75]
    difference = np.abs(cut.astype(np.float64) - np.stack(original)).mean(axis=(1, 2, 3))
    assert difference.max() < 6.0
    shifted = np.abs(cut[0, :, 8:].astype(np.float64) - original[0][:, :-8]).mean()
    assert shifted > 2 * difference[0]


def test_clip_without_crop_rows_is_cropped_around_the_face(raw_metadata_run, detect):
    manifest = raw_metadata_run["manifest"].set_index("clip_id")
    frame = next(iter_video_frames(clipset.clip_path(raw_metadata_run["root"], "RD_Radio99_001")))
    (face,) = detect(frame)
    centre = (face.min(axis=0) + face.max(axis=0)) / 2
    assert np.abs(centre - SIZE / 2).max() < 0.1 * SIZE
    face_width = manifest.loc["RD_Radio99_001", "face_size_px"]
    assert 0.6 * SIZE < face_width <= SIZE / 1.2
    assert face_width > manifest.loc["RD_Radio99_000", "face_size_px"]


def test_cut_clip_is_byte_deterministic(clips_dir, tmp_path):
    source = clips_dir / "RD_Radio10_0_clip_0_29.97fps.mp4"
    for name in ("a.mp4", "b.mp4"):
        cut_clip(source, 0.5, 1.5, tmp_path / name, crop_box=(100, 50, 300, 300), size=128)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    info = probe(tmp_path / "a.mp4")
    assert (info.video.width, info.video.height, count_video_frames(info.path)) == (128, 128, 25)


def test_cut_clip_replaces_its_output_only_on_success(clips_dir, tmp_path, monkeypatch):
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"previous clip")

    def failing_ffmpeg(command, **_):
        Path(command[-1]).write_bytes(b"half a clip")
        raise ToolError("ffmpeg failed")

    monkeypatch.setattr(filtering, "run_tool", failing_ffmpeg)
    with pytest.raises(ToolError):
        cut_clip(clips_dir / "RD_Radio2_000.mp4", 0.0, 1.0, out, crop_box=None, size=SIZE)
    assert out.read_bytes() == b"previous clip"
    assert [path.name for path in tmp_path.iterdir()] == ["clip.mp4"]


def test_cut_clip_errors_name_the_file(clips_dir, tmp_path):
    source = clips_dir / "RD_Radio2_000.mp4"
    wide = tmp_path / "wide.mp4"
    ffmpeg("-t", "0.5", "-i", source, "-vf", "scale=128:64", *FAST_H264, wide)
    silent = tmp_path / "silent.mp4"
    ffmpeg("-t", "0.5", "-i", source, "-an", *FAST_H264, silent)
    cases = [
        (tmp_path / "absent.mp4", 0.0, 1.0, None, "absent.mp4"),
        (wide, 0.0, 0.5, None, "not square"),
        (source, 0.0, 1.0, (400, 0, 200, 200), "does not fit"),
        (source, 9.0, 10.0, None, "only 8"),
        (source, 2.0, 1.0, None, "empty"),
        (silent, 0.0, 0.5, None, "video and an audio stream"),
    ]
    for video, start_s, end_s, box, message in cases:
        with pytest.raises(MediaError, match=message) as error:
            cut_clip(video, start_s, end_s, tmp_path / "out.mp4", crop_box=box, size=SIZE)
        assert video.name in str(error.value)
    with pytest.raises(ValueError, match="even"):
        cut_clip(source, 0.0, 1.0, tmp_path / "out.mp4", crop_box=None, size=255)


def test_clip_statistics_of_a_clip_without_any_face(tmp_path, detect):
    clip = tmp_path / "noise.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=128x128:rate=25:duration=1", "-f", "lavfi", "-i",
           "anoisesrc=d=1:r=16000:a=0.3", *FAST_H264, clip)
    stats = clip_statistics(clip, detect, 1)
    assert (stats["frames"], stats["face_fraction"], stats["multi_face_fraction"]) == (25, 0.0, 0.0)
    assert math.isnan(stats["face_size_px"]) and math.isnan(stats["head_motion"])
    assert stats["speech_ratio"] == pytest.approx(1.0)
    assert decide(stats, THRESHOLDS) == (False, "no face")


def test_head_motion_is_the_median_rigid_speed_per_frame_over_the_face_width():
    face = np.stack([np.linspace(0, 40, 68), np.linspace(0, 20, 68)], axis=1)  # 40 px wide
    shifts = np.array([0.0, 2.0, 6.0, 20.0])
    landmarks = face + shifts[:, None, None] * [1.0, 0.0]
    assert clipset.face_size(landmarks) == pytest.approx(40.0)
    assert clipset.head_motion(landmarks) == pytest.approx(4.0 / 40.0)  # speeds 2, 4, 14 px per frame
    assert clipset.head_motion(landmarks, [0, 1, 3, 4]) == pytest.approx(2.0 / 40.0)  # speeds 2, 2, 14
    moved_jaw = landmarks.copy()
    moved_jaw[1:, :17, 1] += 5.0  # the jaw drops: not a rigid point, no head motion
    assert clipset.head_motion(moved_jaw) == pytest.approx(4.0 / 40.0)
    assert math.isnan(clipset.head_motion(landmarks[:1])) and math.isnan(clipset.face_size(landmarks[:0]))


def test_clip_statistics_measure_head_motion_between_analysed_frames(tmp_path):
    """A detector reporting a face that slides 2 px per frame: the speed is 2 px / frame at any sampling."""
    clip = tmp_path / "plain.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=gray:size=64x64:rate=25:duration=2", "-f", "lavfi", "-i",
           "sine=frequency=300:sample_rate=16000:duration=2", *FAST_H264, clip)
    face = np.stack([np.linspace(0, 40, 68), np.linspace(0, 20, 68)], axis=1)
    for sample_every in (1, 5):
        calls = itertools.count()

        def sliding_face(frame: np.ndarray, calls=calls, step=2.0 * sample_every) -> list[np.ndarray]:
            return [face + [step * next(calls), 0.0]]

        stats = clip_statistics(clip, sliding_face, sample_every)
        assert stats["face_size_px"] == pytest.approx(40.0)
        assert stats["head_motion"] == pytest.approx(2.0 / 40.0)
        assert stats["scene_cut_score"] < 0.01


def test_speech_ratio_counts_frames_near_the_loud_level():
    frame = AUDIO_SAMPLE_RATE // VIDEO_FPS
    time = np.arange(100 * frame) / AUDIO_SAMPLE_RATE
    tone = 0.5 * np.sin(2 * np.pi * 200 * time)
    quiet = np.where(np.arange(tone.size) < 40 * frame, tone, tone * 10 ** (-40 / 20))
    assert speech_ratio(quiet) == pytest.approx(0.4)
    assert speech_ratio(tone * 10 ** (-20 / 20)) == pytest.approx(1.0)
    assert speech_ratio(tone * 10 ** (-70 / 20)) == 0.0
    assert speech_ratio(np.zeros(50 * frame)) == 0.0
    assert speech_ratio(np.zeros(frame - 1)) == 0.0


def test_decide_reports_the_first_failed_check():
    kept = {"duration_s": 8.0, "face_fraction": 1.0, "multi_face_fraction": 0.0, "face_size_px": 200.0,
            "head_motion": 0.01, "scene_cut_score": 0.1, "speech_ratio": 0.8}
    thresholds = FilterThresholds()
    assert decide(kept, thresholds) == (True, "")
    failures = [("duration_s", 1.0, "too short"), ("multi_face_fraction", 0.5, "multiple faces"),
                ("face_fraction", 0.5, "no face"), ("face_size_px", 100.0, "face too small"),
                ("head_motion", 0.05, "rapid head motion"), ("scene_cut_score", 0.6, "scene cut"),
                ("speech_ratio", 0.1, "too little speech")]
    stats = dict(kept)
    for key, value, reason in reversed(failures):
        stats[key] = value
        assert decide(stats, thresholds) == (False, reason)
    assert decide({**kept, "head_motion": math.nan}, thresholds) == (False, "rapid head motion")


def test_thresholds_reject_a_sampling_step_below_one():
    with pytest.raises(ValueError, match="sample_every"):
        FilterThresholds(sample_every=0)


def test_face_crop_box_squares_and_enlarges_the_union_of_face_boxes():
    first = np.stack([np.linspace(100, 180, 68), np.linspace(200, 300, 68)], axis=1)
    second = first + [20, -10]
    landmarks = np.stack([first, np.full((68, 2), np.nan), second])
    # union: x 100..200, y 190..300 -> centre (150, 245), side 110 * 1.2 = 132
    assert face_crop_box(landmarks, 640, 360, 1.2) == (84, 179, 132, 132)
    assert face_crop_box(landmarks, 640, 360, 4.0) == (0, 0, 360, 360)
    assert face_crop_box(landmarks + [450, 0], 640, 360, 1.2) == (508, 179, 132, 132)
    assert face_crop_box(np.zeros((0, 68, 2)), 640, 360, 1.2) == (140, 0, 360, 360)


def test_scale_box_scales_then_fits_the_frame():
    assert scale_box((280, 10, 600, 600), 720, 640, 360) == (140, 5, 300, 300)
    assert scale_box((280, 10, 720, 720), 720, 640, 360) == (140, 0, 360, 360)
    assert scale_box((280, 10, 720, 720), None, 1280, 720) == (280, 0, 720, 720)
    assert scale_box((178, 0, 872, 872), 720, 1280, 720) == (254, 0, 720, 720)
    assert scale_box((100, 100, 200, 100), 720, 1920, 1080) == (150, 150, 300, 150)


def test_sources_from_clips_take_each_whole_clip(clips_dir):
    sources = sources_from_clips(clips_dir)
    assert [source.clip_id for source in sources] == list(REAL_CLIPS)
    assert all(source.start_s == 0.0 and source.end_s is None and source.crop is None for source in sources)
    assert sources[1].video == clips_dir / "RD_Radio2_000.mp4"


def test_sources_from_metadata_find_raw_videos_by_name_or_key(tmp_path):
    def spec(name: str, crop_wh=None, ratio=None) -> ClipSpec:
        return ClipSpec("RD", name, 0, None, 1.0, 9.0, 720, crop_wh, ratio)

    for file in ("One.mkv", "RD_Two.webm", "Four.txt"):
        (tmp_path / file).touch()
    specs = [spec("One", (1, 300, 2, 300)), spec("Two", ratio=0.9), spec("Three"), spec("Four")]
    sources, missing = sources_from_metadata(specs, tmp_path)
    assert sources == [
        ClipSource("RD_One_000", "RD_One", tmp_path / "One.mkv", 1.0, 9.0, FixedCrop((1, 2, 300, 300), 720)),
        ClipSource("RD_Two_000", "RD_Two", tmp_path / "RD_Two.webm", 1.0, 9.0, FaceCrop(0.9)),
    ]
    assert missing == specs[2:]
