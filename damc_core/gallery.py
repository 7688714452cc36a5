"""A static HTML gallery of results: one self-contained page, openable from disk in any browser.

Per subject the page shows the ground-truth and rendered validation videos side by side (each with a poster: its
first frame, so nothing is black before play), the TTS-driven videos, stills of the validation frames with the mouth
closed and open (real | rendered | error x4), mouth crops over time, the real and rendered mouth-opening curves, our
metrics (a null number is shown as "n/a" with its reason as a tooltip and a footnote), the paper's Table 1 with our
row beneath it for reference, and the training curves as inline SVG line charts drawn from dvclive TSV files.

The page needs no server and no network: CSS is inline, there are no fonts or scripts from elsewhere, and videos and
images are referenced by paths relative to the HTML file; the images are files in a folder beside the page (see
`write_gallery`). Its one inline script only records, on each <video> and <img>, what the browser loaded (see
`PROBE_SCRIPT`). The same input gives the same bytes, page and images: nothing depends on time, locale or the
machine, and all numbers are formatted explicitly.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from damc_core.gallery_charts import escape_attribute, escape_text, read_curve, svg_chart, svg_line_chart
from damc_core.gallery_figures import ERROR_GAIN, ValidationFigures, encode_image, first_frame
from damc_core.staging import staged_directory, staged_file

PAPER_TABLE_1: dict[str, dict[str, float]] = {
    "Wav2Lip": {"PSNR": 27.123, "LPIPS": 0.068, "FID": 20.911, "LMD": 5.956, "Sync": 8.932},
    "DINet": {"PSNR": 27.912, "LPIPS": 0.051, "FID": 13.802, "LMD": 4.810, "Sync": 6.724},
    "IP-LAP": {"PSNR": 30.143, "LPIPS": 0.049, "FID": 8.401, "LMD": 3.933, "Sync": 4.915},
    "MuseTalk": {"PSNR": 29.530, "LPIPS": 0.053, "FID": 9.417, "LMD": 5.014, "Sync": 4.291},
    "AD-NeRF": {"PSNR": 27.132, "LPIPS": 0.152, "FID": 25.347, "LMD": 3.019, "Sync": 4.687},
    "RAD-NeRF": {"PSNR": 31.852, "LPIPS": 0.069, "FID": 9.486, "LMD": 2.981, "Sync": 4.927},
    "ER-NeRF": {"PSNR": 33.010, "LPIPS": 0.031, "FID": 4.975, "LMD": 3.011, "Sync": 5.112},
    "DAMC (paper)": {"PSNR": 33.503, "LPIPS": 0.027, "FID": 5.147, "LMD": 2.437, "Sync": 8.171},
}
"""The DAMC paper's Table 1 as reported there (method -> column -> value); Sync is LSE-C. Not reproduced here."""

PAPER_TABLE_1_CAPTION = "The DAMC paper's Table 1 as reported (its numbers, not reproduced here); Sync is LSE-C."
"""Caption of the reference table."""

HIGHER_IS_BETTER: dict[str, bool] = {"PSNR": True, "LPIPS": False, "FID": False, "LMD": False, "Sync": True}
"""Direction of each reference column, shown as an arrow in its header."""

OUR_KEYS_FOR_PAPER_COLUMN: dict[str, tuple[str, ...]] = {
    "PSNR": ("psnr",),
    "LPIPS": ("lpips",),
    "FID": ("fid",),
    "LMD": ("lmd",),
    "Sync": ("sync", "lse_c", "lse-c"),
}
"""Which of our metric names (compared case-insensitively) fills each column of our row in the reference table."""

FIGURES_OWNER = "gallery"
"""Writer named in the figures folder's marker (damc_core.staging): the gallery replaces only a folder it wrote."""

MOUTH_STRIP_ZOOM = 2
"""The mouth crops are shown this many times their size (pixelated, not smoothed)."""

PROBE_SCRIPT = """\
// Records what the browser loaded, for tests and for debugging a page whose media do not show; harmless otherwise.
// On each <video>: data-duration (seconds) and data-size (WxH) once its metadata has loaded, data-first-frame once
// its first frame is decoded, data-error (the MediaError code) if it fails to load, data-poster-width (the poster
// image's natural width; 0 if it failed to load). On each <img>: data-natural-width (0 if it failed to load).
(function () {
  function isVideo(node) { return node && node.tagName === 'VIDEO'; }
  function isImage(node) { return node && node.tagName === 'IMG'; }
  function image(img) { if (img.complete) img.setAttribute('data-natural-width', String(img.naturalWidth)); }
  function poster(video) {
    if (!video.poster || video.hasAttribute('data-poster-width')) return;
    var probe = new Image();
    probe.onload = function () { video.setAttribute('data-poster-width', String(probe.naturalWidth)); };
    probe.onerror = function () { video.setAttribute('data-poster-width', '0'); };
    probe.src = video.poster;
  }
  function scan() {
    Array.prototype.forEach.call(document.querySelectorAll('video'), function (v) { metadata(v); poster(v); });
    Array.prototype.forEach.call(document.querySelectorAll('img'), image);
  }
  function metadata(video) {
    if (video.readyState >= 1) {
      video.setAttribute('data-duration', String(video.duration));
      video.setAttribute('data-size', video.videoWidth + 'x' + video.videoHeight);
    }
    if (video.readyState >= 2) { video.setAttribute('data-first-frame', 'decoded'); }
  }
  document.addEventListener('loadedmetadata', function (e) { if (isVideo(e.target)) metadata(e.target); }, true);
  document.addEventListener('loadeddata', function (e) { if (isVideo(e.target)) metadata(e.target); }, true);
  document.addEventListener('load', function (e) { if (isImage(e.target)) image(e.target); }, true);
  document.addEventListener('error', function (e) {
    if (isVideo(e.target) && e.target.error) e.target.setAttribute('data-error', String(e.target.error.code));
    if (isImage(e.target)) e.target.setAttribute('data-natural-width', '0');
  }, true);
  document.addEventListener('DOMContentLoaded', scan);
  window.addEventListener('load', scan);
})();
"""
"""The page's only script, inline in its head; the gallery works without it (e.g. with scripts disabled)."""

STYLE = """\
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; background: #fafafa; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 2px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .5rem; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .4rem 1rem; }
.videos { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; } figcaption { font-size: .9rem; color: #555; }
video { width: 320px; max-width: 100%; background: #000; display: block; }
.stills, .mouth { display: flex; flex-wrap: wrap; gap: 1rem; }
figure img { display: block; max-width: 100%; height: auto; background: #fff; }
.mouth img { image-rendering: pixelated; }
table { border-collapse: collapse; margin: .4rem 0; font-size: .92rem; background: #fff; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.na { color: #a33; cursor: help; } tr.ours td { font-weight: 600; background: #eef6ee; }
caption { caption-side: bottom; font-size: .82rem; color: #555; text-align: left; padding-top: .3rem; }
ol.notes { font-size: .85rem; color: #444; }
.curves { display: flex; flex-wrap: wrap; gap: 1rem; }
svg.chart { background: #fff; border: 1px solid #ddd; }
svg.chart text { font-size: 11px; fill: #333; } svg.chart .title { font-size: 12px; font-weight: 600; }
svg.chart .grid { stroke: #e5e5e5; } svg.chart .axis { stroke: #555; }
svg.chart .line { fill: none; stroke-width: 1.5; }
footer { margin-top: 3rem; font-size: .8rem; color: #666; }
"""


@dataclass(frozen=True)
class SubjectResults:
    """What the gallery shows of one subject.

    metrics: metric name -> {"value": float or None, "reason": why the value is None (or None), "backend": what
    produced it}, shown in the given order. curves: chart title -> a dvclive TSV (columns `step` and the value).
    tts_videos: label -> video. validation: the stills, mouth crops and opening curves
    (damc_core.gallery_figures.load_validation_figures), or None to show none. All paths must exist when the gallery
    is written; they may be relative to the working directory or absolute, and the page links them relative to its
    own location.
    """

    name: str
    gt_video: Path
    rendered_video: Path
    tts_videos: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, Path] = field(default_factory=dict)
    validation: ValidationFigures | None = None


class _Images:
    """The page's image files, collected (encoded) while its HTML is built and written with it."""

    def __init__(self, folder: Path, page_dir: Path) -> None:
        self.folder, self.page_dir = folder, page_dir
        self.files: dict[str, bytes] = {}
        self._posters: dict[Path, bytes] = {}  # video -> its poster's bytes (a video may be shown twice)

    def add(self, name: str, image: np.ndarray, alt: str, zoom: int = 1) -> str:
        """Store `image` as `name` (relative to the folder; .png or .jpg) and return its <img> element."""
        self.files[name] = encode_image(image, Path(name).suffix)
        height, width = image.shape[:2]
        return (f'<img src="{self.url(name)}" width="{width * zoom}" height="{height * zoom}" '
                f'alt="{escape_attribute(alt)}">')

    def poster(self, name: str, video: Path) -> str:
        """Store the first frame of `video` as `name` and return the URL of it, for a poster attribute."""
        key = Path(os.path.abspath(video))
        if key not in self._posters:
            self._posters[key] = encode_image(first_frame(video), Path(name).suffix)
        self.files[name] = self._posters[key]
        return self.url(name)

    def url(self, name: str) -> str:
        return relative_url(self.folder / name, self.page_dir)


def write_gallery(
    path: Path, subjects: list[SubjectResults], paper_table: dict, title: str, *,
    figures_dir: Path | None = None, experiments_page: Path | None = None,
) -> None:
    """Write the gallery page to ``path`` (an .html file, its folder created if needed) and its images to
    ``figures_dir`` (default: the page's path without its suffix, e.g. reports/gallery/), one folder per subject.

    Both are replaced atomically; the figures folder is the gallery's own (damc_core.staging.staged_directory
    refuses to replace a folder of other files).
    paper_table: method -> column -> value, usually `PAPER_TABLE_1`; our row beneath it takes each column from the
    metric named as `OUR_KEYS_FOR_PAPER_COLUMN` says (or the column's own name, case-insensitively).
    experiments_page: an existing page to link from the top (scripts/experiments_table.py writes one).
    Raises FileNotFoundError naming the file when a video, curve file or the experiments page does not exist,
    ValueError when a curve file has no `step` column or no single value column, when two subjects share a name,
    or when the figures folder would hold the page.
    """
    path = Path(path)
    page_dir = Path(os.path.abspath(path.parent))
    figures = Path(os.path.abspath(figures_dir if figures_dir is not None else path.with_suffix("")))
    if page_dir == figures or page_dir.is_relative_to(figures):
        raise ValueError(f"gallery figures folder {figures} would contain the page {path}: pick a folder of its own")
    names = [subject.name for subject in subjects]
    if len(set(names)) != len(names):
        raise ValueError(f"gallery subjects must have distinct names, got {names}")
    for subject in subjects:
        for file in (subject.gt_video, subject.rendered_video, *subject.tts_videos.values(), *subject.curves.values()):
            if not Path(file).is_file():
                raise FileNotFoundError(f"gallery of {subject.name!r}: {file} does not exist")
    if experiments_page is not None and not Path(experiments_page).is_file():
        raise FileNotFoundError(f"gallery: experiments page {experiments_page} does not exist")
    images = _Images(figures, page_dir)
    columns = _columns(paper_table)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape_text(title)}</title>",
        f"<style>\n{STYLE}</style>",
        f"<script>\n{PROBE_SCRIPT}</script>",
        "</head>",
        "<body>",
        f"<h1>{escape_text(title)}</h1>",
    ]
    if experiments_page is not None:
        parts.append(f'<p class="links"><a href="{relative_url(Path(experiments_page), page_dir)}">All experiments '
                     "(dvc exp show): fusion mode, dimension and metrics of each</a></p>")
    if subjects:
        parts.append("<nav><ul>")
        parts += [f'<li><a href="#{_subject_id(i)}">{escape_text(s.name)}</a></li>' for i, s in enumerate(subjects)]
        parts.append("</ul></nav>")
    else:
        parts.append("<p>No subjects.</p>")
    for index, subject in enumerate(subjects):
        parts += _subject_section(subject, _subject_id(index), page_dir, paper_table, columns,
                                  images, _subject_folder(subject.name, index))
    parts += [
        ("<footer><p>Static page: videos and images are linked relative to this file; nothing is fetched from the "
         "network. The inline script only records on each video and image what the browser loaded (data-duration, "
         "data-size, data-first-frame, data-error, data-poster-width, data-natural-width), for tests and "
         "debugging.</p></footer>"),
        "</body>",
        "</html>",
        "",
    ]
    with staged_directory(figures, FIGURES_OWNER) as staging:
        for name, data in images.files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        with staged_file(path) as partial:
            partial.write_text("\n".join(parts), encoding="utf-8", newline="\n")


def _subject_section(
    subject: SubjectResults, sid: str, page_dir: Path, paper_table: Mapping[str, Mapping[str, float]],
    columns: list[str], images: _Images, folder: str,
) -> list[str]:
    parts = [f'<section class="subject" id="{sid}">', f"<h2>{escape_text(subject.name)}</h2>",
             "<h3>Validation: ground truth and rendered</h3>", '<div class="videos pair">',
             _video(subject.gt_video, "Ground truth", "gt", page_dir, images.poster(f"{folder}/poster_gt.jpg",
                                                                                   subject.gt_video)),
             _video(subject.rendered_video, "Rendered", "rendered", page_dir,
                    images.poster(f"{folder}/poster_rendered.jpg", subject.rendered_video)), "</div>"]
    if subject.tts_videos:
        parts += ["<h3>TTS-driven</h3>", '<div class="videos tts">']
        parts += [_video(video, label, "tts", page_dir, images.poster(f"{folder}/poster_tts_{number}.jpg", video))
                  for number, (label, video) in enumerate(subject.tts_videos.items(), start=1)]
        parts.append("</div>")
    if subject.validation is not None:
        parts += _validation_figures(subject.validation, images, folder)

    notes: list[tuple[str, str]] = []  # (note id, text) of the null values, numbered in order of appearance
    parts += ["<h3>Metrics</h3>", '<table class="metrics">',
              "<thead><tr><th>Metric</th><th>Value</th><th>Backend</th></tr></thead>", "<tbody>"]
    for metric, entry in subject.metrics.items():
        cell = _value_cell(entry, metric, sid, notes)
        backend = entry.get("backend") or ""
        parts.append(f'<tr data-metric="{escape_attribute(metric)}"><td>{escape_text(metric)}</td>{cell}'
                     f"<td>{escape_text(str(backend))}</td></tr>")
    if not subject.metrics:
        parts.append('<tr><td colspan="3">No metrics.</td></tr>')
    parts += ["</tbody>", "</table>"]

    if paper_table:
        parts += ["<h3>Reference: the paper's Table 1</h3>", '<table class="reference">',
                  (f"<caption>{escape_text(PAPER_TABLE_1_CAPTION)} "
                   f"The last row is this run's {escape_text(subject.name)}.</caption>"),
                  "<thead><tr><th>Method</th>" + "".join(f"<th>{escape_text(_column_header(c))}</th>" for c in columns)
                  + "</tr></thead>", "<tbody>"]
        for method, row in paper_table.items():
            cells = "".join(f"<td>{number_text(row[c])}</td>" if _finite(row.get(c)) else "<td>-</td>" for c in columns)
            parts.append(f'<tr class="paper"><td>{escape_text(method)}</td>{cells}</tr>')
        ours = []
        for column in columns:
            name, entry = _our_metric(subject.metrics, column)
            if entry is None:
                entry = {"value": None, "reason": "not among this run's metrics"}
            ours.append(_value_cell(entry, name, sid, notes))
        parts.append(f'<tr class="ours"><td>This run: {escape_text(subject.name)}</td>{"".join(ours)}</tr>')
        parts += ["</tbody>", "</table>"]

    if notes:
        parts.append('<ol class="notes">')
        parts += [f'<li id="{note_id}">{escape_text(text)}</li>' for note_id, text in notes]
        parts.append("</ol>")

    if subject.curves:
        parts += ["<h3>Training curves</h3>", '<div class="curves">']
        for name, tsv in subject.curves.items():
            column, points = read_curve(Path(tsv))
            parts.append(svg_line_chart(points, title=name, x_label="step", y_label=column))
        parts.append("</div>")
    parts.append("</section>")
    return parts


def _value_cell(entry: Mapping[str, Any], label: str, sid: str, notes: list[tuple[str, str]]) -> str:
    """<td> of a metric value; a null (or non-finite) one is "n/a" with its reason as tooltip and a numbered note."""
    value = entry.get("value")
    if _finite(value):
        return f"<td>{number_text(value)}</td>"
    reason = entry.get("reason") or ("not a finite number" if value is not None else "no reason given")
    text = f"{label}: {reason}"
    texts = [note_text for _, note_text in notes]
    if text in texts:  # the same null shown twice (metrics table and reference row) shares its note
        number = texts.index(text) + 1
    else:
        number = len(notes) + 1
        notes.append((f"{sid}-note-{number}", text))
    note_id = f"{sid}-note-{number}"
    return (f'<td class="na" title="{escape_attribute(str(reason))}">n/a<sup><a href="#{note_id}">{number}</a></sup></td>')


def _our_metric(
    metrics: Mapping[str, Mapping[str, Any]], column: str
) -> tuple[str, Mapping[str, Any] | None]:
    """(name, entry) of our metric for a reference column, by `OUR_KEYS_FOR_PAPER_COLUMN` or the column's own name;
    (column, None) when there is none."""
    wanted = [key.lower() for key in OUR_KEYS_FOR_PAPER_COLUMN.get(column, ())] + [column.lower()]
    by_name = {name.lower(): (name, entry) for name, entry in metrics.items()}
    for key in wanted:
        if key in by_name:
            return by_name[key]
    return column, None


def _columns(paper_table: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Reference columns in order of first appearance over the rows."""
    columns: list[str] = []
    for row in paper_table.values():
        columns += [c for c in row if c not in columns]
    return columns


def _column_header(column: str) -> str:
    """The column's name with an up (higher is better) or down arrow where `HIGHER_IS_BETTER` knows it."""
    if column not in HIGHER_IS_BETTER:
        return column
    return column + (" \u2191" if HIGHER_IS_BETTER[column] else " \u2193")


def _validation_figures(figures: ValidationFigures, images: _Images, folder: str) -> list[str]:
    """Stills with the mouth closed and open, the mouth strip and the opening curves of one subject."""
    parts = ["<h3>Validation stills: mouth closed and open</h3>"]
    if figures.stills:
        parts.append('<div class="stills">')
        for still in figures.stills:
            name = f"{folder}/still_{still.key}.png"
            alt = f"{still.label}: real, rendered and error of frame {still.frame_id}"
            parts.append(f'<figure class="still">{images.add(name, still.strip, alt)}<figcaption>'
                         f"{escape_text(still.label.capitalize())}: frame {still.frame_id} (inner-lip opening real "
                         f"{_px(still.opening_real)}, rendered {_px(still.opening_rendered)}). Left to right: real, "
                         f"rendered, |real − rendered| × {ERROR_GAIN}.</figcaption></figure>")
        parts.append("</div>")
    else:
        parts.append(f'<p class="na">No stills: {escape_text(figures.stills_reason or "no frames")}.</p>')
    frames = ", ".join(str(frame) for frame in figures.mouth_frame_ids)
    parts += ["<h3>Mouth over time</h3>", '<div class="mouth"><figure class="mouth-strip">',
              images.add(f"{folder}/mouth.png", figures.mouth_strip, "mouth crops, real above rendered",
                         MOUTH_STRIP_ZOOM),
              f"<figcaption>Mouth crops of {len(figures.mouth_frame_ids)} evenly spaced validation frames "
              f"({frames}): real above, rendered below (shown × {MOUTH_STRIP_ZOOM}).</figcaption></figure></div>"]
    frame_ids = [float(frame) for frame in figures.frame_ids]
    chart = svg_chart({"real": list(zip(frame_ids, figures.opening_real.tolist(), strict=True)),
                       "rendered": list(zip(frame_ids, figures.opening_rendered.tolist(), strict=True))},
                      title="Mouth opening over the validation frames", x_label="frame",
                      y_label="inner-lip opening (px)", width=640)
    parts += ["<h3>Mouth opening: real and rendered</h3>", '<figure class="opening">', chart,
              f"<figcaption>{escape_text(figures.opening_source)}; frames where no face was found are left out."
              "</figcaption></figure>"]
    return parts


def _px(value: float) -> str:
    return f"{value:.1f} px" if math.isfinite(value) else "n/a (no face found)"


def _video(video: Path, caption: str, kind: str, page_dir: Path, poster: str) -> str:
    src = relative_url(Path(video), page_dir)
    return (f'<figure class="{kind}"><video controls muted loop playsinline preload="metadata" poster="{poster}" '
            f'src="{src}"></video><figcaption>{escape_text(caption)} (<a href="{src}">{escape_text(Path(video).name)}</a>)'
            "</figcaption></figure>")


SAFE_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A subject name used as is for its figures folder; other names get `_subject-<n>` (which none of these is)."""


def _subject_folder(name: str, index: int) -> str:
    return name if SAFE_FOLDER_NAME.fullmatch(name) else f"_subject-{index + 1}"


def relative_url(target: Path, page_dir: Path) -> str:
    """URL of target relative to page_dir, percent-encoded (spaces, #, ?, non-ASCII) and escaped for an attribute."""
    relative = os.path.relpath(os.path.abspath(target), page_dir)
    return escape_attribute(quote(Path(relative).as_posix(), safe="/-._~"))


def _subject_id(index: int) -> str:
    return f"subject-{index + 1}"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number_text(value: float) -> str:
    """A metric value as the gallery and the experiments page show it."""
    return f"{value:.3f}"
