"""Shared test fixtures: paths of the repository and of the read-only ../shared material, and the end-to-end
tests' pipeline run, started in the background at the beginning of the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pipeline_run import THREADS, BackgroundRepro

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
PIPELINE_FIXTURE = "reproduced"
"""The fixture of tests/test_pipeline_e2e.py that reads the background pipeline run."""


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real clips, audio, weights); tests that need it are skipped when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the real test media ship beside the repository, not in it")
    return SHARED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that read the pipeline run go last, so that the run overlaps every other test."""
    items.sort(key=lambda item: PIPELINE_FIXTURE in item.fixturenames)


@pytest.fixture(scope="session", autouse=True)
def background_repro(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[BackgroundRepro | None]:
    """The end-to-end tests' `dvc repro`, started before the first test when any of them is collected (None
    otherwise); torch in this process uses pipeline_run.THREADS threads for the session then."""
    if not any(PIPELINE_FIXTURE in item.fixturenames for item in request.session.items):
        yield None
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    repro = BackgroundRepro(REPO_ROOT, tmp_path_factory)
    try:
        yield repro
    finally:
        repro.stop()
        torch.set_num_threads(threads)
