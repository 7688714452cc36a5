"""Shared test fixtures: paths of the repository and of the read-only ../shared material."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real clips, audio, weights); tests that need it are skipped when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the real test media ship beside the repository, not in it")
    return SHARED
