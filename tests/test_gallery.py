"""The static HTML gallery: its structure (parsed), escaping, determinism, curves, stills and posters, the
experiments table, and a real headless browser run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np
import pytest

from damc_core.experiments import ExperimentRow, Value, experiment_rows, markdown_table
from damc_core.gallery import PAPER_TABLE_1, SubjectResults, write_gallery
from damc_core.gallery_charts import MAX_CURVE_POINTS, read_curve, svg_chart, svg_line_chart
from damc_core.gallery_figures import (
    ERROR_GAIN,
    GAP_PX,
    GalleryFigureError,
    encode_image,
    error_image,
    evenly_spaced,
    first_frame,
    read_mouth_openings,
    StillChoice,
    select_stills,
    still_strip,
    validation_figures,
)
from damc_core.media import read_video, write_video

FRAMES, SIZE, FPS = 16, 64, 25
MOUTH_BOX = (16, 30, 48, 56)  # col0, row0, col1, row1 of the synthetic frames' mouth
OPENING = np.array([4, 6, 2, 8, np.nan, 10, 3, 1, 7, 10, 5, 2])  # real inner-lip opening of the 12 val frames
FIRST_VAL_FRAME = 100
NASTY = '<script>alert("x")</script> & Co'
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class Page(HTMLParser):
    """A page's elements as (tag, attrs); its tables by class, each a list of rows of (cell attrs, cell text)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[list[tuple[dict[str, str | None], str]]]]] = {}  # class -> tables
        self.notes: list[tuple[str, str]] = []  # (id, text) of footnote items
        self.svgs: list[dict[str, object]] = []
        self._table: list | None = None
        self._cell: tuple[dict, list[str]] | None = None
        self._note: tuple[str, list[str]] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag == "table":
            self._table = []
            self.tables.setdefault(attrs.get("class") or "", []).append(self._table)
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = (attrs, [])
        elif tag == "li" and attrs.get("id", "").count("-note-"):
            self._note = (attrs["id"], [])
        elif tag == "svg":
            self.svgs.append({"polylines": [], "series": []})
        elif tag == "polyline" and "line" in (attrs.get("class") or "").split():
            self.svgs[-1]["polylines"].append(attrs["points"])
            self.svgs[-1]["series"].append(attrs.get("data-series"))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append((self._cell[0], "".join(self._cell[1]).strip()))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "li" and self._note is not None:
            self.notes.append((self._note[0], "".join(self._note[1])))
            self._note = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1].append(data)
        if self._note is not None:
            self._note[1].append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.elements if t == tag]


def validation_frames() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame ids, real, rendered) synthetic validation frames: grey, the mouth a dark band OPENING[t] rows high
    (none where it is NaN); the rendered mouth box is 6 grey levels brighter (error 24 after the x4 gain)."""
    real = np.full((len(OPENING), SIZE, SIZE, 3), 150, np.uint8)
    col0, row0, col1, row1 = MOUTH_BOX
    for t, opening in enumerate(OPENING):
        if np.isfinite(opening):
            middle = (row0 + row1) // 2
            real[t, middle - int(opening) // 2:middle - int(opening) // 2 + int(opening), col0 + 4:col1 - 4] = 20
    rendered = real.copy()
    rendered[:, row0:row1, col0:col1] += 6
    return np.arange(FIRST_VAL_FRAME, FIRST_VAL_FRAME + len(OPENING)), real, rendered


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, object]:
    """Two real H.264 clips (top half bright; the rendered one with a grey left stripe) and two dvclive TSVs, in
    folders beside (not below) the page's, one file name with a space and a '#'."""
    root = tmp_path_factory.mktemp("gallery_media")
    (root / "videos").mkdir()
    truth = np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8)
    truth[:, : SIZE // 2] = 200
    rendered = truth.copy()
    rendered[:, :, :16] = 90
    write_video(root / "videos" / "ground truth #1.mp4", truth, fps=FPS)
    write_video(root / "videos" / "rendered.mp4", rendered, fps=FPS)
    curves = root / "logs" / "plots" / "metrics"
    curves.mkdir(parents=True)
    (curves / "train_loss.tsv").write_text("step\ttrain_loss\n" + "".join(
        f"{step}\t{1.0 / (1 + step / 50)}\n" for step in range(0, 500, 10)))
    (curves / "learning_rate.tsv").write_text("timestamp\tstep\tlearning_rate\n" + "".join(
        f"{1700000000 + step}\t{step}\t{2e-4 * min(1.0, step / 100)}\n" for step in range(0, 500, 20)))
    frame_ids, real, rendered_frames = validation_frames()
    figures = validation_figures(frame_ids, real, rendered_frames, OPENING, OPENING * 0.9, MOUTH_BOX,
                                 "synthetic openings")
    experiments = root / "site" / "experiments.html"
    experiments.parent.mkdir()
    experiments.write_text("<!DOCTYPE html><title>experiments</title>")
    return {"root": root, "gt": root / "videos" / "ground truth #1.mp4", "rendered": root / "videos" / "rendered.mp4",
            "loss": curves / "train_loss.tsv", "lr": curves / "learning_rate.tsv", "validation": figures,
            "experiments": experiments}


def subjects(media: dict[str, object]) -> list[SubjectResults]:
    may = SubjectResults(
        name="May",
        gt_video=media["gt"],
        rendered_video=media["rendered"],
        tts_videos={"English (espeak-ng)": media["rendered"]},
        metrics={
            "psnr": {"value": 31.23456, "reason": None, "backend": "numpy"},
            "lpips": {"value": None, "reason": "AlexNet weights <alexnet-owt-7be5be79.pth> missing",
                      "backend": "lpips"},
            "fid": {"value": None, "reason": "pytorch-fid is not installed", "backend": "pytorch-fid"},
            "lmd": {"value": 2.5, "reason": None, "backend": "mediapipe"},
            "lse_c": {"value": 6.25, "reason": None, "backend": "syncnet stand-in"},
        },
        curves={"train loss": media["loss"], "learning rate": media["lr"]},
        validation=media["validation"],
    )
    other = SubjectResults(name=NASTY, gt_video=media["gt"], rendered_video=media["gt"],
                           metrics={"psnr": {"value": 100.0, "reason": None, "backend": "numpy"}})
    return [may, other]


def build(media: dict[str, object], name: str = "index.html", folder: str = "site") -> Path:
    page = media["root"] / folder / name
    write_gallery(page, subjects(media), PAPER_TABLE_1, title=f"DAMC gallery {NASTY}",
                  experiments_page=media["experiments"])
    return page


def local_references(page: Page, page_path: Path) -> list[tuple[str, str, Path | str]]:
    """(tag, attribute, target) of every src/href/poster of the page: a file path, or "#id" for a fragment."""
    found = []
    for tag, attrs in page.elements:
        for name in ("src", "href", "poster"):
            url = attrs.get(name)
            if url is None:
                continue
            assert not urlparse(url).scheme and not url.startswith("/"), (tag, name, url)
            found.append((tag, name, url if url.startswith("#") else (page_path.parent / unquote(url)).resolve()))
    return found


def test_page_structure(media):
    page_path = build(media)
    text = page_path.read_text(encoding="utf-8")
    page = Page(text)

    videos = page.all("video")
    assert len(videos) == 5  # May: GT, rendered, one TTS; the other subject: GT, rendered
    expected = [media["gt"], media["rendered"], media["rendered"], media["gt"], media["gt"]]
    ffmpeg_firsts = {target: read_video(target)[0].astype(int) for target in set(expected)}  # damc_core.media's
    for attrs, target in zip(videos, expected, strict=True):
        src = attrs["src"]
        assert not urlparse(src).scheme and not src.startswith("/"), src
        resolved = (page_path.parent / unquote(src)).resolve()
        assert resolved == target.resolve() and resolved.is_file()
        assert {"controls", "muted", "loop", "playsinline"} <= set(attrs)
        poster = cv2.imread(str(page_path.parent / unquote(attrs["poster"])))[..., ::-1]
        ffmpeg_first = ffmpeg_firsts[target]
        assert np.abs(poster.astype(int) - ffmpeg_first).max() <= 12  # a JPEG of the first frame
        assert np.abs(first_frame(target).astype(int) - ffmpeg_first).max() <= 3
    assert videos[0]["src"] == "../videos/ground%20truth%20%231.mp4"
    assert videos[0]["poster"] == "index/May/poster_gt.jpg"  # figures beside the page, one folder per subject
    assert videos[3]["poster"] == "index/_subject-2/poster_gt.jpg"  # a name that is no safe folder name

    references = local_references(page, page_path)
    ids = {attrs["id"] for _, attrs in page.elements if "id" in attrs}
    broken = [ref for ref in references if not (ref[2][1:] in ids if isinstance(ref[2], str) else ref[2].is_file())]
    assert not broken, broken
    assert sum(isinstance(ref[2], str) for ref in references) >= 4  # nav and footnote fragments were checked too

    images = page.all("img")
    assert [Path(unquote(i["src"])).name for i in images] == ["still_closed.png", "still_open.png", "mouth.png"]
    for attrs in images:
        decoded = cv2.imread(str(page_path.parent / unquote(attrs["src"])))
        assert decoded is not None and attrs["alt"]
        assert int(attrs["height"]) == decoded.shape[0] * (2 if "mouth" in attrs["src"] else 1)
    links = [attrs["href"] for attrs in page.all("a")]
    assert "experiments.html" in links
    assert "frame 107 (inner-lip opening real 1.0 px, rendered 0.9 px)" in text  # closed: OPENING's minimum
    assert "frame 105 (inner-lip opening real 10.0 px, rendered 9.0 px)" in text  # open: its first maximum

    metrics = page.tables["metrics"]
    assert len(metrics) == 2
    may_rows = {row[0][1]: row for row in metrics[0][1:]}
    assert list(may_rows) == ["psnr", "lpips", "fid", "lmd", "lse_c"]
    assert may_rows["psnr"][1][1] == "31.235" and may_rows["psnr"][2][1] == "numpy"
    lpips_cell = may_rows["lpips"][1]
    assert lpips_cell[1].startswith("n/a") and lpips_cell[0]["class"] == "na"
    assert lpips_cell[0]["title"] == "AlexNet weights <alexnet-owt-7be5be79.pth> missing"
    assert may_rows["fid"][1][0]["title"] == "pytorch-fid is not installed"
    notes = dict(page.notes)
    assert notes["subject-1-note-1"] == "lpips: AlexNet weights <alexnet-owt-7be5be79.pth> missing"
    assert notes["subject-1-note-2"] == "fid: pytorch-fid is not installed"

    reference = page.tables["reference"]
    assert len(reference) == 2
    header, *rows = reference[0]
    up, down = "\u2191", "\u2193"
    assert [cell[1] for cell in header] == ["Method", f"PSNR {up}", f"LPIPS {down}", f"FID {down}", f"LMD {down}",
                                            f"Sync {up}"]
    assert [row[0][1] for row in rows] == [*PAPER_TABLE_1, "This run: May"]
    assert [cell[1] for cell in rows[6]] == ["ER-NeRF", "33.010", "0.031", "4.975", "3.011", "5.112"]
    assert [cell[1] for cell in rows[7]] == ["DAMC (paper)", "33.503", "0.027", "5.147", "2.437", "8.171"]
    ours = [cell[1] for cell in rows[8]]
    assert ours[1] == "31.235" and ours[4] == "2.500" and ours[5] == "6.250"  # Sync is our lse_c
    assert ours[2].startswith("n/a") and ours[3].startswith("n/a")
    # the other subject has no LPIPS at all: n/a with the reason why
    other_ours = reference[1][-1]
    assert other_ours[2][1].startswith("n/a") and other_ours[2][0]["title"] == "not among this run's metrics"

    assert len(page.svgs) == 3  # May's mouth opening, then the two training curves
    assert page.svgs[0]["series"] == ["real", "rendered"]
    assert [len(line.split()) for line in page.svgs[0]["polylines"]] == [11, 11]  # one NaN frame left out of each
    assert [len(svg["polylines"][0].split()) for svg in page.svgs[1:]] == [50, 25]

    # self-contained: no URL with a scheme, no external resource, one (inline) script; the nasty name is text only
    assert not re.search(r"(?i)https?:", text) and "://" not in text
    assert not page.all("link") and not page.all("iframe")
    assert page.all("script") == [{}]  # the inline probe script only, without src
    assert text.count("<script") == 1
    # the nasty name as text: in title, h1, nav, h2, the reference caption and our row
    assert text.count('&lt;script&gt;alert("x")&lt;/script&gt; &amp; Co') == 6


def test_output_is_deterministic(media):
    first, second = build(media, folder="site_a"), build(media, folder="site_b")
    assert first.read_bytes() == second.read_bytes()
    files = {page: sorted(p.relative_to(page.with_suffix("")) for p in page.with_suffix("").rglob("*") if p.is_file())
             for page in (first, second)}
    # posters (May 3, the other 2), May's stills and mouth strip, the staging marker
    assert files[first] == files[second] and len(files[first]) == 3 + 2 + 3 + 1
    for name in files[first]:
        assert (first.with_suffix("") / name).read_bytes() == (second.with_suffix("") / name).read_bytes(), name
    before = {name: (first.with_suffix("") / name).read_bytes() for name in files[first]}
    build(media, folder="site_a")  # rewriting replaces the folder as a whole, with the same bytes
    assert {name: (first.with_suffix("") / name).read_bytes() for name in files[first]} == before


def test_missing_files_and_bad_curves_are_refused(media, tmp_path):
    broken = SubjectResults("x", gt_video=tmp_path / "absent.mp4", rendered_video=media["rendered"])
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        write_gallery(tmp_path / "g.html", [broken], PAPER_TABLE_1, "t")
    assert not (tmp_path / "g.html").exists() and not (tmp_path / "g").exists()
    good = SubjectResults("x", gt_video=media["gt"], rendered_video=media["rendered"])
    with pytest.raises(FileNotFoundError, match="nothing.html"):
        write_gallery(tmp_path / "g.html", [good], PAPER_TABLE_1, "t", experiments_page=tmp_path / "nothing.html")
    with pytest.raises(ValueError, match="would contain the page"):
        write_gallery(tmp_path / "g.html", [good], PAPER_TABLE_1, "t", figures_dir=tmp_path)
    with pytest.raises(ValueError, match="distinct names"):
        write_gallery(tmp_path / "g.html", [good, good], PAPER_TABLE_1, "t")
    assert not (tmp_path / "g.html").exists()
    bad = tmp_path / "bad.tsv"
    bad.write_text("step\ta\tb\n1\t2\t3\n")
    with pytest.raises(ValueError, match="step"):
        read_curve(bad)
    assert read_curve(media["lr"])[0] == "learning_rate"
    name, points = read_curve(media["loss"])
    assert name == "train_loss" and points[:2] == [(0.0, 1.0), (10.0, 1 / 1.2)]


def test_line_chart_edge_cases():
    empty = svg_line_chart([], title="t", x_label="step", y_label="v")
    assert "no finite values" in empty and "<polyline" not in empty
    flat = svg_line_chart([(0, 2.0), (1, 2.0), (2, float("nan"))], title="t", x_label="step", y_label="v")
    assert len(Page(flat).svgs[0]["polylines"][0].split()) == 2
    single = svg_line_chart([(5, 1.0)], title="t", x_label="step", y_label="v")
    assert "<circle" in single
    many = svg_line_chart([(i, float(i % 7)) for i in range(5001)], title="t", x_label="step", y_label="v")
    points = Page(many).svgs[0]["polylines"][0].split()
    assert len(points) == MAX_CURVE_POINTS
    labels = re.findall(r">([^<>]+)</text>", many)
    assert "0" in labels and "5000" in labels  # round ticks at the ends of the x range


def test_two_series_chart_draws_both_in_the_plot_area():
    real = [(100.0 + t, 2.0 + t) for t in range(10)]
    rendered = [(100.0 + t, 1.0 + 2 * t) for t in range(10)] + [(200.0, float("nan"))]
    page = Page(svg_chart({"real": real, "rendered": rendered}, title="t", x_label="frame", y_label="px", width=400,
                          height=200))
    (svg,) = page.svgs
    assert svg["series"] == ["real", "rendered"]
    lines = [[tuple(float(c) for c in point.split(",")) for point in line.split()] for line in svg["polylines"]]
    assert [len(line) for line in lines] == [10, 10]  # the NaN point is left out
    left, right, top, bottom = 72, 400 - 24, 26, 200 - 42  # the plot area of a 400 x 200 chart
    assert all(left <= x <= right and top <= y <= bottom for line in lines for x, y in line)
    # shared axes: both start at x = left; the highest value (rendered's last, 19) is at the top, the lowest (1) at the
    # bottom; real's last (11) lies between them in proportion
    assert lines[0][0][0] == lines[1][0][0] == left and lines[0][-1][0] == lines[1][-1][0] == right
    assert lines[1][-1][1] == pytest.approx(top) and lines[1][0][1] == pytest.approx(bottom)
    assert lines[0][-1][1] == pytest.approx(bottom - (11 - 1) / (19 - 1) * (bottom - top), abs=0.01)
    legend = svg_chart({"real": real, "rendered": rendered}, title="t", x_label="frame", y_label="px")
    assert legend.count('<line class="legend"') == 2 and ">rendered</text>" in legend
    single = svg_line_chart(real, title="t", x_label="frame", y_label="px")
    assert Page(single).svgs[0]["series"] == ["px"] and 'class="legend"' not in single


def test_still_selection_on_a_known_curve():
    assert select_stills(OPENING) == StillChoice(closed=7, open=5)  # the minimum 1; the first of the two maxima 10
    assert select_stills(np.array([np.nan, 3.0, 1.0, 8.0])) == StillChoice(closed=2, open=3)  # NaN is no extreme
    assert select_stills(np.array([np.nan, 3.0, np.nan])) == StillChoice(closed=1, open=1)
    assert select_stills(np.full(4, np.nan)) is None


def test_error_image_is_the_clipped_absolute_difference_times_four():
    real = np.array([[[10, 200, 0], [255, 0, 60]]], np.uint8)
    rendered = np.array([[[70, 190, 100], [0, 255, 60]]], np.uint8)
    error = error_image(real, rendered)
    assert error.dtype == np.uint8 and ERROR_GAIN == 4
    assert error.tolist() == [[[240, 40, 255], [255, 255, 0]]]  # no uint8 wrap-around; 400 and 1020 clip to 255
    assert error_image(rendered, real).tolist() == error.tolist()
    with pytest.raises(GalleryFigureError, match="different shapes"):
        error_image(real, rendered[:, :1])
    strip = still_strip(real, rendered)
    assert strip.shape == (1, 3 * 2 + 2 * GAP_PX, 3)
    assert (strip[:, :2] == real).all() and (strip[:, 2 + GAP_PX:4 + GAP_PX] == rendered).all()
    assert (strip[:, -2:] == error).all() and (strip[:, 2:2 + GAP_PX] == 255).all()


def test_validation_figures_keep_the_chosen_frames(media):
    figures = media["validation"]
    frame_ids, real, rendered = validation_frames()
    closed, opened = figures.stills
    assert (closed.key, closed.frame_id, opened.key, opened.frame_id) == ("closed", 107, "open", 105)
    assert (closed.strip[:, :SIZE] == real[7]).all() and (closed.strip[:, SIZE + GAP_PX:2 * SIZE + GAP_PX]
                                                         == rendered[7]).all()
    col0, row0, col1, row1 = MOUTH_BOX
    error = opened.strip[:, -SIZE:]
    assert (error[row0:row1, col0:col1] == 24).all() and error.sum() == 24 * 3 * (row1 - row0) * (col1 - col0)
    assert evenly_spaced(8, 12) == [0, 2, 3, 5, 6, 8, 9, 11] and evenly_spaced(8, 5) == [0, 1, 2, 3, 4]
    assert figures.mouth_frame_ids == tuple(100 + i for i in evenly_spaced(8, 12))
    height, width = row1 - row0, col1 - col0
    assert figures.mouth_strip.shape == (2 * height + GAP_PX, 8 * width + 7 * GAP_PX, 3)
    third = 2 * (width + GAP_PX)  # third column: frame index 3
    assert (figures.mouth_strip[:height, third:third + width] == real[3, row0:row1, col0:col1]).all()
    assert (figures.mouth_strip[height + GAP_PX:, third:third + width] == rendered[3, row0:row1, col0:col1]).all()
    no_face = validation_figures(frame_ids, real, rendered, np.full(12, np.nan), np.full(12, np.nan), MOUTH_BOX, "s")
    assert no_face.stills == () and "no face" in no_face.stills_reason
    with pytest.raises(GalleryFigureError, match="11 real openings"):
        validation_figures(frame_ids, real, rendered, OPENING[:11], OPENING, MOUTH_BOX, "s")
    with pytest.raises(GalleryFigureError, match="outside"):
        validation_figures(frame_ids, real, rendered, OPENING, OPENING, (0, 0, SIZE + 1, 8), "s")


def test_images_encode_deterministically_and_losslessly_as_png():
    _, real, _ = validation_frames()
    png = encode_image(real[3], ".png")
    assert png == encode_image(real[3].copy(), ".png") and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] == real[3]).all()
    jpeg = encode_image(real[3], ".jpg")
    assert jpeg[:2] == b"\xff\xd8" and jpeg == encode_image(real[3], ".jpg")
    with pytest.raises(GalleryFigureError, match="uint8"):
        encode_image(real[3].astype(np.float32), ".png")


def test_mouth_openings_are_read_from_the_render_report(tmp_path):
    report = tmp_path / "sample.json"
    report.write_text(json.dumps({"validation": {"mouth_opening_px": {"ground_truth": [3.5, None, 9.0],
                                                                      "rendered": [3.0, 4.0, None]}}}))
    real, rendered = read_mouth_openings(report, 3)
    assert real[0] == 3.5 and np.isnan(real[1]) and np.isnan(rendered[2]) and rendered[1] == 4.0
    with pytest.raises(GalleryFigureError, match="validation split has 4 frames"):
        read_mouth_openings(report, 4)
    report.write_text(json.dumps({"validation": {}}))
    with pytest.raises(GalleryFigureError, match="mouth_opening_px"):
        read_mouth_openings(report, 3)
    with pytest.raises(GalleryFigureError, match="render stage"):
        read_mouth_openings(tmp_path / "absent.json", 3)


# ---------------------------------------------------------------------------------------------- experiments table


def exp_state(rev: str, name: str | None, mode: str, dim: int, metrics: dict | None) -> dict:
    """One revision as `dvc exp show --json` (dvc 3.67) gives it: params and metrics files as {"data": ...}, null
    fields of the metrics dropped (a null metric keeps only its reason and backend)."""
    data = {"rev": rev, "timestamp": None if rev == "workspace" else "2026-12-02T02:09:45",
            "params": {"params.yaml": {"data": {"subjects": {"sample": "data/sample/subject/video.mp4"},
                                                "fusion": {"mode": mode, "dim": dim, "window": 9, "heads": 2}}}},
            "metrics": {} if metrics is None else {"reports/nerf_fine/sample/metrics.json": {"data": {"step": 300}},
                                                   "reports/metrics.json": {"data": metrics}},
            "deps": {"stages/evaluate.py": {"hash": "15ef32ab417fb527f09b09b9c2f2dff9", "size": 1357, "nfiles": None}},
            "outs": {}, "meta": {}}
    return {"rev": rev, "name": name, "data": data, "error": None, "experiments": None}


def sample_metrics(psnr: float, tts_zh: float | None) -> dict:
    zh = {"backend": "ours", **({"value": tts_zh} if tts_zh is not None else {"reason": "no face in zh_greeting"})}
    return {"sample": {
        "validation": {"psnr": {"value": psnr, "backend": "numpy"}, "lmd": {"value": 0.3, "backend": "mediapipe"},
                       "lse_c": {"reason": "SyncNet weights not found at models/syncnet_v2.model", "backend": "s"},
                       "expert_confidence": {"value": 0.075, "backend": "ours"}},
        "validation_ground_truth": {"expert_confidence": {"value": 0.5, "backend": "ours"}},
        "tts": {"en_weather": {"expert_confidence": {"value": 0.2, "backend": "ours"}}, "zh_greeting": {
            "expert_confidence": zh}}}}


def exp_show_fixture() -> list:
    """Shaped like real `dvc exp show --json` output: the workspace, the baseline commit with its experiments (the
    newest first; executor null for a finished one from its ref, a state for queued and failed ones), a revision dvc
    could not read."""
    baseline = exp_state("59a5b21131ed9c4873b8b618afb8f51ef4dbb8ea", "main", "csfm", 64, sample_metrics(35.28, 0.25))
    baseline["experiments"] = [
        {"revs": [exp_state("dafc22c9" + "0" * 32, "proof-loof", "content", 64, sample_metrics(33.0, 0.3))],
         "executor": None, "name": "proof-loof"},
        {"revs": [exp_state("cfdbfb39" + "0" * 32, "concat-64", "concat", 64, sample_metrics(34.1, None))],
         "executor": None, "name": "concat-64"},
        {"revs": [exp_state("ed015da9" + "0" * 32, "queued-one", "dynamic", 32, None)],
         "executor": {"state": "queued", "name": "dvc-task", "local": {"root": None, "log": None, "pid": None,
                                                                       "returncode": None, "task_id": "ed015da9"}},
         "name": "queued-one"},
        {"revs": [exp_state("aa11bb22" + "0" * 32, "broken", "cross_attention", 64, sample_metrics(1.0, 1.0))],
         "executor": {"state": "failed", "name": "dvc-task", "local": None}, "name": "broken"},
        {"revs": [{"rev": "ccdd" + "0" * 36, "name": "unreadable", "data": None,
                   "error": {"msg": "bad object", "type": "SCMError"}, "experiments": None}],
         "executor": None, "name": "unreadable"},
    ]
    return [exp_state("workspace", None, "csfm", 64, sample_metrics(35.28, 0.25)), baseline]


def test_experiment_rows_from_dvc_exp_show():
    rows = experiment_rows(exp_show_fixture())
    assert [(r.experiment, r.kind, r.state, r.fusion_mode, r.fusion_dim) for r in rows] == [
        ("workspace", "workspace", "success", "csfm", 64), ("main", "baseline", "success", "csfm", 64),
        ("proof-loof", "experiment", "success", "content", 64), ("concat-64", "experiment", "success", "concat", 64),
        ("queued-one", "experiment", "queued", "dynamic", 32), ("broken", "experiment", "failed", "cross_attention", 64),
        ("unreadable", "experiment", "error", None, None)]
    main, content, concat, queued, failed, unreadable = rows[1:]
    assert main.subject == "sample" and main.psnr == Value(35.28, None) and main.lmd == Value(0.3, None)
    assert main.lse_c == Value(None, "SyncNet weights not found at models/syncnet_v2.model")  # dvc dropped "value"
    assert main.expert_confidence == Value(0.075, None)
    assert main.tts_expert_confidence.value == pytest.approx((0.2 + 0.25) / 2)
    assert content.psnr.value == 33.0 and content.rev.startswith("dafc22c9")
    assert concat.tts_expert_confidence.value is None  # a mean over some clips only would mislead
    assert "zh_greeting: no face in zh_greeting" in concat.tts_expert_confidence.reason
    for row in (queued, failed):  # a failed run's metrics would be stale: none shown
        assert row.subject is None and row.psnr.value is None and "no metrics of its own" in row.psnr.reason
    assert unreadable.psnr.value is None and "bad object" in unreadable.psnr.reason
    assert experiment_rows([]) == []
    with pytest.raises(ValueError, match="list"):
        experiment_rows({"workspace": {}})


def test_markdown_table():
    rows = experiment_rows(exp_show_fixture())[1:4]
    lines = markdown_table(rows).splitlines()
    assert lines[0] == ("| experiment | subject | fusion.mode | fusion.dim | PSNR \u2191 | LMD \u2193 | Sync (LSE-C) "
                        "\u2191 | expert conf. val \u2191 | expert conf. TTS \u2191 |")
    assert lines[2] == "| main | sample | csfm | 64 | 35.280 | 0.300 | n/a [1] | 0.075 | 0.225 |"
    assert lines[4] == "| concat-64 | sample | concat | 64 | 34.100 | 0.300 | n/a [1] | 0.075 | n/a [2] |"
    assert lines[6] == "[1] SyncNet weights not found at models/syncnet_v2.model"
    assert lines[7].startswith("[2] not every TTS clip has a value") and len(lines) == 8
    piped = ExperimentRow("a|b", "r", "experiment", "success", "s", "csfm", 64, *[Value(1.0, None)] * 5)
    assert "| a\\|b |" in markdown_table([piped])


def test_experiments_script_prints_markdown_and_writes_the_page(tmp_path):
    saved = tmp_path / "exp.json"
    saved.write_text(json.dumps(exp_show_fixture()))
    gallery = tmp_path / "reports" / "gallery.html"
    gallery.parent.mkdir()
    gallery.write_text("<!DOCTYPE html>")
    page_path = tmp_path / "reports" / "experiments.html"
    done = subprocess.run([sys.executable, "scripts/experiments_table.py", "--from-json", str(saved), "--output",
                           str(page_path), "--gallery", str(gallery)], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == markdown_table(experiment_rows(exp_show_fixture()))
    page = Page(page_path.read_text(encoding="utf-8"))
    (table,) = page.tables["experiments"]
    assert len(table) == 1 + 7 and [cell[1] for cell in table[3]][:4] == ["proof-loof", "sample", "content", "64"]
    assert [cell[1] for cell in table[5]][0] == "queued-one (queued)"
    assert [row[0][1] for row in page.tables["reference"][0][1:]] == ["content", "dynamic", "concat",
                                                                      "cross_attention", "csfm"]
    references = local_references(page, page_path)
    assert ("a", "href", gallery.resolve()) in references
    ids = {attrs["id"] for _, attrs in page.elements if "id" in attrs}
    assert all(ref[2][1:] in ids for ref in references if isinstance(ref[2], str))


# ------------------------------------------------------------------------------------------------- headless browser

def chromium() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)} on PATH); "
                "install Debian's `chromium` package to run this test")


def dump_dom(browser: str, page: Path, profile: Path, *extra: str) -> str:
    command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--no-default-browser-check", "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}",
               *extra, "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_gallery_in_headless_chromium(media, tmp_path):
    """Chromium opens the page from disk, builds the tables and charts, loads every image and poster, and loads and
    decodes both H.264 videos."""
    browser = chromium()
    page_path = build(media, "browser.html")
    for _attempt in range(3):  # media loading runs on real time; under heavy load a run can end before it
        page = Page(dump_dom(browser, page_path, tmp_path / "profile"))
        videos, images = page.all("video"), page.all("img")
        if all("data-duration" in v or "data-error" in v for v in videos) and all(
                "data-first-frame" in v or "data-error" in v for v in videos) and all(
                "data-poster-width" in v for v in videos) and all("data-natural-width" in i for i in images):
            break
    assert len(videos) == 5 and len(images) == 3
    assert len(page.tables["metrics"]) == 2 and len(page.tables["reference"][0]) == 1 + len(PAPER_TABLE_1) + 1
    assert len(page.svgs) == 3
    for image in images:  # the browser decoded each picture at its file's size
        assert int(image.get("data-natural-width", 0)) > 0, image
        assert int(image["data-natural-width"]) * (2 if "mouth" in image["src"] else 1) == int(image["width"]), image
    assert all(int(video.get("data-poster-width", 0)) == SIZE for video in videos), videos

    errors = [v for v in videos if "data-error" in v]
    if errors and all(v["data-error"] == "4" for v in errors):
        pytest.skip(f"{browser} cannot decode H.264 (MEDIA_ERR_SRC_NOT_SUPPORTED; a build without proprietary "
                    "codecs): the page's DOM, tables and charts were checked, video playback was not")
    assert not errors, errors
    for video in videos:
        assert float(video["data-duration"]) == pytest.approx(FRAMES / FPS, abs=0.05), video
        assert video["data-size"] == f"{SIZE}x{SIZE}" and video["data-first-frame"] == "decoded", video


PIXEL_PROBE = """<!DOCTYPE html><html><head><meta charset="utf-8"><script>
document.addEventListener('loadeddata', function (e) {
  var v = e.target, c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  var g = c.getContext('2d'); g.drawImage(v, 0, 0);
  var d = g.getImageData(0, 0, c.width, c.height).data;
  function at(row, col) { var i = (row * c.width + col) * 4; return [d[i], d[i + 1], d[i + 2]].join(','); }
  v.setAttribute('data-pixels', [at(8, 40), at(48, 40), at(8, 4)].join(' '));
}, true);
</script></head><body><video muted preload="auto" src="SRC"></video></body></html>
"""


def test_chromium_decodes_the_h264_frames(media, tmp_path):
    """The decoded first frame has the encoded content (test-only page; canvas reads of file:// videos need
    --allow-file-access-from-files, which the gallery itself does not)."""
    browser = chromium()
    probe = tmp_path / "probe.html"
    probe.write_text(PIXEL_PROBE.replace("SRC", media["rendered"].resolve().as_uri()))
    for _attempt in range(3):
        video = Page(dump_dom(browser, probe, tmp_path / "profile", "--allow-file-access-from-files")).all("video")[0]
        if "data-pixels" in video:
            break
    if "data-pixels" not in video:
        pytest.skip(f"{browser} did not decode the H.264 clip (no frame within the time budget): no H.264 support?")
    bright, dark, stripe = [tuple(int(c) for c in p.split(",")) for p in video["data-pixels"].split()]
    assert all(abs(c - 200) <= 6 for c in bright), bright
    assert all(c <= 6 for c in dark), dark
    assert all(abs(c - 90) <= 6 for c in stripe), stripe
