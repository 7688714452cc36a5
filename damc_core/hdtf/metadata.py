"""Parses the official HDTF metadata (urls, clip time stamps, resolutions, crop windows) into one ClipSpec per clip."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlparse

URL_KIND = "video_url"
TIME_KIND = "annotion_time"
RESOLUTION_KIND = "resolution"
CROP_WH_KIND = "crop_wh"
CROP_RATIO_KIND = "crop_ratio"
KINDS = (URL_KIND, TIME_KIND, RESOLUTION_KIND, CROP_WH_KIND, CROP_RATIO_KIND)

_Value = TypeVar("_Value")

_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
_TIME = re.compile(r"(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class ClipSpec:
    """One HDTF clip: where its video comes from, the time range to cut, and how to crop it.

    Names are unique only within a set, so a video is keyed `<set>_<name>` (`video`, e.g. "WDA_AdamSchiff") and a
    clip `<set>_<name>_<index:03d>` (`clip_id`, e.g. "RD_Radio34_000"): the names the widely used HDTF download script
    (github.com/universome/HDTF) gives its raw videos and clips, so clips cut here share ids with redistributed ones.
    The metadata's own crop rows name the same clip `<name>_<index>.mp4` ("Radio34_0.mp4").
    """

    set_name: str
    """The HDTF set: "WRA", "WDA" or "RD"."""
    name: str
    """The video's name within its set (e.g. "Radio34"); its raw download is `<name>.mp4`."""
    clip_index: int
    """Position of the clip's time range on the video's time-stamp line, from 0."""
    url: str | None
    """Canonical `https://www.youtube.com/watch?v=<id>` url (extra query parameters such as `&t=6s` dropped)."""
    start_s: float
    """Start of the clip in the video, seconds."""
    end_s: float
    """End of the clip in the video, seconds."""
    resolution: int | None
    """Frame height of the download the crop box refers to (720 for 720p)."""
    crop_wh: tuple[int, int, int, int] | None
    """HDTF crop window (min_width, width, min_height, height): left, width, top, height at `resolution`."""
    crop_ratio: float | None
    """HDTF zoom ratio of the square face window when cropping from landmarks."""

    @property
    def video(self) -> str:
        """The video's key, unique across sets: `<set>_<name>`."""
        return f"{self.set_name}_{self.name}"

    @property
    def clip_id(self) -> str:
        """The clip's key, unique across sets: `<set>_<name>_<index:03d>`."""
        return f"{self.video}_{self.clip_index:03d}"

    @property
    def crop_box(self) -> tuple[int, int, int, int] | None:
        """`crop_wh` as an (x, y, width, height) box at `resolution`."""
        if self.crop_wh is None:
            return None
        left, width, top, height = self.crop_wh
        return left, top, width, height


@dataclass(frozen=True)
class _Row:
    """The fields of one metadata line after its key, and where the line is."""

    fields: tuple[str, ...]
    file: str
    line: int


def read_metadata(folder: str | Path) -> tuple[list[ClipSpec], list[str]]:
    """Parse every set's metadata files in `folder` into clip specs, ordered by set and then by time-stamp file.

    Each set (WRA, WDA, RD) has five files of space-separated rows:

        <set>_video_url.txt       <name> <YouTube url>
        <set>_annotion_time.txt   <name>.mp4 <start>-<end> [<start>-<end> ...]   (a clip per range; mm:ss or h:mm:ss)
        <set>_resolution.txt      <name>.mp4 <frame height of the download the crop windows refer to>
        <set>_crop_wh.txt         <name>_<index>.mp4 <min_width> <width> <min_height> <height>
        <set>_crop_ratio.txt      <name>_<index>.mp4 <zoom ratio of the face window>

    A UTF-8 byte-order mark, blank lines, runs of spaces or tabs and Windows line ends are accepted. Returns the
    specs and the problems found, as human-readable lines: malformed lines (named by file and line number, and
    skipped), videos with a url but no time stamps, clips without crop rows, and other inconsistencies. Problems are
    reported, never fatal: a clip is kept whenever its video and time range are known.
    """
    folder = Path(folder)
    set_names = sorted({
        path.name.removesuffix(f"_{kind}.txt") for kind in KINDS for path in folder.glob(f"*_{kind}.txt")
    })
    specs: list[ClipSpec] = []
    problems: list[str] = []
    for set_name in set_names:
        set_specs, set_problems = _read_set(folder, set_name)
        specs += set_specs
        problems += set_problems
    return specs, problems


def parse_time(text: str) -> float:
    """Seconds from an `mm:ss` or `h:mm:ss` time stamp (seconds may carry a fraction); ValueError if malformed."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an mm:ss or h:mm:ss time")
    hours, minutes, seconds = match.group(1), int(match.group(2)), float(match.group(3))
    if seconds >= 60 or (hours is not None and minutes >= 60):
        raise ValueError(f"{text!r} has minutes or seconds of 60 or more")
    return int(hours or 0) * 3600 + minutes * 60 + seconds


def canonical_url(url: str) -> str:
    """The `https://www.youtube.com/watch?v=<id>` form of a YouTube watch or youtu.be url; ValueError otherwise."""
    parsed = urlparse(url)
    host = parsed.netloc.lower().removeprefix("www.").removeprefix("m.")
    if host == "youtu.be":
        video_id = parsed.path.strip("/")
    elif host == "youtube.com" and parsed.path == "/watch":
        video_id = parse_qs(parsed.query).get("v", [""])[0]
    else:
        raise ValueError(f"{url!r} is not a YouTube video url")
    if not _YOUTUBE_ID.fullmatch(video_id):
        raise ValueError(f"{url!r} has no valid YouTube video id")
    return f"https://www.youtube.com/watch?v={video_id}"


@dataclass(frozen=True)
class _SetFiles:
    """One set's metadata files: the raw rows of each kind, and the values that parsed."""

    set_name: str
    rows: dict[str, dict[str, _Row]]
    urls: dict[str, str]
    resolutions: dict[str, int]
    crops: dict[str, tuple[int, int, int, int]]
    ratios: dict[str, float]
    ranges: dict[str, dict[int, tuple[float, float]]]


def _read_set(folder: Path, set_name: str) -> tuple[list[ClipSpec], list[str]]:
    """The clip specs of one set, and the problems found in its files."""
    problems: list[str] = []
    files = _parse_set(folder, set_name, problems)
    for name in sorted(files.rows[URL_KIND].keys() - files.rows[TIME_KIND].keys()):
        problems.append(f"{set_name} {name}: url but no time stamps")
    specs = [spec for name in files.ranges for spec in _video_specs(files, name, problems)]
    clip_keys = {f"{spec.name}_{spec.clip_index}" for spec in specs}
    for kind in (CROP_WH_KIND, CROP_RATIO_KIND):
        for clip in sorted(files.rows[kind].keys() - clip_keys):
            problems.append(f"{set_name} {clip}: {kind} row but no such clip")
    return specs, problems


def _parse_set(folder: Path, set_name: str, problems: list[str]) -> _SetFiles:
    """Read and parse the five files of one set, reporting missing files and malformed lines."""
    rows = {kind: _read_rows(folder / f"{set_name}_{kind}.txt", problems) for kind in KINDS}
    return _SetFiles(
        set_name=set_name,
        rows=rows,
        urls=_parse_values(rows[URL_KIND], 1, canonical_url, problems),
        resolutions=_parse_values(rows[RESOLUTION_KIND], 1, _frame_height, problems),
        crops=_parse_values(rows[CROP_WH_KIND], 4, _crop_window, problems),
        ratios=_parse_values(rows[CROP_RATIO_KIND], 1, _positive_float, problems),
        ranges=_parse_ranges(rows[TIME_KIND], problems),
    )


def _video_specs(files: _SetFiles, name: str, problems: list[str]) -> list[ClipSpec]:
    """The clips of one video, reporting its missing rows and inconsistent values."""
    where = f"{files.set_name} {name}"
    for kind in (URL_KIND, RESOLUTION_KIND):
        if name not in files.rows[kind]:
            problems.append(f"{where}: no {kind} row")
    specs = []
    previous_end = 0.0
    for index, (start_s, end_s) in files.ranges[name].items():
        clip = f"{name}_{index}"
        if start_s < previous_end:
            problems.append(f"{where}_{index}: starts at {_format_time(start_s)}, before the previous clip ends "
                            f"({_format_time(previous_end)})")
        previous_end = end_s
        for kind in (CROP_WH_KIND, CROP_RATIO_KIND):
            if clip not in files.rows[kind]:
                problems.append(f"{where}_{index}: no {kind} row")
        spec = ClipSpec(
            set_name=files.set_name,
            name=name,
            clip_index=index,
            url=files.urls.get(name),
            start_s=start_s,
            end_s=end_s,
            resolution=files.resolutions.get(name),
            crop_wh=files.crops.get(clip),
            crop_ratio=files.ratios.get(clip),
        )
        problems += _crop_problems(spec)
        specs.append(spec)
    return specs


def _crop_problems(spec: ClipSpec) -> list[str]:
    """Crop windows that are not square or reach past the bottom of the reference frame."""
    if spec.crop_box is None:
        return []
    where = f"{spec.set_name} {spec.name}_{spec.clip_index}"
    _, top, width, height = spec.crop_box
    problems = []
    if width != height:
        problems.append(f"{where}: crop_wh window {width}x{height} is not square")
    if spec.resolution is not None and top + height > spec.resolution:
        problems.append(f"{where}: crop_wh window reaches row {top + height}, past the {spec.resolution}-pixel "
                        "reference frame")
    return problems


def _read_rows(path: Path, problems: list[str]) -> dict[str, _Row]:
    """Rows of a metadata file keyed by their first field (without `.mp4`); blank lines skipped, BOM dropped.

    A missing file is a problem and reads as empty; a repeated key is a problem and the first row wins.
    """
    if not path.is_file():
        problems.append(f"{path.name}: missing")
        return {}
    rows: dict[str, _Row] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        key, fields = words[0].removesuffix(".mp4"), tuple(words[1:])
        if key in rows:
            problems.append(f"{path.name}:{number}: repeats {key} (first on line {rows[key].line}); ignored")
            continue
        rows[key] = _Row(fields, path.name, number)
    return rows


def _parse_values(
    table: dict[str, _Row], n_fields: int, parse: Callable[..., _Value], problems: list[str]
) -> dict[str, _Value]:
    """Rows of exactly `n_fields` fields parsed by `parse(*fields)`; malformed rows are problems and left out."""
    values = {}
    for key, row in table.items():
        try:
            if len(row.fields) != n_fields:
                raise ValueError(f"expected {n_fields} value(s) after the name, got {len(row.fields)}")
            values[key] = parse(*row.fields)
        except ValueError as error:
            problems.append(f"{row.file}:{row.line}: {key}: {error}")
    return values


def _parse_ranges(table: dict[str, _Row], problems: list[str]) -> dict[str, dict[int, tuple[float, float]]]:
    """Each video's clip ranges by their index on the line; a malformed range is a problem and only it is left out."""
    videos = {}
    for name, row in table.items():
        if not row.fields:
            problems.append(f"{row.file}:{row.line}: {name}: no time ranges")
        ranges = {}
        for index, text in enumerate(row.fields):
            try:
                ranges[index] = _time_range(text)
            except ValueError as error:
                problems.append(f"{row.file}:{row.line}: {name} clip {index}: {error}")
        if ranges:
            videos[name] = ranges
    return videos


def _time_range(text: str) -> tuple[float, float]:
    """(start, end) seconds of a `<start>-<end>` range with end after start."""
    start, separator, end = text.partition("-")
    if not separator:
        raise ValueError(f"{text!r} is not a <start>-<end> range")
    start_s, end_s = parse_time(start), parse_time(end)
    if end_s <= start_s:
        raise ValueError(f"range {text!r} does not end after it starts")
    return start_s, end_s


def _format_time(seconds: float) -> str:
    """A time in seconds as the metadata writes it: `mm:ss`, or `h:mm:ss` from an hour on."""
    minutes, secs = divmod(float(seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    secs_text = f"{secs:02.0f}" if secs.is_integer() else f"{secs:06.3f}".rstrip("0")
    return f"{hours}:{minutes:02d}:{secs_text}" if hours else f"{minutes:02d}:{secs_text}"


def _frame_height(text: str) -> int:
    """A positive frame height in pixels."""
    height = int(text)
    if height <= 0:
        raise ValueError(f"resolution {height} is not a frame height")
    return height


def _crop_window(*texts: str) -> tuple[int, int, int, int]:
    """(min_width, width, min_height, height) with non-negative offsets and positive sizes."""
    left, width, top, height = (int(text) for text in texts)
    if left < 0 or top < 0 or width <= 0 or height <= 0:
        raise ValueError(f"crop window {' '.join(texts)} has a negative offset or an empty size")
    return left, width, top, height


def _positive_float(text: str) -> float:
    """A positive, finite number."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(f"{text!r} is not a positive number")
    return value
