"""Reads and writes the project's media: video frames at 25 fps, 16 kHz mono audio, mp4 with AAC audio."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import soundfile

from damc_core.errors import InputError
from damc_core.staging import staged_file
from damc_core.tools import ToolError, ToolNotFoundError, open_tool_pipe, run_tool

VIDEO_FPS = 25
AUDIO_SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = AUDIO_SAMPLE_RATE // VIDEO_FPS
"""Audio samples per video frame (640)."""

PathLike = str | os.PathLike[str]

FFMPEG = ("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-cpuflags", "0")
"""ffmpeg with no stdin and only errors on stderr: the start of every ffmpeg command line of the project.

`-cpuflags 0` turns off ffmpeg's run-time choice of SIMD code: its float audio decoders, resampler, pixel-format
conversion and AAC encoder give slightly different samples and pixels on CPUs with different instruction sets (AVX2,
AVX-512, FMA), so the same input decoded to different bytes on different machines and DVC's outputs did not
reproduce. Plain C code gives the same bytes on every x86-64 CPU, for ~1.3x the time of decoding (x264 keeps its
SIMD: its output is bit-exact across CPUs)."""

# Decoders emit whole codec frames, so audio can decode longer than the track's stated duration
# (AAC's last frame is 1024 samples: 64 ms at 16 kHz, 128 ms at 8 kHz). A larger excess means the
# stated duration is only an estimate, and the decoded audio is then kept whole.
_MAX_END_PADDING_S = 0.2
# A decoded stream may fall short of its stated duration by a codec frame or a rounded timestamp, and container
# durations of some formats (e.g. mp3 without a header of its length) are estimates. More missing than this
# means the file is cut off.
_MAX_MISSING_S = 0.5
_MAX_MISSING_FRACTION = 0.05


class MediaError(InputError, ValueError):
    """A media file is missing, unreadable, or does not hold what was asked of it."""


@dataclass(frozen=True)
class VideoStreamInfo:
    """The first video stream of a file; width/height are those of decoded (display-rotated) frames."""

    width: int
    height: int
    fps: float
    n_frames: int | None
    codec: str
    duration_s: float | None = None


@dataclass(frozen=True)
class AudioStreamInfo:
    """The first audio stream of a file."""

    sample_rate: int
    channels: int
    codec: str
    duration_s: float | None


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe reports about a media file (0.0 duration when none is stated, as for a still image)."""

    path: Path
    duration_s: float
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None


def probe(path: PathLike) -> MediaInfo:
    """Describe the media file at ``path``; raise MediaError if it is missing, empty or unreadable."""
    path = _existing_file(path)
    report = _ffprobe(path)
    streams = report.get("streams", [])
    video = _video_info(path, streams)
    audio = _audio_info(streams)
    if video is None and audio is None:
        raise MediaError(f"{path} has no video or audio stream.")
    return MediaInfo(path=path, duration_s=_duration_s(report), video=video, audio=audio)


def read_audio(path: PathLike, sample_rate: int = AUDIO_SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio track of ``path`` to float32 mono samples at ``sample_rate``.

    Several channels are downmixed to their mean (ffmpeg's own downmix sums them at -3 dB each, so equal channels came
    out 1.41x louder and clipped). Encoder padding past the track's stated duration (e.g. AAC's final frame in mp4) is
    dropped. Raises MediaError when much less audio decodes than the file states (a truncated or damaged file).
    """
    _check_positive("sample_rate", sample_rate)
    info = probe(path)
    if info.audio is None:
        raise MediaError(f"{info.path} has no audio track.")
    channels = info.audio.channels
    with _decoding(info.path):
        result = run_tool(
            [*FFMPEG, "-i", info.path, "-map", "0:a:0", "-vn", "-ac", str(channels), "-ar", str(sample_rate),
             "-f", "f32le", "pipe:1"]
        )
    samples = np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)
    if samples.size == 0:
        raise MediaError(f"{info.path} has an audio track that decodes to zero samples.")
    if channels > 1:
        samples = samples[: samples.size - samples.size % channels].reshape(-1, channels).mean(axis=1)
    stated_s = info.audio.duration_s if info.audio.duration_s is not None else info.duration_s
    _check_complete(info.path, "audio", samples.size / sample_rate, stated_s)
    return _drop_end_padding(samples, info.audio.duration_s, sample_rate)


def iter_video_frames(
    path: PathLike,
    fps: float = VIDEO_FPS,
    size: tuple[int, int] | None = None,
) -> Iterator[np.ndarray]:
    """Return an iterator over the frames of ``path`` as HxWx3 uint8 RGB arrays.

    Frames are resampled to ``fps`` (dropping or repeating frames) and, if ``size`` is given as
    (width, height), scaled to it. The file is checked at once; frames are then decoded one at a
    time as the iterator is consumed, so only one is held in memory.
    """
    _check_positive("fps", fps)
    info = probe(path)
    if info.video is None:
        raise MediaError(f"{info.path} has no video stream.")
    width, height = size if size is not None else (info.video.width, info.video.height)
    _check_positive("width", width)
    _check_positive("height", height)
    stated_s = info.video.duration_s if info.video.duration_s is not None else info.duration_s
    return _decode_frames(info.path, fps, width, height, stated_s)


def read_video(
    path: PathLike,
    fps: float = VIDEO_FPS,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read all frames of ``path`` (see iter_video_frames) as a (T, H, W, 3) uint8 array."""
    frames = list(iter_video_frames(path, fps=fps, size=size))
    if not frames:
        raise MediaError(f"{Path(path)} has a video stream that decodes to zero frames.")
    return np.stack(frames)


def count_video_frames(path: PathLike, fps: float = VIDEO_FPS) -> int:
    """Number of frames ``path`` has at ``fps``: the container's count when it already is at ``fps``, else counted
    by decoding at a tiny size (exact, as read_video would return them)."""
    info = probe(path)
    if info.video is None:
        raise MediaError(f"{info.path} has no video stream.")
    if info.video.n_frames is not None and abs(info.video.fps - fps) < 1e-9:
        return info.video.n_frames
    return sum(1 for _ in iter_video_frames(info.path, fps=fps, size=(2, 2)))


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling of 1-D audio between integer sample rates."""
    _check_positive("from_rate", from_rate)
    _check_positive("to_rate", to_rate)
    from scipy.signal import resample_poly  # here, not at import: scipy.signal costs every stage ~0.4 s to load

    divisor = math.gcd(from_rate, to_rate)
    return resample_poly(audio, to_rate // divisor, from_rate // divisor)


def write_audio(path: PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write float audio (mono, or samples x channels) as a 16-bit PCM wav, clipping to [-1, 1]."""
    path = Path(path)
    samples = _finite_audio(audio, path)
    _check_positive("sample_rate", sample_rate)
    with staged_file(path) as partial:
        soundfile.write(partial, np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def write_video(
    path: PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    *,
    fps: int = VIDEO_FPS,
    audio: np.ndarray | None = None,
    sample_rate: int = AUDIO_SAMPLE_RATE,
    crf: int = 18,
) -> None:
    """Encode RGB uint8 frames (and optional float mono audio) as an H.264/AAC mp4 at ``path``.

    ``frames`` is a (T, H, W, 3) array or an iterable of equally shaped HxWx3 frames with even
    width and height. The output is byte-identical for identical input, and ``path`` is replaced
    only once encoding succeeded: a failure leaves any existing file untouched.
    """
    path = Path(path)
    _check_positive("fps", fps)
    frame_iter = iter(frames)
    first = next(frame_iter, None)
    if first is None:
        raise MediaError(f"Cannot write {path}: there are no frames.")
    _check_frame(first, index=0, expected_shape=None, path=path)
    height, width = first.shape[:2]
    with tempfile.TemporaryDirectory() as scratch, staged_file(path) as partial:
        soundtrack = _write_soundtrack(audio, sample_rate, Path(scratch), path)
        command = _encode_command(
            partial, width=width, height=height, fps=fps, crf=crf, soundtrack=soundtrack, sample_rate=sample_rate
        )
        with open_tool_pipe(command, stdin=True, stdout=False) as process:
            for index, frame in enumerate(itertools.chain([first], frame_iter)):
                _check_frame(frame, index=index, expected_shape=first.shape, path=path)
                process.stdin.write(np.ascontiguousarray(frame).data)


def _existing_file(path: PathLike) -> Path:
    """Return ``path`` as a Path after checking it is an existing, non-empty regular file."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path} does not exist.")
    if path.is_dir():
        raise MediaError(f"{path} is a directory, not a media file.")
    if path.stat().st_size == 0:
        raise MediaError(f"{path} is empty (0 bytes).")
    return path


def _ffprobe(path: Path) -> dict[str, Any]:
    """Return ffprobe's JSON report on the streams and container of ``path``."""
    command = ["ffprobe", "-hide_banner", "-loglevel", "error", "-print_format", "json",
               "-show_format", "-show_streams", path]
    try:
        result = run_tool(command)
    except ToolNotFoundError:
        raise
    except ToolError as error:
        raise MediaError(f"{path} is not a media file ffmpeg can read: {error.stderr or error}") from error
    return json.loads(result.stdout)


def _video_info(path: Path, streams: list[dict[str, Any]]) -> VideoStreamInfo | None:
    """Describe the first real video stream, ignoring attached pictures such as mp3 cover art."""
    stream = next(
        (s for s in streams
         if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")),
        None,
    )
    if stream is None:
        return None
    fps = _frame_rate(stream.get("avg_frame_rate")) or _frame_rate(stream.get("r_frame_rate"))
    if fps is None:
        raise MediaError(f"{path} has a video stream without a usable frame rate.")
    width, height = int(stream["width"]), int(stream["height"])
    if _rotation_degrees(stream) % 180 == 90:
        width, height = height, width
    n_frames = stream.get("nb_frames")
    return VideoStreamInfo(
        width=width,
        height=height,
        fps=fps,
        n_frames=int(n_frames) if n_frames is not None else None,
        codec=stream.get("codec_name", "unknown"),
        duration_s=_optional_float(stream.get("duration")),
    )


def _audio_info(streams: list[dict[str, Any]]) -> AudioStreamInfo | None:
    """Describe the first audio stream, if any."""
    stream = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if stream is None:
        return None
    return AudioStreamInfo(
        sample_rate=int(stream["sample_rate"]),
        channels=int(stream["channels"]),
        codec=stream.get("codec_name", "unknown"),
        duration_s=_optional_float(stream.get("duration")),
    )


def _duration_s(report: dict[str, Any]) -> float:
    """The container's duration, else the longest stream's, else 0.0."""
    stated = _optional_float(report.get("format", {}).get("duration"))
    if stated is not None:
        return stated
    stream_durations = [_optional_float(s.get("duration")) for s in report.get("streams", [])]
    return max((d for d in stream_durations if d is not None), default=0.0)


def _frame_rate(rate: str | None) -> float | None:
    """Parse an ffprobe rate such as "30000/1001"; None for missing or zero rates like "0/0"."""
    if not rate:
        return None
    numerator, _, denominator = rate.partition("/")
    top, bottom = float(numerator), float(denominator or 1)
    if top <= 0 or bottom <= 0:
        return None
    return top / bottom


def _rotation_degrees(stream: dict[str, Any]) -> int:
    """The display rotation ffmpeg applies when decoding (display matrix, or the legacy rotate tag)."""
    for side_data in stream.get("side_data_list", []):
        if "rotation" in side_data:
            return round(float(side_data["rotation"]))
    return round(float(stream.get("tags", {}).get("rotate", 0)))


def _optional_float(value: str | None) -> float | None:
    """Parse an ffprobe number; None when it is missing or "N/A"."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _check_complete(path: Path, what: str, decoded_s: float, stated_s: float | None) -> None:
    """MediaError when the decoded duration falls short of the stated one by more than _MAX_MISSING (a file cut off
    in copying or downloading still states its full duration, but decodes to less)."""
    if not stated_s:
        return
    missing_s = stated_s - decoded_s
    if missing_s > max(_MAX_MISSING_S, _MAX_MISSING_FRACTION * stated_s):
        raise MediaError(f"{path} is truncated or damaged: it states {stated_s:.2f} s of {what} but only "
                         f"{decoded_s:.2f} s decodes; use a complete copy of the file")


def _drop_end_padding(samples: np.ndarray, duration_s: float | None, sample_rate: int) -> np.ndarray:
    """Cut decoded audio back to the track's stated duration when it overshoots by codec padding only."""
    if duration_s is None:
        return samples
    stated = round(duration_s * sample_rate)
    padding = samples.size - stated
    if 0 < padding <= _MAX_END_PADDING_S * sample_rate:
        return samples[:stated]
    return samples


@contextlib.contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Report ffmpeg failing to decode ``path`` as a MediaError naming the file."""
    try:
        yield
    except ToolNotFoundError:
        raise
    except ToolError as error:
        raise MediaError(f"ffmpeg could not decode {path} (a damaged or truncated file?): {error.stderr or error}") \
            from error


def _decode_frames(
    path: Path, fps: float, width: int, height: int, stated_s: float | None
) -> Iterator[np.ndarray]:
    """Decode the first video stream of ``path`` at ``fps`` and size ``width`` x ``height``; MediaError at the end
    when the frames fall well short of the stream's stated duration ``stated_s`` (a truncated file)."""
    command = [*FFMPEG, "-i", path, "-map", "0:V:0", "-vf", f"fps={fps},scale={width}:{height}",
               "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]
    decoded = 0
    with _decoding(path), open_tool_pipe(command) as process:
        for frame in _read_raw_frames(process.stdout, path, height, width):
            decoded += 1
            yield frame
    _check_complete(path, "video", decoded / fps, stated_s)


def _read_raw_frames(pipe: IO[bytes], path: Path, height: int, width: int) -> Iterator[np.ndarray]:
    """Read rgb24 frames of the given size from ``pipe`` until it ends."""
    while True:
        frame = np.empty((height, width, 3), dtype=np.uint8)
        n_read = pipe.readinto(memoryview(frame).cast("B"))
        if not n_read:
            return
        if n_read < frame.nbytes:
            raise MediaError(f"ffmpeg's output for {path} ended in the middle of a frame.")
        yield frame


def _check_frame(frame: object, *, index: int, expected_shape: tuple[int, ...] | None, path: Path) -> None:
    """Check a frame to encode is HxWx3 uint8 with even sides and, if given, the expected shape."""
    where = f"Cannot write {path}: frame {index}"
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        kind = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
        raise MediaError(f"{where} must be a uint8 numpy array, got {kind}.")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise MediaError(f"{where} has shape {frame.shape}, expected (height, width, 3).")
    if expected_shape is not None and frame.shape != expected_shape:
        raise MediaError(f"{where} has shape {frame.shape}, but frame 0 has shape {expected_shape}.")
    height, width = frame.shape[:2]
    if height % 2 or width % 2:
        raise MediaError(f"{where} is {width}x{height}; H.264 with yuv420p needs even width and height.")


def _write_soundtrack(audio: np.ndarray | None, sample_rate: int, scratch: Path, path: Path) -> Path | None:
    """Write the mono soundtrack for ``path`` as a wav in ``scratch``; None when there is no audio."""
    if audio is None:
        return None
    if np.ndim(audio) != 1:
        raise MediaError(f"Cannot write {path}: audio must be mono (1-D), got shape {np.shape(audio)}.")
    wav = scratch / "audio.wav"
    write_audio(wav, audio, sample_rate)
    return wav


def _encode_command(
    output: Path,
    *,
    width: int,
    height: int,
    fps: int,
    crf: int,
    soundtrack: Path | None,
    sample_rate: int,
) -> list[str | Path]:
    """ffmpeg arguments encoding rgb24 frames from stdin (plus a wav soundtrack as AAC) into a bit-exact mp4."""
    video_input = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", f"{width}x{height}",
                   "-framerate", str(fps), "-i", "pipe:0"]
    video_output = ["-map", "0:v:0", "-c:v", "libx264", "-preset", "medium", "-crf", str(crf),
                    "-pix_fmt", "yuv420p", "-flags:v", "+bitexact"]
    audio_input: list[str | Path] = []
    audio_output: list[str] = []
    if soundtrack is not None:
        audio_input = ["-i", soundtrack]
        audio_output = ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k", "-ar", str(sample_rate),
                        "-flags:a", "+bitexact"]
    container = ["-threads", "1", "-map_metadata", "-1", "-fflags", "+bitexact", "-movflags", "+faststart",
                 "-f", "mp4", output]
    return [*FFMPEG, "-y", *video_input, *audio_input, *video_output, *audio_output, *container]


def _finite_audio(audio: np.ndarray, path: Path) -> np.ndarray:
    """Return ``audio`` as float32, raising MediaError if it is empty or has NaN/inf samples."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.size == 0:
        raise MediaError(f"Cannot write {path}: the audio has no samples.")
    if not np.all(np.isfinite(samples)):
        raise MediaError(f"Cannot write {path}: the audio contains NaN or infinite samples.")
    return samples


def _check_positive(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a positive number."""
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}.")
