"""Lip-sync networks: the Wav2Lip-style expert D_lip, the Dynamic-Sync Encoder E_d and its lip-region decoder."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

IntPair = int | tuple[int, int]

AUDIO_STRIDES: tuple[IntPair, ...] = (1, (3, 1), 3, (3, 2))
"""Strides of the audio encoder's stages: an (80 mels, 16 frames) window shrinks to 3 x 3."""


class _ConvBlock(nn.Module):
    """Conv2d + BatchNorm2d (+ the input) + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: IntPair, stride: IntPair, padding: IntPair, residual: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
        self.norm = nn.BatchNorm2d(out_ch)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        return F.relu(out + x if self.residual else out)


def conv_block(
    in_ch: int, out_ch: int, kernel: IntPair, stride: IntPair, padding: IntPair, residual: bool = False
) -> nn.Module:
    """Conv2d + BatchNorm2d + ReLU; with `residual` the input is added before the ReLU (as Wav2Lip's Conv2d), which
    needs `in_ch == out_ch` and stride 1."""
    if residual and (in_ch != out_ch or stride not in (1, (1, 1))):
        raise ValueError(f"a residual block keeps its shape; got {in_ch} -> {out_ch} channels, stride {stride}")
    return _ConvBlock(in_ch, out_ch, kernel, stride, padding, residual)


def _stage(in_ch: int, out_ch: int, stride: IntPair, residual_blocks: int) -> nn.Sequential:
    """A 3x3 conv block with `stride`, then `residual_blocks` residual 3x3 conv blocks."""
    blocks = [conv_block(in_ch, out_ch, 3, stride, 1)]
    blocks += [conv_block(out_ch, out_ch, 3, 1, 1, residual=True) for _ in range(residual_blocks)]
    return nn.Sequential(*blocks)


class FaceEncoder(nn.Module):
    """Stacked lower faces (B, in_channels, S/2, S) -> embedding (B, embed_dim).

    A 7x7 stem, one stride-2 stage per width after the first, global average pooling and a linear projection, so any
    S from 48 up works.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        widths: Sequence[int] = (32, 64, 128, 256),
        residual_blocks: int = 1,
        in_channels: int = 15,
    ):
        super().__init__()
        stages = [conv_block(in_channels, widths[0], 7, 1, 3)]
        stages += [_stage(a, b, 2, residual_blocks) for a, b in pairwise(widths)]
        self.features = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.projection = nn.Linear(widths[-1], embed_dim)
        self.out_dim = embed_dim

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(faces))


class AudioEncoder(nn.Module):
    """Mel window (B, 1, 80, 16) -> (B, out_dim): a Wav2Lip-like conv stack with strides AUDIO_STRIDES, one stage per
    width, global average pooling and a linear projection."""

    def __init__(self, out_dim: int = 128, widths: Sequence[int] = (32, 64, 128, 256), residual_blocks: int = 1):
        super().__init__()
        if len(widths) != len(AUDIO_STRIDES):
            raise ValueError(f"the audio encoder has {len(AUDIO_STRIDES)} stages, got widths {tuple(widths)}")
        channels = pairwise((1, *widths))
        stages = [_stage(a, b, stride, residual_blocks) for (a, b), stride in zip(channels, AUDIO_STRIDES, strict=True)]
        self.features = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.projection = nn.Linear(widths[-1], out_dim)
        self.out_dim = out_dim

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(mel))


class SyncExpert(nn.Module):
    """D_lip: the sync score in [0, 1] of 5 stacked lower faces and the mel window of their span."""

    def __init__(
        self,
        embed_dim: int = 128,
        face_widths: Sequence[int] = (32, 64, 128, 256),
        audio_widths: Sequence[int] = (32, 64, 128, 256),
        residual_blocks: int = 1,
    ):
        super().__init__()
        self.face_encoder = FaceEncoder(embed_dim, face_widths, residual_blocks)
        self.audio_encoder = AudioEncoder(embed_dim, audio_widths, residual_blocks)

    def embed_faces(self, faces: torch.Tensor) -> torch.Tensor:
        """Unit-length, non-negative embeddings (B, embed_dim) of stacked lower faces (B, 15, S/2, S): the face
        encoder's output, ReLU'd and L2-normalised."""
        return F.normalize(F.relu(self.face_encoder(faces)), dim=1)

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """Unit-length, non-negative embeddings (B, embed_dim) of mel windows (B, 1, 80, 16): the audio encoder's
        output, ReLU'd and L2-normalised."""
        return F.normalize(F.relu(self.audio_encoder(mel)), dim=1)

    @staticmethod
    def similarity(face_embeddings: torch.Tensor, audio_embeddings: torch.Tensor) -> torch.Tensor:
        """Sync scores of `embed_faces` and `embed_audio` embeddings (..., embed_dim), broadcast against each other:
        their dot product over the last dimension, a cosine similarity in [0, 1]."""
        return (face_embeddings * audio_embeddings).sum(dim=-1)

    def forward(self, faces: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """Sync scores (B,) of faces (B, 15, S/2, S) and mel (B, 1, 80, 16): the `similarity` of their embeddings."""
        return self.similarity(self.embed_faces(faces), self.embed_audio(mel))


def sync_bce(similarity: torch.Tensor, label: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean binary cross-entropy of sync scores against labels (1 in sync), scores clamped into [eps, 1 - eps]."""
    return F.binary_cross_entropy(similarity.clamp(eps, 1 - eps), label)


class DynamicSyncEncoder(nn.Module):
    """E_d: mel window (B, 1, 80, 16) -> dynamic-sync feature f_d (B, out_dim), an AudioEncoder."""

    def __init__(self, out_dim: int = 64, widths: Sequence[int] = (32, 64, 128, 256), residual_blocks: int = 1):
        super().__init__()
        self.encoder = AudioEncoder(out_dim, widths, residual_blocks)
        self.out_dim = out_dim

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encoder(mel)


class LipDecoder(nn.Module):
    """Reconstructs a lower face (B, 3, S/2, S) in [0, 1] from a reference lower face of the same identity and f_d.

    A U-Net: a full-resolution stem, one stride-2 stage per further width, f_d injected at the bottleneck by FiLM
    (per-channel scale and shift), then nearest-neighbour upsampling stages fed the encoder's skip connections. S/2
    must be divisible by 2 ** (len(widths) - 1), i.e. S by 16 for the default four widths.
    """

    def __init__(self, feature_dim: int = 64, widths: Sequence[int] = (32, 64, 128, 256), residual_blocks: int = 1):
        super().__init__()
        self.stem = conv_block(3, widths[0], 3, 1, 1)
        self.down = nn.ModuleList(_stage(a, b, 2, residual_blocks) for a, b in pairwise(widths))
        self.film = nn.Linear(feature_dim, 2 * widths[-1])
        self.bottleneck = _stage(widths[-1], widths[-1], 1, residual_blocks)
        self.up = nn.ModuleList(
            _stage(high + low, low, 1, residual_blocks) for high, low in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.head = nn.Conv2d(widths[0], 3, 1)
        self.scale = 2 ** (len(widths) - 1)

    def forward(self, reference: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """reference (B, 3, S/2, S) in [0, 1] and f_d (B, feature_dim) -> lower face (B, 3, S/2, S) in [0, 1]."""
        height, width = reference.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"reference sides must be divisible by {self.scale}, got {height} x {width}")
        skips = [self.stem(reference)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        gamma, beta = self.film(feature)[:, :, None, None].chunk(2, dim=1)
        x = self.bottleneck(skips.pop() * (1 + gamma) + beta)
        for stage in self.up:
            x = stage(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skips.pop()], dim=1))
        return torch.sigmoid(self.head(x))


def reconstruction_l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between a reconstruction and its target."""
    return F.l1_loss(prediction, target)
