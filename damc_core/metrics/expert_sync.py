"""Our own lip-sync expert's confidence: syncnet_python's LSE statistics on a SyncExpert, not comparable with SyncNet.

`expert_scores` runs syncnet_python's statistics (damc_core.metrics.sync) on our own lip-sync expert
(damc_core.sync.models.SyncExpert, distance 1 - similarity). That is OUR expert's confidence, not SyncNet's: its
numbers are not comparable with the paper's Sync (LSE-C), but it needs no downloaded weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from damc_core.metrics.sync import VSHIFT, SyncScores, module_device, sync_scores
from damc_core.sync.data import SYNC_FRAMES
from damc_core.sync.models import SyncExpert


def expert_min_frames(vshift: int = VSHIFT) -> int:
    """Fewest frames `expert_scores` accepts: one 5-frame window whose centre has a mel window at every offset."""
    return max(SYNC_FRAMES, 2 * vshift + 1)


def stack_windows(lower_faces: np.ndarray, starts: np.ndarray) -> torch.Tensor:
    """The 5-frame windows starting at `starts` of (T, H, W, 3) uint8 frames as (B, 15, H, W) float in [0, 1],
    frame-major channels (RGB of the first frame first): the expert's training layout (damc_core.sync.data)."""
    windows = lower_faces[np.asarray(starts)[:, None] + np.arange(SYNC_FRAMES)]  # (B, 5, H, W, 3)
    batch, frames, height, width, _ = windows.shape
    tensor = torch.from_numpy(np.ascontiguousarray(windows)).permute(0, 1, 4, 2, 3)
    return tensor.reshape(batch, 3 * frames, height, width).float().div_(255.0)


def expert_scores(
    expert: nn.Module, lower_faces: np.ndarray, mel_windows: np.ndarray, vshift: int = VSHIFT, batch: int = 256
) -> SyncScores:
    """OUR lip-sync expert's confidence (LSE-C-like), offset and minimum distance of one clip: the statistics of
    `sync_scores` on distances 1 - expert(faces, mel). NOT SyncNet's LSE-C / LSE-D: not comparable with the paper's
    Sync, but available offline.

    lower_faces (T, S/2, S, 3) uint8 RGB and mel_windows (T, n_mels, width), one per frame, aligned frame by frame as
    in damc_core.sync.data.ClipArrays; `expert` is called as expert(faces (B, 15, S/2, S) in [0, 1], mel (B, 1,
    n_mels, width)) -> similarity (B,) (a SyncExpert, or anything with that signature). As in training, the window
    of frames t..t+4 is in sync with the mel window of its centre frame t + 2; offset o pairs it with the mel window
    of frame t + 2 + o, so column j = o + vshift and, as for SyncNet, av_offset = -o at the best o (+d: the audio is d
    frames ahead of the video).

    Ends: pairs whose mel frame falls outside the clip are skipped by scoring only the windows that have a mel window
    at every offset (centres vshift .. T - 1 - vshift), so every offset averages over the same windows. That needs
    T >= `expert_min_frames(vshift)` (2 vshift + 1, at least 5); fewer raise ValueError.

    A SyncExpert is evaluated through its encoders once per window and per mel frame (the same similarity as its
    forward); other experts are called on every (window, offset) pair, `batch` pairs at a time. The expert runs in
    eval mode (restored afterwards).
    """
    faces = np.asarray(lower_faces)
    mels = np.asarray(mel_windows, dtype=np.float32)
    if faces.ndim != 4 or faces.shape[3] != 3 or faces.dtype != np.uint8:
        raise ValueError(f"lower_faces must be uint8 (T, H, W, 3), got {faces.dtype} {faces.shape}")
    if mels.ndim != 3 or len(mels) != len(faces):
        raise ValueError(f"mel_windows must be one (n_mels, width) window per frame, got {mels.shape} for "
                         f"{len(faces)} frames")
    if vshift < 0 or batch < 1:
        raise ValueError(f"need vshift >= 0 and batch >= 1, got vshift={vshift}, batch={batch}")
    n_frames, centre = len(faces), SYNC_FRAMES // 2
    if n_frames < expert_min_frames(vshift):
        raise ValueError(f"expert scores with vshift {vshift} need at least {expert_min_frames(vshift)} frames (a "
                         f"{SYNC_FRAMES}-frame window with a mel window at every offset), got {n_frames}")
    first = max(0, vshift - centre)
    last = min(n_frames - SYNC_FRAMES, n_frames - 1 - centre - vshift)
    starts = np.arange(first, last + 1)
    offsets = np.arange(-vshift, vshift + 1)
    mel_index = starts[:, None] + centre + offsets[None, :]  # (n_windows, 2 vshift + 1), all within the clip
    device = module_device(expert)
    was_training = expert.training
    expert.eval()
    try:
        with torch.no_grad():
            if isinstance(expert, SyncExpert):
                similarity = _expert_similarity_by_embedding(expert, faces, mels, starts, mel_index, batch, device)
            else:
                similarity = _expert_similarity_by_pair(expert, faces, mels, starts, mel_index, batch, device)
    finally:
        expert.train(was_training)
    return sync_scores(1.0 - similarity)


def _expert_similarity_by_embedding(
    expert: SyncExpert,
    faces: np.ndarray,
    mels: np.ndarray,
    starts: np.ndarray,
    mel_index: np.ndarray,
    batch: int,
    device: torch.device,
) -> np.ndarray:
    """SyncExpert.forward's similarity for every pair, from each window's and each mel frame's embedding once."""
    face_emb = torch.cat([
        expert.embed_faces(stack_windows(faces, chunk).to(device)).cpu()
        for chunk in np.array_split(starts, -(-len(starts) // batch))
    ])
    frames = np.arange(mel_index.min(), mel_index.max() + 1)
    audio_emb = torch.cat([
        expert.embed_audio(torch.from_numpy(mels[chunk]).unsqueeze(1).to(device)).cpu()
        for chunk in np.array_split(frames, -(-len(frames) // batch))
    ])
    pairs = audio_emb[torch.from_numpy(mel_index - frames[0])]  # (n_windows, offsets, D)
    return expert.similarity(face_emb[:, None, :], pairs).double().numpy()


def _expert_similarity_by_pair(
    expert: nn.Module,
    faces: np.ndarray,
    mels: np.ndarray,
    starts: np.ndarray,
    mel_index: np.ndarray,
    batch: int,
    device: torch.device,
) -> np.ndarray:
    """expert(faces, mel) of every (window, offset) pair, `batch` pairs per call."""
    pair_starts = np.repeat(starts, mel_index.shape[1])
    pair_mels = mel_index.reshape(-1)
    scores = []
    for lo in range(0, len(pair_starts), batch):
        face_batch = stack_windows(faces, pair_starts[lo : lo + batch]).to(device)
        mel_batch = torch.from_numpy(mels[pair_mels[lo : lo + batch]]).unsqueeze(1).to(device)
        scores.append(expert(face_batch, mel_batch).reshape(-1).double().cpu())
    return torch.cat(scores).numpy().reshape(mel_index.shape)
