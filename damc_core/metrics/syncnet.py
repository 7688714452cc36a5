"""SyncNet (Chung & Zisserman 2016) as syncnet_python defines it: the network, its inputs, and loading its weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from damc_core.errors import InputError

SYNCNET_FILE = "syncnet_v2.model"
"""File name of the official SyncNet weights (a state dict saved by torch.save)."""

SYNCNET_URL = f"http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/{SYNCNET_FILE}"
"""Where syncnet_python's download_model.sh fetches `SYNCNET_FILE` from."""

VIDEO_WINDOW = 5
"""Consecutive video frames in one SyncNet input."""

MFCC_STEPS_PER_FRAME = 4
"""MFCC steps (10 ms) per video frame (40 ms)."""

MFCC_WINDOW = VIDEO_WINDOW * MFCC_STEPS_PER_FRAME
"""MFCC steps in one SyncNet audio input (20)."""

CROP_SIZE = 224
"""Side of SyncNet's square face crops."""


class MissingSyncNetWeights(InputError, FileNotFoundError):
    """The SyncNet weights file is absent; the message names the file and where to download it."""


def _conv_bn_relu(conv: nn.Module, channels: int, norm: type[nn.Module]) -> list[nn.Module]:
    """`conv`, then a `norm` BatchNorm over `channels`, then a ReLU."""
    return [conv, norm(channels), nn.ReLU()]


class SyncNet(nn.Module):
    """syncnet_python's `S` (SyncNetModel.py) with the same module names and indices, so `syncnet_v2.model` loads.

    netcnnaud: MFCC (B, 1, 13, 20) -> (B, 512, 1, 1); netfcaud: -> (B, 1024).
    netcnnlip: BGR 0..255 frames (B, 3, 5, 224, 224) -> (B, 512, 1, 1, 1); netfclip: -> (B, 1024).
    The identity MaxPool2d(1) at netcnnaud.3 is kept so that the indices match.
    """

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        bn2, bn3 = nn.BatchNorm2d, nn.BatchNorm3d
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(1, 64, 3, 1, 1), 64, bn2),  # 0-2
            nn.MaxPool2d(kernel_size=1, stride=1),  # 3
            *_conv_bn_relu(nn.Conv2d(64, 192, 3, 1, 1), 192, bn2),  # 4-6
            nn.MaxPool2d(kernel_size=3, stride=(1, 2)),  # 7
            *_conv_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384, bn2),  # 8-10
            *_conv_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256, bn2),  # 11-13
            *_conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256, bn2),  # 14-16
            nn.MaxPool2d(kernel_size=3, stride=2),  # 17
            *_conv_bn_relu(nn.Conv2d(256, 512, (5, 4)), 512, bn2),  # 18-20
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2)), 96, bn3),  # 0-2
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 3
            *_conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, bn3),  # 4-6
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 7
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),  # 8-10
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),  # 11-13
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),  # 14-16
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 17
            *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6)), 512, bn3),  # 18-20
        )

    def forward_aud(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        """MFCC windows (B, 1, 13, 20) -> audio embeddings (B, embed_dim)."""
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """BGR frame windows (B, 3, 5, 224, 224), values 0..255 -> video embeddings (B, embed_dim)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNet:
    """SyncNet with the weights of `path` (syncnet_python's `syncnet_v2.model`), in eval mode on `device`.

    Raises MissingSyncNetWeights (naming the file and its download URL) if `path` does not exist, and ValueError if
    the file's keys do not match the architecture (BatchNorm `num_batches_tracked` counters may be absent: files saved
    by old PyTorch versions lack them).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingSyncNetWeights(
            f"SyncNet weights not found at {path}. Download {SYNCNET_FILE} from {SYNCNET_URL} "
            f"(what joonson/syncnet_python's download_model.sh fetches) and place it there."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    model = SyncNet()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path} does not match SyncNet: missing keys {missing}, unexpected keys {unexpected}")
    return model.to(device).eval()
