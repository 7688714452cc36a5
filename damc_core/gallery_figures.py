"""The gallery's pictures: real | rendered | error stills of chosen validation frames, mouth crops over time, and
video posters, as arrays and as deterministic PNG/JPEG bytes (the same pixels give the same file)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from damc_core.media import iter_video_frames, read_video
from damc_core.renders import VALIDATION_VIDEO

ERROR_GAIN = 4
"""The error image shows |real - rendered| times this, clipped to 255, so that small errors are visible."""
MOUTH_STRIP_FRAMES = 8
"""How many evenly spaced validation frames the mouth strip shows."""
GAP_PX = 4
"""White space between the panels of a strip."""
PNG_COMPRESSION = 6
"""zlib level of every PNG (fixed, so the bytes depend on the pixels only)."""
POSTER_JPEG_QUALITY = 90
"""JPEG quality of the video posters (photographs: a PNG would be several times larger)."""
OPENING_SOURCE = ("MediaPipe inner-lip opening (damc_core.metrics.mouth) of each real and rendered validation frame, "
                  "as the render stage measured it ({})")
"""Where the mouth-opening curves come from, for the gallery's caption."""


class GalleryFigureError(ValueError):
    """The inputs of a gallery figure are missing or do not fit together."""


@dataclass(frozen=True, eq=False)
class Still:
    """One chosen validation frame: its strip real | rendered | error x ERROR_GAIN and the opening of both mouths."""

    key: str
    """"closed" or "open" (names its file)."""
    label: str
    """What was chosen, e.g. "mouth closed"."""
    index: int
    """Position among the validation frames."""
    frame_id: int
    """The frame's number in the subject's video."""
    opening_real: float
    """Inner-lip opening of the real frame, pixels."""
    opening_rendered: float
    """Inner-lip opening of the rendered frame, pixels (NaN where no face was found)."""
    strip: np.ndarray
    """(H, 3 W + 2 GAP_PX, 3) uint8."""


@dataclass(frozen=True, eq=False)
class ValidationFigures:
    """What the gallery shows of one subject's validation frames besides the videos."""

    frame_ids: np.ndarray
    """(T,) frame numbers of the validation frames."""
    opening_real: np.ndarray
    """(T,) inner-lip opening of the real frames, pixels, NaN where no face was found."""
    opening_rendered: np.ndarray
    """(T,) the same of the rendered frames."""
    opening_source: str
    """What measured the openings (shown under the curves)."""
    stills: tuple[Still, ...]
    """Mouth closed and mouth open; empty when no real frame has a measured opening (see `stills_reason`)."""
    stills_reason: str | None
    """Why `stills` is empty (None when it is not)."""
    mouth_strip: np.ndarray
    """(2 h + GAP_PX, N w + (N - 1) GAP_PX, 3) uint8: the real mouth crops on top, the rendered ones below."""
    mouth_frame_ids: tuple[int, ...]
    """Frame numbers of the mouth strip's columns."""


@dataclass(frozen=True)
class StillChoice:
    """Positions among the validation frames of the most closed and the most open real mouth."""

    closed: int
    open: int


def select_stills(opening: np.ndarray) -> StillChoice | None:
    """The frames of minimum (closed) and maximum (open) mouth opening, the first on ties; NaN frames are skipped.
    None when no frame has a finite opening (no face found)."""
    opening = np.asarray(opening, np.float64)
    if not np.isfinite(opening).any():
        return None
    return StillChoice(closed=int(np.nanargmin(opening)), open=int(np.nanargmax(opening)))


def error_image(real: np.ndarray, rendered: np.ndarray, gain: int = ERROR_GAIN) -> np.ndarray:
    """|real - rendered| * gain per channel, clipped to [0, 255], as uint8 of the same (H, W, 3) shape."""
    if real.shape != rendered.shape:
        raise GalleryFigureError(f"error image of frames of different shapes {real.shape} and {rendered.shape}")
    difference = np.abs(real.astype(np.int32) - rendered.astype(np.int32)) * gain
    return np.clip(difference, 0, 255).astype(np.uint8)


def still_strip(real: np.ndarray, rendered: np.ndarray, gain: int = ERROR_GAIN) -> np.ndarray:
    """real | rendered | error_image side by side, GAP_PX of white between them."""
    return _row([real, rendered, error_image(real, rendered, gain)])


def evenly_spaced(count: int, total: int) -> list[int]:
    """`count` positions spread evenly over range(total), first and last included (all of them if fewer)."""
    if total < 1:
        raise GalleryFigureError("no frames to choose from")
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return [round(i * (total - 1) / (count - 1)) for i in range(count)]


def mouth_strip(real: np.ndarray, rendered: np.ndarray, rect: tuple[int, int, int, int],
                indices: list[int]) -> np.ndarray:
    """Crops rect = (col0, row0, col1, row1) of frames `indices` of real (top row) and rendered (bottom row)."""
    col0, row0, col1, row1 = rect
    height, width = real.shape[1:3]
    if not (0 <= col0 < col1 <= width and 0 <= row0 < row1 <= height):
        raise GalleryFigureError(f"mouth box {rect} is empty or outside the {width}x{height} frames")
    top = _row([real[i, row0:row1, col0:col1] for i in indices])
    bottom = _row([rendered[i, row0:row1, col0:col1] for i in indices])
    return np.concatenate([top, _white(GAP_PX, top.shape[1]), bottom], axis=0)


def validation_figures(
    frame_ids: np.ndarray, real: np.ndarray, rendered: np.ndarray, opening_real: np.ndarray,
    opening_rendered: np.ndarray, mouth_rect: tuple[int, int, int, int], opening_source: str,
    mouth_frames: int = MOUTH_STRIP_FRAMES,
) -> ValidationFigures:
    """The figures of (T, H, W, 3) uint8 real and rendered validation frames and their (T,) mouth openings; keeps
    only the chosen frames (the full arrays are not held)."""
    count = len(frame_ids)
    shapes = {"real frames": real.shape[0], "rendered frames": rendered.shape[0],
              "real openings": len(opening_real), "rendered openings": len(opening_rendered)}
    if real.shape != rendered.shape or any(n != count for n in shapes.values()):
        raise GalleryFigureError(f"validation figures need one of each per frame: {count} frame ids, "
                                 + ", ".join(f"{n} {what}" for what, n in shapes.items())
                                 + f" (real {real.shape}, rendered {rendered.shape})")
    opening_real = np.asarray(opening_real, np.float64)
    opening_rendered = np.asarray(opening_rendered, np.float64)
    choice = select_stills(opening_real)
    stills: tuple[Still, ...] = ()
    reason = None
    if choice is None:
        reason = "no face was found on any real validation frame, so no mouth opening to choose frames by"
    else:
        stills = tuple(
            Still(key, f"mouth {key}", index, int(frame_ids[index]), float(opening_real[index]),
                  float(opening_rendered[index]), still_strip(real[index], rendered[index]))
            for key, index in (("closed", choice.closed), ("open", choice.open)))
    indices = evenly_spaced(mouth_frames, count)
    return ValidationFigures(
        frame_ids=np.asarray(frame_ids, np.int64), opening_real=opening_real, opening_rendered=opening_rendered,
        opening_source=opening_source, stills=stills, stills_reason=reason,
        mouth_strip=mouth_strip(real, rendered, mouth_rect, indices),
        mouth_frame_ids=tuple(int(frame_ids[i]) for i in indices))


def load_validation_figures(renders: Path, faces: Path, render_report: Path) -> ValidationFigures:
    """The figures of one subject: real frames from face_prep's validation split, rendered frames from the render
    stage's val.mp4, mouth openings from its report (`validation.mouth_opening_px`), mouth box the median lips box."""
    from damc_core.nerf.data import load_split

    _, split = load_split(faces, "val")
    real = split.images.cpu().numpy()
    rendered = read_video(renders / VALIDATION_VIDEO)
    opening_real, opening_rendered = read_mouth_openings(render_report, len(real))
    mouth_rect = tuple(int(value) for value in np.median(split.lips_rects, axis=0))
    return validation_figures(split.frame_ids, real, rendered, opening_real, opening_rendered, mouth_rect,
                              OPENING_SOURCE.format(render_report.as_posix()))


def read_mouth_openings(render_report: Path, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(real, rendered) (T,) inner-lip openings in pixels (NaN where null) from a render stage report."""
    if not render_report.is_file():
        raise GalleryFigureError(f"{render_report} does not exist: run the render stage (dvc repro render)")
    report = json.loads(render_report.read_text(encoding="utf-8"))
    try:
        openings = report["validation"]["mouth_opening_px"]
        real, rendered = openings["ground_truth"], openings["rendered"]
    except (KeyError, TypeError) as error:
        raise GalleryFigureError(f"{render_report} has no validation.mouth_opening_px.ground_truth / .rendered "
                                 f"({error!r}): rerun the render stage") from error
    arrays = tuple(np.array([np.nan if v is None else float(v) for v in values], np.float64)
                   for values in (real, rendered))
    if any(len(values) != frames for values in arrays):
        raise GalleryFigureError(f"{render_report}: {len(real)} real and {len(rendered)} rendered mouth openings "
                                 f"but the validation split has {frames} frames; rerun the render stage")
    return arrays[0], arrays[1]


def first_frame(video: Path) -> np.ndarray:
    """The first frame of a video, (H, W, 3) uint8 RGB (what the page shows before play): decoded in-process by
    OpenCV (~30 ms), else (an OpenCV without a video backend) by ffmpeg through damc_core.media (~0.3 s)."""
    capture = cv2.VideoCapture(str(video))
    try:
        decoded, frame = capture.read()
    finally:
        capture.release()
    if decoded and frame is not None and frame.ndim == 3:
        return np.ascontiguousarray(frame[..., ::-1])
    with contextlib.closing(iter_video_frames(video)) as frames:
        frame = next(frames, None)
    if frame is None:
        raise GalleryFigureError(f"{video} decodes to no frames; rerun the stage that wrote it")
    return frame


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    """PNG (lossless) or JPEG (POSTER_JPEG_QUALITY) bytes of an (H, W, 3) uint8 RGB image; deterministic."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise GalleryFigureError(f"an image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    bgr = np.ascontiguousarray(image[..., ::-1])
    if suffix == ".png":
        done, encoded = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    elif suffix in (".jpg", ".jpeg"):
        done, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, POSTER_JPEG_QUALITY,
                                                   cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    else:
        raise GalleryFigureError(f"unknown image type {suffix!r}: use .png or .jpg")
    if not done:
        raise GalleryFigureError(f"OpenCV could not encode a {image.shape} image as {suffix}")
    return encoded.tobytes()


def _row(panels: list[np.ndarray]) -> np.ndarray:
    """Equally tall panels side by side with GAP_PX of white between them."""
    height = panels[0].shape[0]
    parts: list[np.ndarray] = []
    for panel in panels:
        if parts:
            parts.append(_white(height, GAP_PX))
        parts.append(panel)
    return np.concatenate(parts, axis=1)


def _white(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 255, np.uint8)
