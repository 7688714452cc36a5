"""Tests for damc_core.hdtf.metadata: the official HDTF metadata files, their quirks, and malformed lines."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from damc_core.hdtf.metadata import ClipSpec, canonical_url, parse_time, read_metadata

SETS = ("RD", "WDA", "WRA")
RANGE = re.compile(r"\b\d+:\d\d-\d+:\d\d\b")
CLIPS_WITHOUT_CROP_ROWS = {
    "RD Radio15_0", "RD Radio6_0",
    "WDA ByronDorgan0_0", "WDA DeanPhillips_0", "WDA JeffMerkley0_0", "WDA JimMcGovern_0", "WDA JimMcGovern1_0",
    "WDA LindaSnchez_0",
    "WRA BillCassidy_0", "WRA CandiceMiller_0", "WRA DuncanHunter_1", "WRA JaimeHerreraBeutler_0", "WRA KevinBrady0_0",
    "WRA MittRomney_1", "WRA RudyGiuliani_0",
}
OTHER_REAL_PROBLEMS = {
    "RD Radio24: url but no time stamps",
    "WRA_resolution.txt:76: KevinMcCarthy1: resolution 0 is not a frame height",
    "WRA MittRomney_1: starts at 00:33, before the previous clip ends (08:30)",
    "WRA PeterKing_0: crop_wh window reaches row 872, past the 720-pixel reference frame",
    "WDA MaggieHassan_0: crop_wh window reaches row 776, past the 720-pixel reference frame",
    "WDA MazieHirono1_0: crop_wh window reaches row 1134, past the 720-pixel reference frame",
}


@pytest.fixture(scope="module")
def metadata_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "hdtf_metadata"


@pytest.fixture(scope="module")
def real(metadata_dir: Path) -> tuple[list[ClipSpec], list[str]]:
    return read_metadata(metadata_dir)


def clips_of(specs: list[ClipSpec], video: str) -> list[ClipSpec]:
    return [spec for spec in specs if spec.video == video]


def write_set(folder: Path, set_name: str = "XX", **files: str) -> Path:
    """Write `<set>_<kind>.txt` for each keyword `kind`; kinds not given get an empty file."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("video_url", "annotion_time", "resolution", "crop_wh", "crop_ratio"):
        (folder / f"{set_name}_{kind}.txt").write_bytes(files.get(kind, "").encode("utf-8"))
    return folder


def test_real_counts_per_set(real, metadata_dir):
    specs, _ = real
    videos = Counter(spec.set_name for spec in specs if spec.clip_index == 0)
    clips = Counter(spec.set_name for spec in specs)
    assert dict(videos) == {"RD": 56, "WDA": 183, "WRA": 130}
    assert dict(clips) == {"RD": 66, "WDA": 195, "WRA": 175}
    for set_name in SETS:
        text = (metadata_dir / f"{set_name}_annotion_time.txt").read_text(encoding="utf-8")
        assert clips[set_name] == len(RANGE.findall(text))
        assert videos[set_name] == sum(1 for line in text.splitlines() if line.strip())
    assert sum(spec.end_s - spec.start_s for spec in specs) / 3600 == pytest.approx(17.0703, abs=1e-4)


def test_real_clip_ids_are_unique_and_match_the_redistributed_clip_names(real, shared_dir):
    specs, _ = real
    ids = {spec.clip_id for spec in specs}
    assert len(ids) == len(specs)
    redistributed = {path.stem for path in (shared_dir / "data" / "hdtf_clips").glob("*_000.mp4")}
    assert redistributed == {"RD_Radio2_000", "RD_Radio34_000", "WDA_EdMarkey0_000", "WDA_KatieHill_000"}
    assert redistributed <= ids


def test_real_video_with_url_but_no_time_stamps_is_reported(real):
    specs, problems = real
    assert "RD Radio24: url but no time stamps" in problems
    assert not clips_of(specs, "RD_Radio24")


def test_real_first_url_after_the_bom_is_parsed(real):
    specs, problems = real
    (spec,) = clips_of(specs, "WDA_CarolynMaloney2")
    assert spec.url == "https://www.youtube.com/watch?v=RApGxN-O9Qc"
    assert not any("\ufeff" in problem for problem in problems)


def test_real_urls_lose_their_time_parameter(real):
    specs, _ = real
    (radio2,) = clips_of(specs, "RD_Radio2")
    (sheldon,) = clips_of(specs, "WDA_SheldonWhitehouse1")
    assert radio2.url == "https://www.youtube.com/watch?v=uBWJJvynXpA"
    assert sheldon.url == "https://www.youtube.com/watch?v=qVApYzjFkmU"
    assert all(re.fullmatch(r"https://www\.youtube\.com/watch\?v=[\w-]{11}", spec.url) for spec in specs)


def test_real_lines_with_several_ranges_give_several_clips(real):
    specs, _ = real
    radio34 = clips_of(specs, "RD_Radio34")
    assert [spec.clip_index for spec in radio34] == list(range(10))
    assert [spec.clip_id for spec in radio34[:2]] == ["RD_Radio34_000", "RD_Radio34_001"]
    assert (radio34[0].start_s, radio34[0].end_s) == (2.0, 30.0)
    assert (radio34[-1].start_s, radio34[-1].end_s) == (260.0, 290.0)
    assert all(before.end_s <= after.start_s for before, after in zip(radio34, radio34[1:], strict=False))
    assert radio34[6].crop_wh == (668, 722, 0, 722) and radio34[6].crop_ratio == 1.0
    kinzinger = clips_of(specs, "WRA_AdamKinzinger2")  # the line ends in a space
    assert [(spec.start_s, spec.end_s) for spec in kinzinger] == [(40.0, 80.0), (120.0, 160.0), (210.0, 230.0)]


def test_real_clips_without_crop_rows_are_reported(real, metadata_dir):
    specs, problems = real
    for kind in ("crop_wh", "crop_ratio"):
        reported = {problem.removesuffix(f": no {kind} row") for problem in problems
                    if problem.endswith(f": no {kind} row")}
        assert reported == CLIPS_WITHOUT_CROP_ROWS
    without = {f"{spec.set_name} {spec.name}_{spec.clip_index}" for spec in specs if spec.crop_wh is None}
    assert without == CLIPS_WITHOUT_CROP_ROWS
    assert all(spec.crop_ratio is None for spec in specs if spec.crop_wh is None)
    crop_rows = sum(1 for s in SETS for line in (metadata_dir / f"{s}_crop_wh.txt").read_text().splitlines()
                    if line.strip())
    assert len(specs) - len(without) == crop_rows


def test_real_problems_are_exactly_the_known_quirks(real):
    specs, problems = real
    crop_problems = [problem for problem in problems if problem.endswith(("no crop_wh row", "no crop_ratio row"))]
    assert len(crop_problems) == 2 * len(CLIPS_WITHOUT_CROP_ROWS)
    assert set(problems) - set(crop_problems) == OTHER_REAL_PROBLEMS
    assert len(problems) == len(crop_problems) + len(OTHER_REAL_PROBLEMS)
    (kevin, _) = clips_of(specs, "WRA_KevinMcCarthy1")
    assert kevin.resolution is None


def test_clip_spec_keys_and_crop_box():
    spec = ClipSpec("RD", "Radio11", 1, None, 90.0, 150.0, 720, (557, 478, 12, 478), 1.2)
    assert spec.video == "RD_Radio11"
    assert spec.clip_id == "RD_Radio11_001"
    assert spec.crop_box == (557, 12, 478, 478)


def test_quirks_bom_blank_lines_crlf_trailing_spaces_and_several_ranges(tmp_path):
    folder = write_set(
        tmp_path,
        video_url="\ufeffAlpha https://www.youtube.com/watch?v=AAAAAAAAAAA&t=6s\r\n\r\n"
                  "Beta  https://youtu.be/BBBBBBBBBBB \n",
        annotion_time="\n  Alpha.mp4 00:05-00:20 1:00:00-1:00:30.5   \nBeta.mp4\t01:00-02:00\n\n",
        resolution="Alpha.mp4 1080\nBeta.mp4 720\n",
        crop_wh="Alpha_0.mp4 10 500 5 500\nAlpha_1.mp4 20 510 0 510\nBeta_0.mp4 1 300 2 300\n",
        crop_ratio="Alpha_0.mp4 1.2\nAlpha_1.mp4 0.9\nBeta_0.mp4 1.0\n",
    )
    specs, problems = read_metadata(folder)
    assert problems == []
    assert specs == [
        ClipSpec("XX", "Alpha", 0, "https://www.youtube.com/watch?v=AAAAAAAAAAA", 5.0, 20.0, 1080,
                 (10, 500, 5, 500), 1.2),
        ClipSpec("XX", "Alpha", 1, "https://www.youtube.com/watch?v=AAAAAAAAAAA", 3600.0, 3630.5, 1080,
                 (20, 510, 0, 510), 0.9),
        ClipSpec("XX", "Beta", 0, "https://www.youtube.com/watch?v=BBBBBBBBBBB", 60.0, 120.0, 720,
                 (1, 300, 2, 300), 1.0),
    ]


def test_missing_rows_are_reported_and_clips_kept(tmp_path):
    folder = write_set(
        tmp_path,
        video_url="Alpha https://www.youtube.com/watch?v=AAAAAAAAAAA\nGhost https://www.youtube.com/watch?v=GGGGGGGGGGG\n",
        annotion_time="Alpha.mp4 00:05-00:20 00:30-00:40\nNoUrl.mp4 00:01-00:09\n",
        resolution="Alpha.mp4 720\n",
        crop_wh="Alpha_0.mp4 10 500 5 500\nAlpha_7.mp4 10 500 5 500\n",
        crop_ratio="Alpha_0.mp4 1.2\n",
    )
    specs, problems = read_metadata(folder)
    assert [spec.clip_id for spec in specs] == ["XX_Alpha_000", "XX_Alpha_001", "XX_NoUrl_000"]
    assert specs[1].crop_wh is None and specs[1].crop_ratio is None
    assert specs[2].url is None and specs[2].resolution is None
    assert sorted(problems) == sorted([
        "XX Ghost: url but no time stamps",
        "XX Alpha_1: no crop_wh row",
        "XX Alpha_1: no crop_ratio row",
        "XX NoUrl: no video_url row",
        "XX NoUrl: no resolution row",
        "XX NoUrl_0: no crop_wh row",
        "XX NoUrl_0: no crop_ratio row",
        "XX Alpha_7: crop_wh row but no such clip",
    ])


def test_malformed_lines_are_reported_by_file_and_line(tmp_path):
    folder = write_set(
        tmp_path,
        video_url="Alpha https://vimeo.com/123\nBeta https://www.youtube.com/watch?v=BBBBBBBBBBB extra\n",
        annotion_time="Alpha.mp4 00:05-00:20 00:3x-00:40 00:50-01:10\n\nBeta.mp4 02:00-01:00\nGamma.mp4\n"
                      "Delta.mp4 00:61-01:00 00:10\nAlpha.mp4 09:00-09:10\n",
        resolution="Alpha.mp4 hd\nBeta.mp4 0\n",
        crop_wh="Alpha_0.mp4 10 500 5\nAlpha_2.mp4 10 -5 0 500\n",
        crop_ratio="Alpha_0.mp4 -1\nAlpha_2.mp4 1.2\n",
    )
    specs, problems = read_metadata(folder)
    assert [(spec.clip_index, spec.start_s, spec.end_s) for spec in specs] == [(0, 5.0, 20.0), (2, 50.0, 70.0)]
    assert all(spec.url is None and spec.resolution is None and spec.crop_wh is None for spec in specs)
    assert [spec.crop_ratio for spec in specs] == [None, 1.2]
    located = {problem.split(":")[0] + ":" + problem.split(":")[1] for problem in problems if ".txt:" in problem}
    assert located == {
        "XX_video_url.txt:1", "XX_video_url.txt:2",
        "XX_annotion_time.txt:1", "XX_annotion_time.txt:3", "XX_annotion_time.txt:4", "XX_annotion_time.txt:5",
        "XX_annotion_time.txt:6",
        "XX_resolution.txt:1", "XX_resolution.txt:2",
        "XX_crop_wh.txt:1", "XX_crop_wh.txt:2",
        "XX_crop_ratio.txt:1",
    }
    assert "XX_annotion_time.txt:6: repeats Alpha (first on line 1); ignored" in problems
    assert any(problem.startswith("XX_annotion_time.txt:1: Alpha clip 1: ") for problem in problems)
    assert any(problem.startswith("XX_annotion_time.txt:5: Delta clip 0: ") for problem in problems)
    assert any(problem.startswith("XX_annotion_time.txt:5: Delta clip 1: ") for problem in problems)


def test_missing_files_and_several_sets(tmp_path):
    write_set(tmp_path, "AA", annotion_time="Same.mp4 00:00-00:10\n")
    write_set(tmp_path, "BB", annotion_time="Same.mp4 00:00-00:10\n")
    (tmp_path / "BB_crop_ratio.txt").unlink()
    specs, problems = read_metadata(tmp_path)
    assert [spec.clip_id for spec in specs] == ["AA_Same_000", "BB_Same_000"]
    assert "BB_crop_ratio.txt: missing" in problems


def test_crop_windows_that_do_not_fit_the_reference_frame_are_reported(tmp_path):
    folder = write_set(
        tmp_path,
        video_url="Alpha https://www.youtube.com/watch?v=AAAAAAAAAAA\n",
        annotion_time="Alpha.mp4 00:00-00:10 00:20-00:30\n",
        resolution="Alpha.mp4 720\n",
        crop_wh="Alpha_0.mp4 100 400 0 300\nAlpha_1.mp4 100 800 0 800\n",
        crop_ratio="Alpha_0.mp4 1.2\nAlpha_1.mp4 1.2\n",
    )
    _, problems = read_metadata(folder)
    assert problems == [
        "XX Alpha_0: crop_wh window 400x300 is not square",
        "XX Alpha_1: crop_wh window reaches row 800, past the 720-pixel reference frame",
    ]


@pytest.mark.parametrize(("text", "seconds"), [
    ("00:00", 0.0), ("01:05", 65.0), ("10:35", 635.0), ("75:00", 4500.0), ("1:02:03", 3723.0), ("00:59.5", 59.5),
])
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1:60", "1:60:00", "1:2:3:4", "aa:bb", "-1:00", "01:05 "])
def test_parse_time_rejects_malformed_times(text):
    with pytest.raises(ValueError):
        parse_time(text)


@pytest.mark.parametrize("url", [
    "https://www.youtube.com/watch?v=uBWJJvynXpA&t=6s",
    "https://www.youtube.com/watch?t=6s&v=uBWJJvynXpA",
    "http://youtube.com/watch?v=uBWJJvynXpA",
    "https://m.youtube.com/watch?v=uBWJJvynXpA&list=PL1",
    "https://youtu.be/uBWJJvynXpA?t=6",
])
def test_canonical_url(url):
    assert canonical_url(url) == "https://www.youtube.com/watch?v=uBWJJvynXpA"


@pytest.mark.parametrize("url", [
    "https://vimeo.com/123", "https://www.youtube.com/watch?v=short", "https://www.youtube.com/channel/x", "Radio1",
])
def test_canonical_url_rejects_other_urls(url):
    with pytest.raises(ValueError):
        canonical_url(url)
