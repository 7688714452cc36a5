"""damc_core.metrics.sync: syncnet_python's offset distances and LSE statistics, and SyncNet's windowing of a clip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from damc_core.metrics.mfcc import mfcc, pcm16
from damc_core.metrics.sync import MIN_SYNCNET_FRAMES, SyncScores, offset_distances, sync_scores, syncnet_scores
from damc_core.metrics.syncnet import SyncNet


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def test_offset_distances_match_calc_pdist_literally():
    rng = np.random.default_rng(3)
    video = torch.from_numpy(rng.normal(size=(9, 6)).astype(np.float32))
    audio = torch.from_numpy(rng.normal(size=(9, 6)).astype(np.float32))
    vshift = 3
    padded = torch.cat([torch.zeros(vshift, 6), audio, torch.zeros(vshift, 6)])
    expected = np.stack([
        torch.nn.functional.pairwise_distance(video[[i]].repeat(7, 1), padded[i : i + 7]).numpy() for i in range(9)
    ])
    np.testing.assert_array_equal(offset_distances(video, audio, vshift), expected)


def shifted_pair(k: int, n: int = 60, dim: int = 8, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Video embeddings of n windows and audio embeddings with audio[t] = video[t + k]: the audio k frames ahead."""
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(n + 40, dim)).astype(np.float32)
    return content[20 : 20 + n], content[20 + k : 20 + k + n]


@pytest.mark.parametrize("k", [0, 3, -5])
def test_audio_ahead_by_k_frames_gives_av_offset_k(k):
    video, audio = shifted_pair(k)
    scores = sync_scores(offset_distances(video, audio, vshift=15))
    assert scores.av_offset == k
    assert scores.frames == 60
    # the zero padding at the ends puts a few non-zero distances in the matching column; away from them it is ~0
    per_window = offset_distances(video, audio, vshift=15)[:, 15 - k]
    assert np.abs(per_window[abs(k) : 60 - abs(k)]).max() < 1e-4
    assert scores.lse_d < 0.5 * np.median(offset_distances(video, audio, vshift=15).mean(axis=0))


def test_a_shuffled_pairing_has_lower_confidence_than_the_aligned_one():
    video, audio = shifted_pair(0)
    aligned = sync_scores(offset_distances(video, audio))
    shuffled = sync_scores(offset_distances(video, audio[np.random.default_rng(5).permutation(len(audio))]))
    assert shuffled.lse_c < aligned.lse_c
    assert shuffled.lse_d > aligned.lse_d


def test_sync_scores_of_a_hand_made_matrix():
    distances = np.array([
        [5.0, 4.0, 1.0, 6.0, 9.0],
        [7.0, 2.0, 3.0, 8.0, 9.0],
    ])  # column means 6, 3, 2, 7, 9: min 2 at column 2 (offset 0 with vshift 2), median 6
    assert sync_scores(distances) == SyncScores(lse_c=4.0, lse_d=2.0, av_offset=0, frames=2)
    flipped = sync_scores(distances[:, ::-1])  # means 9, 7, 2, 3, 6: the minimum stays in the middle column
    assert flipped.av_offset == 0
    moved = sync_scores(np.roll(distances, 1, axis=1))  # means 9, 6, 3, 2, 7: min at column 3 -> offset 2 - 3 = -1
    assert (moved.av_offset, moved.lse_d, moved.lse_c) == (-1, 2.0, 4.0)


def test_sync_scores_rejects_even_offsets_and_non_finite_values():
    with pytest.raises(ValueError):
        sync_scores(np.zeros((3, 4)))
    with pytest.raises(ValueError):
        sync_scores(np.full((3, 5), np.nan))


class RecordingSyncNet(nn.Module):
    """A stand-in SyncNet that records its inputs and embeds them by simple statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.lips: list[torch.Tensor] = []
        self.auds: list[torch.Tensor] = []

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        self.lips.append(frames.clone())
        return frames.mean(dim=(3, 4)).flatten(1)  # (B, 15)

    def forward_aud(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        self.auds.append(mfcc_windows.clone())
        return mfcc_windows[:, 0, :, ::4].flatten(1)[:, :15]


def test_syncnet_scores_feed_syncnet_pythons_windows():
    rng = np.random.default_rng(6)
    frames = rng.integers(0, 256, size=(9, 224, 224, 3), dtype=np.uint8)
    audio = rng.uniform(-0.5, 0.5, size=9 * 640 + 100).astype(np.float32)
    model = RecordingSyncNet()
    scores = syncnet_scores(model, frames, audio, batch=3)
    assert scores.frames == 9 - 5  # syncnet_python scores min_length - 5 windows
    lips, auds = torch.cat(model.lips), torch.cat(model.auds)
    assert lips.shape == (4, 3, 5, 224, 224) and auds.shape == (4, 1, 13, 20)
    cepstra = mfcc(pcm16(audio)).T.astype(np.float32)
    for v in range(4):
        bgr = frames[v : v + 5, ..., ::-1].transpose(3, 0, 1, 2).astype(np.float32)
        np.testing.assert_array_equal(lips[v].numpy(), bgr)
        np.testing.assert_array_equal(auds[v, 0].numpy(), cepstra[:, 4 * v : 4 * v + 20])


def test_syncnet_scores_with_a_random_syncnet_are_finite():
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, size=(MIN_SYNCNET_FRAMES + 1, 224, 224, 3), dtype=np.uint8)
    audio = rng.uniform(-0.3, 0.3, size=(MIN_SYNCNET_FRAMES + 1) * 640).astype(np.float32)
    model = SyncNet().train()
    scores = syncnet_scores(model, frames, audio, vshift=3)
    assert model.training  # mode restored
    assert scores.frames == 2 and math.isfinite(scores.lse_c) and math.isfinite(scores.lse_d)
    assert scores.lse_c >= 0 and -3 <= scores.av_offset <= 3


def test_syncnet_scores_refuse_clips_without_a_window():
    frames = np.zeros((MIN_SYNCNET_FRAMES - 1, 224, 224, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=f"at least {MIN_SYNCNET_FRAMES} frames"):
        syncnet_scores(RecordingSyncNet(), frames, np.zeros(16000, dtype=np.float32))
    frames = np.zeros((20, 224, 224, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="samples"):  # the audio covers only 5 frames
        syncnet_scores(RecordingSyncNet(), frames, np.zeros(5 * 640 + 639, dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        syncnet_scores(RecordingSyncNet(), np.zeros((20, 112, 112, 3), dtype=np.uint8), np.zeros(16000))
