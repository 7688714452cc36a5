"""damc_core.metrics.expert_sync: our own lip-sync expert's confidence, offset sign and windowing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from damc_core.metrics.expert_sync import expert_min_frames, expert_scores, stack_windows
from damc_core.sync import data as sync_data
from damc_core.sync.models import SyncExpert


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


FACE = 48  # lower faces are (24, 48)


def small_expert() -> SyncExpert:
    return SyncExpert(embed_dim=16, face_widths=(8, 16), audio_widths=(8, 8, 16, 16), residual_blocks=0)


class IndexExpert(nn.Module):
    """A fake expert: faces encode their frame index t (every pixel t / 255), mel windows their audio frame index;
    the similarity is 1 when the mel index equals the window's centre frame and falls off with the difference."""

    def forward(self, faces: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        centre = torch.round(faces[:, 3 * 2].mean(dim=(1, 2)) * 255)  # R channel of frame t + 2
        index = mel.mean(dim=(1, 2, 3))
        return 1.0 / (1.0 + (index - centre).abs())


def indexed_clip(n_frames: int, audio_shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose frame t is filled with t, and mel windows whose window k holds the audio of frame k - audio_shift
    (audio_shift > 0: the audio lags the video)."""
    faces = np.broadcast_to(np.arange(n_frames, dtype=np.uint8)[:, None, None, None], (n_frames, 24, FACE, 3)).copy()
    mels = np.broadcast_to((np.arange(n_frames) - audio_shift).astype(np.float32)[:, None, None], (n_frames, 80, 16))
    return faces, mels.copy()


def test_stack_windows_matches_the_training_layout():
    faces = np.random.default_rng(8).integers(0, 256, size=(7, 24, FACE, 3), dtype=np.uint8)
    starts = np.array([0, 2])
    expected = sync_data._stacked_channels(np.stack([faces[s : s + 5] for s in starts]))
    assert torch.equal(stack_windows(faces, starts), expected)


def test_expert_scores_with_a_random_expert_are_finite_and_equal_by_pair_and_by_embedding():
    rng = np.random.default_rng(9)
    faces = rng.integers(0, 256, size=(36, 24, FACE, 3), dtype=np.uint8)
    mels = rng.normal(size=(36, 80, 16)).astype(np.float32)
    expert = small_expert()

    class Wrapped(nn.Module):  # not a SyncExpert: scored pair by pair
        def __init__(self) -> None:
            super().__init__()
            self.inner = expert

        def forward(self, f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            return self.inner(f, m)

    fast = expert_scores(expert, faces, mels, vshift=15)
    slow = expert_scores(Wrapped(), faces, mels, vshift=15, batch=64)
    assert fast.frames == slow.frames == 36 - 30
    assert math.isfinite(fast.lse_c) and math.isfinite(fast.lse_d) and 0 <= fast.lse_d <= 1
    assert fast.av_offset == slow.av_offset
    assert fast.lse_d == pytest.approx(slow.lse_d, abs=1e-5) and fast.lse_c == pytest.approx(slow.lse_c, abs=1e-5)
    assert expert.training  # mode restored


@pytest.mark.parametrize(("audio_shift", "av_offset"), [(0, 0), (3, -3), (-3, 3)])
def test_expert_scores_find_the_offset_sign_as_syncnet(audio_shift, av_offset):
    faces, mels = indexed_clip(40, audio_shift)
    scores = expert_scores(IndexExpert(), faces, mels, vshift=15)
    assert scores.av_offset == av_offset
    assert scores.lse_d == pytest.approx(0.0, abs=1e-6)
    assert scores.frames == 40 - 30
    assert scores.lse_c > 0.5


def test_expert_scores_refuse_short_clips():
    assert expert_min_frames(15) == 31 and expert_min_frames(1) == 5
    faces, mels = indexed_clip(30)
    with pytest.raises(ValueError, match="at least 31 frames"):
        expert_scores(IndexExpert(), faces, mels, vshift=15)
    faces, mels = indexed_clip(31)
    assert expert_scores(IndexExpert(), faces, mels, vshift=15).frames == 1
