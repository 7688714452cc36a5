"""Inline SVG line charts for the results gallery (one or several series), and reading dvclive metric TSVs."""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

MAX_CURVE_POINTS = 1000
"""A curve with more points is drawn from this many, evenly spaced over its steps (first and last included)."""

SERIES_COLOURS = ("#1f6fb2", "#d1495b", "#2e933c", "#8c564b")
"""Stroke colour of the first, second, ... series of a chart (cycled)."""


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
    return svg_chart({y_label: points}, title=title, x_label=x_label, y_label=y_label, width=width, height=height)


def svg_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 440,
    height: int = 260,
) -> str:
    """`svg_line_chart` of several named series on shared axes, one polyline each (class "line series-<k>", with
    data-series=<name>), and a legend when there is more than one series."""
    drawn = {name: _finite_points(points) for name, points in series.items()}
    left, right, top, bottom = 72, 24, 26, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    out = [f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
           f"<title>{escape_text(title)}</title>",
           f'<text class="title" x="{left}" y="16">{escape_text(title)}</text>']
    everything = [point for points in drawn.values() for point in points]
    if not everything:
        out += [f'<text x="{left}" y="{top + plot_h / 2:.0f}">no finite values</text>', "</svg>"]
        return "\n".join(out)

    x_lo, x_hi = _padded_range([x for x, _ in everything])
    y_lo, y_hi = _padded_range([y for _, y in everything])

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
    for index, (name, points) in enumerate(drawn.items()):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        coordinates = " ".join(f"{sx(x):.2f},{sy(y):.2f}" for x, y in points)
        out.append(f'<polyline class="line series-{index}" data-series="{escape_attribute(name)}" stroke="{colour}" '
                   f'points="{coordinates}"/>')
        if len(points) == 1:
            out.append(f'<circle cx="{sx(points[0][0]):.2f}" cy="{sy(points[0][1]):.2f}" r="3" fill="{colour}"/>')
    if len(drawn) > 1:
        for index, name in enumerate(drawn):
            y = top + 8 + 14 * index
            colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
            x = left + plot_w - 110
            out.append(f'<line class="legend" x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{colour}" '
                       f'stroke-width="2"/>')
            out.append(f'<text x="{x + 24}" y="{y + 4}">{escape_text(name)}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{escape_text(x_label)}</text>')
    out.append(f'<text x="13" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 13 {top + plot_h / 2:.1f})">{escape_text(y_label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _finite_points(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The finite points sorted by x, thinned evenly to MAX_CURVE_POINTS."""
    finite = sorted((float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y))
    if len(finite) > MAX_CURVE_POINTS:
        last = len(finite) - 1
        finite = [finite[round(i * last / (MAX_CURVE_POINTS - 1))] for i in range(MAX_CURVE_POINTS)]
    return finite


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


def escape_text(text: str) -> str:
    """`text` escaped for HTML/SVG element content."""
    return html.escape(str(text), quote=False)


def escape_attribute(text: str) -> str:
    """`text` escaped for a quoted HTML/SVG attribute value."""
    return html.escape(str(text), quote=True)
