"""Sync metrics: python_speech_features-compatible MFCC, the SyncNet architecture and weight loading, syncnet_python's
offset distances and statistics, SyncNet windowing, and our own expert's confidence."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from damc_core.metrics.sync import (
    MIN_SYNCNET_FRAMES,
    SYNCNET_FILE,
    SYNCNET_URL,
    MissingSyncNetWeights,
    SyncNet,
    SyncScores,
    expert_min_frames,
    expert_scores,
    frame_count,
    load_syncnet,
    mfcc,
    offset_distances,
    pcm16,
    stack_windows,
    sync_scores,
    syncnet_scores,
)
from damc_core.sync import data as sync_data
from damc_core.sync.models import SyncExpert


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------------------------------
# MFCC
# ---------------------------------------------------------------------------------------------------------------------


def reference_mfcc(signal: np.ndarray, sr: int = 16000) -> np.ndarray:
    """A slow, literal python_speech_features.mfcc (default arguments): frame loop, explicit DFT sums, filter loops,
    explicit DCT-II sums."""
    x = [float(v) for v in signal]
    emph = [x[0]] + [x[i] - 0.97 * x[i - 1] for i in range(1, len(x))]
    frame_len, step, nfft, nfilt, numcep = 400, 160, 512, 26, 13
    n_frames = 1 if len(x) <= frame_len else 1 + math.ceil((len(x) - frame_len) / step)
    emph += [0.0] * ((n_frames - 1) * step + frame_len - len(x))

    def hz2mel(hz: float) -> float:
        return 2595 * math.log10(1 + hz / 700.0)

    def mel2hz(mel: float) -> float:
        return 700 * (10 ** (mel / 2595.0) - 1)

    high = hz2mel(sr / 2)
    edges = [math.floor((nfft + 1) * mel2hz(high * k / (nfilt + 1)) / sr) for k in range(nfilt + 2)]
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(edges[j], edges[j + 1]):
            bank[j, i] = (i - edges[j]) / (edges[j + 1] - edges[j])
        for i in range(edges[j + 1], edges[j + 2]):
            bank[j, i] = (edges[j + 2] - i) / (edges[j + 2] - edges[j + 1])
    n = np.arange(frame_len)
    eps = np.finfo(float).eps
    out = np.zeros((n_frames, numcep))
    for f in range(n_frames):
        frame = np.array(emph[f * step : f * step + frame_len])
        power = np.array([
            abs(np.sum(frame * np.exp(-2j * np.pi * k * n / nfft))) ** 2 / nfft for k in range(nfft // 2 + 1)
        ])
        energy = power.sum() or eps
        logs = [math.log((bank[j] @ power) or eps) for j in range(nfilt)]
        for c in range(numcep):
            scale = math.sqrt((1 if c == 0 else 2) / nfilt)
            value = scale * sum(logs[m] * math.cos(math.pi * c * (2 * m + 1) / (2 * nfilt)) for m in range(nfilt))
            out[f, c] = value * (1 + 11 * math.sin(math.pi * c / 22))
        out[f, 0] = math.log(energy)
    return out


def test_mfcc_matches_a_slow_reference_including_the_padded_last_frame():
    rng = np.random.default_rng(0)
    audio = rng.integers(-3000, 3000, size=1000).astype(np.int16)  # 1 + ceil(600 / 160) = 5 frames, last padded
    ours = mfcc(audio)
    ref = reference_mfcc(audio)
    assert ours.shape == ref.shape == (5, 13)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize(
    ("n_samples", "frames"), [(1, 1), (400, 1), (401, 2), (560, 2), (561, 3), (16000, 99), (16160, 100)]
)
def test_mfcc_frame_count_is_python_speech_features_ceil_with_zero_padding(n_samples, frames):
    assert frame_count(n_samples) == frames
    assert mfcc(np.ones(n_samples)).shape == (frames, 13)


def test_mfcc_is_at_100_hz_and_four_steps_per_25_fps_frame():
    one_second = mfcc(np.random.default_rng(1).normal(size=16000))
    assert len(one_second) >= 4 * 25 - 1


def test_mfcc_of_silence_is_finite_log_eps_energy_and_zero_cepstra():
    out = mfcc(np.zeros(1600))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], np.log(np.finfo(float).eps))
    np.testing.assert_allclose(out[:, 1:], 0.0, atol=1e-9)


def test_mfcc_scale_only_shifts_the_log_energy_coefficient():
    audio = np.random.default_rng(2).normal(size=4000)
    small, large = mfcc(audio), mfcc(audio * 32768.0)
    np.testing.assert_allclose(large[:, 1:], small[:, 1:], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(large[:, 0] - small[:, 0], 2 * np.log(32768.0))


def test_mfcc_rejects_empty_or_multichannel_audio():
    with pytest.raises(ValueError):
        mfcc(np.zeros(0))
    with pytest.raises(ValueError):
        mfcc(np.zeros((100, 2)))


def test_pcm16_matches_ffmpeg_float_to_s16():
    audio = np.array([0.0, 0.5, -1.0, 1.0, 1.5, -1.5, 1 / 65536, 3 / 65536], dtype=np.float32)
    np.testing.assert_array_equal(pcm16(audio), [0, 16384, -32768, 32767, 32767, -32768, 0, 2])
    np.testing.assert_array_equal(pcm16(np.array([5, -7], dtype=np.int16)), [5, -7])


# ---------------------------------------------------------------------------------------------------------------------
# SyncNet architecture and weights
# ---------------------------------------------------------------------------------------------------------------------

CONV_BN = (0, 4, 8, 11, 14, 18)  # conv indices of netcnnaud and netcnnlip, each followed by its BatchNorm
BN_BUFFERS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def expected_keys() -> set[str]:
    keys = set()
    for net in ("netcnnaud", "netcnnlip"):
        for conv in CONV_BN:
            keys |= {f"{net}.{conv}.weight", f"{net}.{conv}.bias"}
            keys |= {f"{net}.{conv + 1}.{name}" for name in BN_BUFFERS}
    for net in ("netfcaud", "netfclip"):
        keys |= {f"{net}.0.weight", f"{net}.0.bias", f"{net}.3.weight", f"{net}.3.bias"}
        keys |= {f"{net}.1.{name}" for name in BN_BUFFERS}
    return keys


def test_syncnet_has_syncnet_pythons_state_dict_keys_and_shapes():
    state = SyncNet().state_dict()
    assert set(state) == expected_keys()
    assert state["netcnnaud.0.weight"].shape == (64, 1, 3, 3)
    assert state["netcnnaud.18.weight"].shape == (512, 256, 5, 4)
    assert state["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert state["netcnnlip.18.weight"].shape == (512, 256, 1, 6, 6)
    assert state["netfcaud.3.weight"].shape == state["netfclip.3.weight"].shape == (1024, 512)


def test_syncnet_forward_shapes():
    model = SyncNet().eval()
    with torch.no_grad():
        assert model.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert model.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)


def test_load_syncnet_round_trips_a_state_dict_even_without_batch_counters(tmp_path: Path):
    source = SyncNet()
    for module in source.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / SYNCNET_FILE
    torch.save(state, path)
    loaded = load_syncnet(path)
    assert not loaded.training
    for key, value in state.items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_syncnet_rejects_a_foreign_state_dict(tmp_path: Path):
    path = tmp_path / "other.model"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not match SyncNet"):
        load_syncnet(path)


def test_missing_syncnet_weights_name_the_file_and_its_url(tmp_path: Path):
    path = tmp_path / SYNCNET_FILE
    with pytest.raises(MissingSyncNetWeights) as info:
        load_syncnet(path)
    assert isinstance(info.value, FileNotFoundError)
    assert str(path) in str(info.value) and SYNCNET_URL in str(info.value)
    assert SYNCNET_URL == "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"


# ---------------------------------------------------------------------------------------------------------------------
# Offset distances and statistics
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# SyncNet scores of a clip
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Our own expert
# ---------------------------------------------------------------------------------------------------------------------

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
