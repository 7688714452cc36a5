"""The static HTML gallery: its structure (parsed), escaping, determinism, curves, and a real headless browser run."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from damc_core.gallery import (
    MAX_CURVE_POINTS,
    PAPER_TABLE_1,
    SubjectResults,
    read_curve,
    svg_line_chart,
    write_gallery,
)
from damc_core.media import write_video

FRAMES, SIZE, FPS = 16, 64, 25
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
            self.svgs.append({"polylines": []})
        elif tag == "polyline" and attrs.get("class") == "line":
            self.svgs[-1]["polylines"].append(attrs["points"])

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


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
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
    return {"root": root, "gt": root / "videos" / "ground truth #1.mp4", "rendered": root / "videos" / "rendered.mp4",
            "loss": curves / "train_loss.tsv", "lr": curves / "learning_rate.tsv"}


def subjects(media: dict[str, Path]) -> list[SubjectResults]:
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
    )
    other = SubjectResults(name=NASTY, gt_video=media["gt"], rendered_video=media["gt"],
                           metrics={"psnr": {"value": 100.0, "reason": None, "backend": "numpy"}})
    return [may, other]


def build(media: dict[str, Path], name: str = "index.html") -> Path:
    page = media["root"] / "site" / name
    write_gallery(page, subjects(media), PAPER_TABLE_1, title=f"DAMC gallery {NASTY}")
    return page


def test_page_structure(media):
    page_path = build(media)
    text = page_path.read_text(encoding="utf-8")
    page = Page(text)

    videos = page.all("video")
    assert len(videos) == 5  # May: GT, rendered, one TTS; the other subject: GT, rendered
    expected = [media["gt"], media["rendered"], media["rendered"], media["gt"], media["gt"]]
    for attrs, target in zip(videos, expected, strict=True):
        src = attrs["src"]
        assert not urlparse(src).scheme and not src.startswith("/"), src
        resolved = (page_path.parent / unquote(src)).resolve()
        assert resolved == target.resolve() and resolved.is_file()
        assert {"controls", "muted", "loop", "playsinline"} <= set(attrs)
    assert videos[0]["src"] == "../videos/ground%20truth%20%231.mp4"

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

    assert len(page.svgs) == 2
    assert [len(svg["polylines"][0].split()) for svg in page.svgs] == [50, 25]

    # self-contained: no URL with a scheme, no external resource, one (inline) script; the nasty name is text only
    assert not re.search(r"(?i)https?:", text) and "://" not in text
    assert not page.all("link") and not page.all("img") and not page.all("iframe")
    assert page.all("script") == [{}]  # the inline probe script only, without src
    assert text.count("<script") == 1
    # the nasty name as text: in title, h1, nav, h2, the reference caption and our row
    assert text.count('&lt;script&gt;alert("x")&lt;/script&gt; &amp; Co') == 6


def test_output_is_deterministic(media):
    first, second = build(media, "a.html"), build(media, "b.html")
    assert first.read_bytes() == second.read_bytes()


def test_missing_files_and_bad_curves_are_refused(media, tmp_path):
    broken = SubjectResults("x", gt_video=tmp_path / "absent.mp4", rendered_video=media["rendered"])
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        write_gallery(tmp_path / "g.html", [broken], PAPER_TABLE_1, "t")
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
    """Chromium opens the page from disk, builds the tables and charts, and loads and decodes both H.264 videos."""
    browser = chromium()
    page_path = build(media, "browser.html")
    for _attempt in range(3):  # media loading runs on real time; under heavy load a run can end before it
        page = Page(dump_dom(browser, page_path, tmp_path / "profile"))
        videos = page.all("video")
        if all("data-duration" in v or "data-error" in v for v in videos) and all(
                "data-first-frame" in v or "data-error" in v for v in videos):
            break
    assert len(videos) == 5
    assert len(page.tables["metrics"]) == 2 and len(page.tables["reference"][0]) == 1 + len(PAPER_TABLE_1) + 1
    assert len(page.svgs) == 2

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
