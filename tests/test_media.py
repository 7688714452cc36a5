"""Tests for damc_core.media: probing, decoding and encoding video at 25 fps and audio at 16 kHz."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from damc_core.media import (
    AUDIO_SAMPLE_RATE,
    VIDEO_FPS,
    MediaError,
    iter_video_frames,
    probe,
    read_audio,
    read_video,
    write_audio,
    write_video,
)
from damc_core.tools import run_tool

SAMPLES_PER_FRAME = AUDIO_SAMPLE_RATE // VIDEO_FPS  # 640
TONE_HZ = 440


def ffmpeg(*args: str | Path) -> None:
    """Run ffmpeg quietly, overwriting outputs."""
    run_tool(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args])


def lavfi_video(duration_s: float = 2.0) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size=64x48:rate=30:duration={duration_s}"]


def lavfi_tone(duration_s: float = 2.0) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate=44100:duration={duration_s}"]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def av_mp4(media_dir: Path) -> Path:
    """2 s of 64x48 video at 30 fps with a 440 Hz tone as 44.1 kHz stereo AAC."""
    path = media_dir / "av.mp4"
    ffmpeg(*lavfi_video(), *lavfi_tone(), "-ac", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", path)
    return path


@pytest.fixture(scope="module")
def video_only_mp4(media_dir: Path) -> Path:
    path = media_dir / "video_only.mp4"
    ffmpeg(*lavfi_video(0.4), "-c:v", "libx264", "-pix_fmt", "yuv420p", path)
    return path


@pytest.fixture(scope="module")
def audio_only_wav(media_dir: Path) -> Path:
    path = media_dir / "audio_only.wav"
    ffmpeg(*lavfi_tone(0.5), "-ac", "2", path)
    return path


@pytest.fixture(scope="module")
def mp3_with_cover_art(media_dir: Path) -> Path:
    path = media_dir / "song.mp3"
    ffmpeg(*lavfi_tone(0.5), "-f", "lavfi", "-i", "testsrc2=size=64x48:duration=0.04",
           "-map", "0", "-map", "1", "-c:v", "mjpeg", "-disposition:v", "attached_pic", path)
    return path


def solid_frames(n_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames of one colour each, the colour changing from frame to frame."""
    steps = np.arange(n_frames)[:, None]
    colours = ((np.array([40, 200, 60]) + steps * np.array([20, -15, 10])) % 256).astype(np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (n_frames, height, width, 3)).copy()


def tone(n_samples: int, sample_rate: int = AUDIO_SAMPLE_RATE) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(n_samples) / sample_rate)).astype(np.float32)


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum)) * sample_rate / samples.size


def test_probe_reports_video_and_audio_streams(av_mp4: Path) -> None:
    info = probe(av_mp4)

    assert info.path == av_mp4
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert (info.video.width, info.video.height) == (64, 48)
    assert info.video.fps == pytest.approx(30.0)
    assert info.video.n_frames == 60
    assert info.video.codec == "h264"
    assert (info.audio.sample_rate, info.audio.channels, info.audio.codec) == (44100, 2, "aac")


def test_probe_ignores_cover_art(mp3_with_cover_art: Path) -> None:
    info = probe(mp3_with_cover_art)

    assert info.video is None
    assert info.audio.codec == "mp3"


def test_probe_reports_size_of_rotated_video_as_decoded(av_mp4: Path, tmp_path: Path) -> None:
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-i", av_mp4, "-c", "copy", "-metadata:s:v", "rotate=90", rotated)

    info = probe(rotated)
    frames = read_video(rotated)

    assert (info.video.width, info.video.height) == (48, 64)
    assert frames.shape[1:] == (64, 48, 3)


def test_read_video_converts_30_fps_to_25_fps(av_mp4: Path) -> None:
    frames = read_video(av_mp4)

    assert frames.shape == (50, 48, 64, 3)
    assert frames.dtype == np.uint8
    assert frames.std() > 10  # testsrc2 is a busy pattern, not a blank decode


def test_read_video_scales_to_requested_size(av_mp4: Path) -> None:
    frames = read_video(av_mp4, size=(32, 24))

    assert frames.shape == (50, 24, 32, 3)


def test_iter_video_frames_matches_read_video_and_can_stop_early(av_mp4: Path) -> None:
    frames = iter_video_frames(av_mp4)
    first_three = list(itertools.islice(frames, 3))
    frames.close()

    np.testing.assert_array_equal(np.stack(first_three), read_video(av_mp4)[:3])


def test_read_audio_gives_16k_mono_float32_with_tone_preserved(av_mp4: Path) -> None:
    audio = read_audio(av_mp4)

    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert abs(audio.size - 2 * AUDIO_SAMPLE_RATE) <= 0.005 * AUDIO_SAMPLE_RATE
    assert dominant_frequency(audio, AUDIO_SAMPLE_RATE) == pytest.approx(TONE_HZ, abs=2)


def test_read_audio_resamples_to_requested_rate(audio_only_wav: Path) -> None:
    audio = read_audio(audio_only_wav, sample_rate=8000)

    assert audio.size == 4000
    assert dominant_frequency(audio, 8000) == pytest.approx(TONE_HZ, abs=2)


@pytest.mark.parametrize("reader", [probe, read_audio, read_video])
def test_missing_file_is_reported(reader: Callable[[Path], object], tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="clip.mp4 does not exist"):
        reader(tmp_path / "clip.mp4")


def test_empty_file_is_reported(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()

    with pytest.raises(MediaError, match="empty.mp4 is empty"):
        read_video(empty)


def test_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="is a directory"):
        read_audio(tmp_path)


def test_text_file_is_reported_with_ffprobe_reason(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video at all\n")

    with pytest.raises(MediaError, match="notes.txt is not a media file ffmpeg can read: .*Invalid data"):
        read_video(notes)


@pytest.mark.parametrize("fixture", ["audio_only_wav", "mp3_with_cover_art"])
def test_read_video_of_audio_only_file_says_no_video(fixture: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)

    with pytest.raises(MediaError, match="has no video"):
        read_video(path)


def test_read_audio_of_video_only_file_says_no_audio(video_only_mp4: Path) -> None:
    with pytest.raises(MediaError, match="video_only.mp4 has no audio"):
        read_audio(video_only_mp4)


def test_write_video_round_trip(tmp_path: Path) -> None:
    n_frames = 10
    frames = solid_frames(n_frames)
    path = tmp_path / "out.mp4"

    write_video(path, frames, audio=tone(n_frames * SAMPLES_PER_FRAME))

    info = probe(path)
    assert info.video.fps == VIDEO_FPS
    assert info.video.n_frames == n_frames
    assert (info.audio.sample_rate, info.audio.channels, info.audio.codec) == (AUDIO_SAMPLE_RATE, 1, "aac")
    assert abs(info.audio.duration_s - n_frames / VIDEO_FPS) <= 1 / VIDEO_FPS
    decoded = read_video(path)
    assert decoded.shape == frames.shape
    np.testing.assert_allclose(decoded.mean(axis=(1, 2)), frames.mean(axis=(1, 2)), atol=3)
    audio = read_audio(path)
    assert audio.size == n_frames * SAMPLES_PER_FRAME
    assert dominant_frequency(audio, AUDIO_SAMPLE_RATE) == pytest.approx(TONE_HZ, abs=2)


def test_write_video_accepts_frame_iterable_and_creates_directories(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "silent.mp4"

    write_video(path, iter(solid_frames(5)))

    info = probe(path)
    assert info.video.n_frames == 5
    assert info.audio is None


def test_write_video_is_deterministic(tmp_path: Path) -> None:
    frames = solid_frames(8)
    audio = tone(8 * SAMPLES_PER_FRAME)

    write_video(tmp_path / "a.mp4", frames, audio=audio)
    write_video(tmp_path / "b.mp4", frames, audio=audio)

    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_failed_write_leaves_existing_file_untouched(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")
    # Enough good frames that ffmpeg has opened its output before the bad one arrives.
    frames = [*solid_frames(20), solid_frames(1, height=32, width=32)[0]]

    with pytest.raises(MediaError, match="frame 20 has shape"):
        write_video(target, frames)

    assert target.read_bytes() == b"previous result"
    assert list(tmp_path.iterdir()) == [target]


def test_write_video_rejects_odd_frame_size(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="needs even width and height"):
        write_video(tmp_path / "odd.mp4", solid_frames(2, height=47))


def test_write_video_rejects_non_uint8_frames(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="uint8"):
        write_video(tmp_path / "float.mp4", solid_frames(2).astype(np.float32))


def test_write_video_rejects_no_frames(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no frames"):
        write_video(tmp_path / "none.mp4", [])


def test_write_audio_writes_clipped_16_bit_wav(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"

    write_audio(path, np.array([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=np.float32), AUDIO_SAMPLE_RATE)

    samples, sample_rate = soundfile.read(path, dtype="float32")
    assert soundfile.info(path).subtype == "PCM_16"
    assert sample_rate == AUDIO_SAMPLE_RATE
    np.testing.assert_allclose(samples, [-1.0, -0.5, 0.0, 0.5, 1.0], atol=1e-4)


@pytest.mark.parametrize(
    ("right_of_left", "expected_gain"),
    [(1.0, 1.0), (-1.0, 0.0), (0.0, 0.5)],
    ids=["equal channels", "opposite channels", "one-sided"],
)
def test_stereo_is_downmixed_to_the_mean_of_its_channels(right_of_left, expected_gain, tmp_path: Path) -> None:
    """ffmpeg's `-ac 1` sums the channels at -3 dB each: equal channels came out 1.41x louder and clipped."""
    time = np.arange(AUDIO_SAMPLE_RATE) / AUDIO_SAMPLE_RATE
    left = 0.9 * np.sin(2 * np.pi * 440 * time)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right_of_left * left], axis=1), AUDIO_SAMPLE_RATE, subtype="FLOAT")
    mono = read_audio(path)
    np.testing.assert_allclose(mono, expected_gain * left, atol=1e-6)


def test_a_truncated_file_is_refused(av_mp4: Path, tmp_path: Path) -> None:
    """A file cut off in copying still states its full duration (faststart puts it first): what decodes must agree
    with it. Depending on where the cut falls, ffmpeg decodes less than stated, or fails on the partial packet."""
    faststart = tmp_path / "faststart.mp4"
    ffmpeg("-i", av_mp4, "-c", "copy", "-movflags", "+faststart", faststart)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 3])
    assert probe(truncated).audio.duration_s == pytest.approx(2.0, abs=0.05), "still states the whole duration"
    for read in (read_audio, read_video):
        with pytest.raises(MediaError, match=r"truncated\.mp4 (is truncated or damaged: it states 2\.\d\d s of "
                                             r"(audio|video) but only \d\.\d\d s decodes|\(a damaged or truncated)"):
            read(truncated)
