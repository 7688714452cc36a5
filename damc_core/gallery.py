"""A static HTML gallery of results: one self-contained page, openable from disk in any browser.

Per subject the page shows the ground-truth and rendered validation videos side by side, the TTS-driven videos, our
metrics (a null number is shown as "n/a" with its reason as a tooltip and a footnote), the paper's Table 1 with our
row beneath it for reference, and the training curves as inline SVG line charts drawn from dvclive TSV files.

The page needs no server and no network: CSS is inline, there are no fonts, images or scripts from elsewhere, and
videos are referenced by paths relative to the HTML file (so the page and the videos move together). Its one inline
script only records, on each <video> element, what the browser loaded (see `VIDEO_PROBE_SCRIPT`). The same input
gives the same bytes: nothing depends on time, locale or the machine, and all numbers are formatted explicitly.
"""

from __future__ import annotations

import csv
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from damc_core.staging import staged_file

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

MAX_CURVE_POINTS = 1000
"""A curve with more points is drawn from this many, evenly spaced over its steps (first and last included)."""

VIDEO_PROBE_SCRIPT = """\
// Records what the browser loaded, for tests and for debugging a page whose videos do not play; harmless otherwise.
// On each <video>: data-duration (seconds) and data-size (WxH) once its metadata has loaded, data-first-frame once
// its first frame is decoded, data-error (the MediaError code) if it fails to load.
(function () {
  function isVideo(node) { return node && node.tagName === 'VIDEO'; }
  function metadata(video) {
    if (video.readyState >= 1) {
      video.setAttribute('data-duration', String(video.duration));
      video.setAttribute('data-size', video.videoWidth + 'x' + video.videoHeight);
    }
    if (video.readyState >= 2) { video.setAttribute('data-first-frame', 'decoded'); }
  }
  document.addEventListener('loadedmetadata', function (e) { if (isVideo(e.target)) metadata(e.target); }, true);
  document.addEventListener('loadeddata', function (e) { if (isVideo(e.target)) metadata(e.target); }, true);
  document.addEventListener('error', function (e) {
    if (isVideo(e.target) && e.target.error) e.target.setAttribute('data-error', String(e.target.error.code));
  }, true);
  document.addEventListener('DOMContentLoaded', function () {
    Array.prototype.forEach.call(document.querySelectorAll('video'), metadata);
  });
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
svg.chart .line { fill: none; stroke: #1f6fb2; stroke-width: 1.5; }
footer { margin-top: 3rem; font-size: .8rem; color: #666; }
"""


@dataclass(frozen=True)
class SubjectResults:
    """What the gallery shows of one subject.

    metrics: metric name -> {"value": float or None, "reason": why the value is None (or None), "backend": what
    produced it}, shown in the given order. curves: chart title -> a dvclive TSV (columns `step` and the value).
    tts_videos: label -> video. All paths must exist when the gallery is written; they may be relative to the
    working directory or absolute, and the page links them relative to its own location.
    """

    name: str
    gt_video: Path
    rendered_video: Path
    tts_videos: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, Path] = field(default_factory=dict)


def write_gallery(path: Path, subjects: list[SubjectResults], paper_table: dict, title: str) -> None:
    """Write the gallery page to ``path`` (an .html file, its folder created if needed; replaced atomically).

    paper_table: method -> column -> value, usually `PAPER_TABLE_1`; our row beneath it takes each column from the
    metric named as `OUR_KEYS_FOR_PAPER_COLUMN` says (or the column's own name, case-insensitively).
    Raises FileNotFoundError naming the file when a video or curve file does not exist, and ValueError when a curve
    file has no `step` column or no single value column.
    """
    path = Path(path)
    page_dir = Path(os.path.abspath(path.parent))
    for subject in subjects:
        for file in (subject.gt_video, subject.rendered_video, *subject.tts_videos.values(), *subject.curves.values()):
            if not Path(file).is_file():
                raise FileNotFoundError(f"gallery of {subject.name!r}: {file} does not exist")
    columns = _columns(paper_table)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title>",
        f"<style>\n{STYLE}</style>",
        f"<script>\n{VIDEO_PROBE_SCRIPT}</script>",
        "</head>",
        "<body>",
        f"<h1>{_text(title)}</h1>",
    ]
    if subjects:
        parts.append("<nav><ul>")
        parts += [f'<li><a href="#{_subject_id(i)}">{_text(s.name)}</a></li>' for i, s in enumerate(subjects)]
        parts.append("</ul></nav>")
    else:
        parts.append("<p>No subjects.</p>")
    for index, subject in enumerate(subjects):
        parts += _subject_section(subject, _subject_id(index), page_dir, paper_table, columns)
    parts += [
        ("<footer><p>Static page: videos are linked relative to this file; nothing is fetched from the network. "
         "The inline script only records on each video element what the browser loaded (data-duration, data-size, "
         "data-first-frame, data-error), for tests and debugging.</p></footer>"),
        "</body>",
        "</html>",
        "",
    ]
    with staged_file(path) as partial:
        partial.write_text("\n".join(parts), encoding="utf-8", newline="\n")


def _subject_section(
    subject: SubjectResults, sid: str, page_dir: Path, paper_table: Mapping[str, Mapping[str, float]],
    columns: list[str],
) -> list[str]:
    parts = [f'<section class="subject" id="{sid}">', f"<h2>{_text(subject.name)}</h2>",
             "<h3>Validation: ground truth and rendered</h3>", '<div class="videos pair">',
             _video(subject.gt_video, "Ground truth", "gt", page_dir),
             _video(subject.rendered_video, "Rendered", "rendered", page_dir), "</div>"]
    if subject.tts_videos:
        parts += ["<h3>TTS-driven</h3>", '<div class="videos tts">']
        parts += [_video(video, label, "tts", page_dir) for label, video in subject.tts_videos.items()]
        parts.append("</div>")

    notes: list[tuple[str, str]] = []  # (note id, text) of the null values, numbered in order of appearance
    parts += ["<h3>Metrics</h3>", '<table class="metrics">',
              "<thead><tr><th>Metric</th><th>Value</th><th>Backend</th></tr></thead>", "<tbody>"]
    for metric, entry in subject.metrics.items():
        cell = _value_cell(entry, metric, sid, notes)
        backend = entry.get("backend") or ""
        parts.append(f'<tr data-metric="{_attr(metric)}"><td>{_text(metric)}</td>{cell}'
                     f"<td>{_text(str(backend))}</td></tr>")
    if not subject.metrics:
        parts.append('<tr><td colspan="3">No metrics.</td></tr>')
    parts += ["</tbody>", "</table>"]

    if paper_table:
        parts += ["<h3>Reference: the paper's Table 1</h3>", '<table class="reference">',
                  (f"<caption>{_text(PAPER_TABLE_1_CAPTION)} "
                   f"The last row is this run's {_text(subject.name)}.</caption>"),
                  "<thead><tr><th>Method</th>" + "".join(f"<th>{_text(_column_header(c))}</th>" for c in columns)
                  + "</tr></thead>", "<tbody>"]
        for method, row in paper_table.items():
            cells = "".join(f"<td>{_number(row[c])}</td>" if _finite(row.get(c)) else "<td>-</td>" for c in columns)
            parts.append(f'<tr class="paper"><td>{_text(method)}</td>{cells}</tr>')
        ours = []
        for column in columns:
            name, entry = _our_metric(subject.metrics, column)
            if entry is None:
                entry = {"value": None, "reason": "not among this run's metrics"}
            ours.append(_value_cell(entry, name, sid, notes))
        parts.append(f'<tr class="ours"><td>This run: {_text(subject.name)}</td>{"".join(ours)}</tr>')
        parts += ["</tbody>", "</table>"]

    if notes:
        parts.append('<ol class="notes">')
        parts += [f'<li id="{note_id}">{_text(text)}</li>' for note_id, text in notes]
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
        return f"<td>{_number(value)}</td>"
    reason = entry.get("reason") or ("not a finite number" if value is not None else "no reason given")
    text = f"{label}: {reason}"
    texts = [note_text for _, note_text in notes]
    if text in texts:  # the same null shown twice (metrics table and reference row) shares its note
        number = texts.index(text) + 1
    else:
        number = len(notes) + 1
        notes.append((f"{sid}-note-{number}", text))
    note_id = f"{sid}-note-{number}"
    return (f'<td class="na" title="{_attr(str(reason))}">n/a<sup><a href="#{note_id}">{number}</a></sup></td>')


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


def _video(video: Path, caption: str, kind: str, page_dir: Path) -> str:
    src = _relative_url(Path(video), page_dir)
    return (f'<figure class="{kind}"><video controls muted loop playsinline preload="metadata" src="{src}"></video>'
            f'<figcaption>{_text(caption)} (<a href="{src}">{_text(Path(video).name)}</a>)</figcaption></figure>')


def _relative_url(target: Path, page_dir: Path) -> str:
    """URL of target relative to page_dir, percent-encoded (spaces, #, ?, non-ASCII) and escaped for an attribute."""
    relative = os.path.relpath(os.path.abspath(target), page_dir)
    return _attr(quote(Path(relative).as_posix(), safe="/-._~"))


def _subject_id(index: int) -> str:
    return f"subject-{index + 1}"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: float) -> str:
    return f"{value:.3f}"


def _text(text: str) -> str:
    return html.escape(str(text), quote=False)


def _attr(text: str) -> str:
    return html.escape(str(text), quote=True)


# -------------------------------------------------------------------------------------------------------- curves/SVG


def read_curve(tsv: Path) -> tuple[str, list[tuple[float, float]]]:
    """(value column name, [(step, value), ...]) of a dvclive metric TSV (columns `step`, the value, and optionally
    `timestamp`); the value column is the one named like the file, else the only other one. Empty cells are skipped.
    """
    with tsv.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file, delimiter="\t")
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    others = [name for name in fields if name not in ("step", "timestamp")]
    column = tsv.stem if tsv.stem in others else (others[0] if len(others) == 1 else None)
    if "step" not in fields or column is None:
        raise ValueError(f"{tsv} is not a dvclive metric TSV: expected a `step` column and one value column, "
                         f"got columns {fields}")
    points = []
    for row in rows:
        step, value = (row.get("step") or "").strip(), (row.get(column) or "").strip()
        if step and value:
            points.append((float(step), float(value)))
    return column, points


def svg_line_chart(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 440,
    height: int = 260,
) -> str:
    """An inline <svg> line chart of (x, y) points: polyline, axes with ticks and grid, axis labels and title.

    Non-finite points are left out; more than `MAX_CURVE_POINTS` are thinned evenly. Pure text, deterministic.
    """
    finite = sorted((float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y))
    if len(finite) > MAX_CURVE_POINTS:
        last = len(finite) - 1
        finite = [finite[round(i * last / (MAX_CURVE_POINTS - 1))] for i in range(MAX_CURVE_POINTS)]
    left, right, top, bottom = 72, 24, 26, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    out = [f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
           f"<title>{_text(title)}</title>",
           f'<text class="title" x="{left}" y="16">{_text(title)}</text>']
    if not finite:
        out += [f'<text x="{left}" y="{top + plot_h / 2:.0f}">no finite values</text>', "</svg>"]
        return "\n".join(out)

    x_lo, x_hi = _padded_range([x for x, _ in finite])
    y_lo, y_hi = _padded_range([y for _, y in finite])

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h

    for tick in _ticks(y_lo, y_hi):
        y = sy(tick)
        out.append(f'<line class="grid" x1="{left}" y1="{y:.2f}" x2="{left + plot_w}" y2="{y:.2f}"/>')
        out.append(f'<text x="{left - 5}" y="{y + 4:.2f}" text-anchor="end">{_tick_label(tick)}</text>')
    for tick in _ticks(x_lo, x_hi):
        x = sx(tick)
        out.append(f'<line class="axis" x1="{x:.2f}" y1="{top + plot_h}" x2="{x:.2f}" y2="{top + plot_h + 4}"/>')
        out.append(f'<text x="{x:.2f}" y="{top + plot_h + 16}" text-anchor="middle">{_tick_label(tick)}</text>')
    out.append(f'<polyline class="axis" fill="none" points="{left},{top} {left},{top + plot_h} '
               f'{left + plot_w},{top + plot_h}"/>')
    coordinates = " ".join(f"{sx(x):.2f},{sy(y):.2f}" for x, y in finite)
    out.append(f'<polyline class="line" points="{coordinates}"/>')
    if len(finite) == 1:
        out.append(f'<circle cx="{sx(finite[0][0]):.2f}" cy="{sy(finite[0][1]):.2f}" r="3" fill="#1f6fb2"/>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{_text(x_label)}</text>')
    out.append(f'<text x="13" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 13 {top + plot_h / 2:.1f})">{_text(y_label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _padded_range(values: list[float]) -> tuple[float, float]:
    """(min, max) of values, widened when they are all equal so that the chart has a non-empty range."""
    lo, hi = min(values), max(values)
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.05 or 1.0
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) within [lo, hi], about `target` of them."""
    raw = (hi - lo) / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(k * step)
        k += 1
    return ticks


def _tick_label(value: float) -> str:
    text = f"{value:.6g}"
    return "0" if text in ("-0", "0") else text
