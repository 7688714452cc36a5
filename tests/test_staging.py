"""Atomic outputs: a staged folder replaces only its own earlier output, never a folder of the user's."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from damc_core.staging import OUTPUT_MARKER, OutputFolderError, staged_directory, staged_file


def write_output(target, owner="stage", content="new"):
    with staged_directory(target, owner) as work:
        (work / "result.txt").write_text(content)


def test_a_staged_folder_replaces_the_earlier_output_of_its_owner(tmp_path):
    target = tmp_path / "out"
    write_output(target, content="first")
    write_output(target, content="second")
    assert sorted(path.name for path in target.iterdir()) == [OUTPUT_MARKER, "result.txt"]
    assert (target / "result.txt").read_text() == "second"
    assert (target / OUTPUT_MARKER).read_text() == "stage\n"
    assert [path.name for path in tmp_path.iterdir()] == ["out"], "no staging folder left"


@pytest.mark.parametrize("marker", [None, "another_stage\n"], ids=["no marker", "another writer"])
def test_a_folder_of_other_files_is_never_replaced(tmp_path, marker):
    target = tmp_path / "faces"
    (target / "me").mkdir(parents=True)
    (target / "me" / "meta.json").write_text("{}")
    if marker:
        (target / OUTPUT_MARKER).write_text(marker)
    with pytest.raises(OutputFolderError, match=rf"stage refuses to replace {target}: it holds files stage did not "
                                                rf"write \(no {OUTPUT_MARKER} naming stage\)"):
        write_output(target)
    assert (target / "me" / "meta.json").read_text() == "{}"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["faces"]


def test_an_empty_folder_may_become_the_output(tmp_path):
    (tmp_path / "out").mkdir()
    write_output(tmp_path / "out")
    assert (tmp_path / "out" / "result.txt").read_text() == "new"


@pytest.mark.parametrize("where", [".", "..", "~"])
def test_the_current_folder_its_parents_and_home_are_refused_before_the_work(tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("the user's")
    ran = []
    with pytest.raises(OutputFolderError, match="that is the current folder, one above it or the home folder"):
        with staged_directory(Path.home() if where == "~" else tmp_path / where, "stage"):
            ran.append(True)
    assert not ran and sorted(path.name for path in tmp_path.iterdir()) == ["keep.txt"]


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputFolderError, match="it exists and is not a folder"):
        write_output(tmp_path / "out")
    assert (tmp_path / "out").read_text() == "a file"


def test_a_failure_leaves_the_earlier_output_and_no_staging_folder(tmp_path):
    target = tmp_path / "out"
    write_output(target, content="good")
    with pytest.raises(RuntimeError, match="half way"):
        with staged_directory(target, "stage") as work:
            (work / "result.txt").write_text("partial")
            raise RuntimeError("half way")
    assert (target / "result.txt").read_text() == "good"
    assert [path.name for path in tmp_path.iterdir()] == ["out"]


def test_output_folders_follow_the_umask_not_mode_0700(tmp_path):
    previous = os.umask(0o022)
    try:
        write_output(tmp_path / "out")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def test_a_staged_file_replaces_its_target_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with staged_file(target) as partial:
            partial.write_text("half")
            raise RuntimeError
    assert target.read_text() == "old" and [path.name for path in tmp_path.iterdir()] == ["out.txt"]
    with staged_file(target) as partial:
        partial.write_text("new")
    assert target.read_text() == "new"
