"""The FID variant of InceptionV3 (pytorch-fid's port of TensorFlow's FID graph) in plain PyTorch, for 2048-d features.

`FidInceptionV3` computes what pytorch-fid's `InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True,
use_fid_inception=True)` computes, without pytorch-fid or torchvision: images in [0, 1] are resized to 299x299
bilinearly (align_corners=False) and scaled to [-1, 1], run through torchvision's InceptionV3 layout with the FID
patches, and the final 8x8 map is averaged to the 2048-d 'pool3' feature.

The FID patches, where the TensorFlow graph differs from torchvision's InceptionV3:

- the average pools inside the InceptionA, InceptionC and first InceptionE blocks (Mixed_5b-5d, Mixed_6b-6e,
  Mixed_7b) do not count the zero padding (`average_pool_without_padding`);
- the last InceptionE block (Mixed_7c) max-pools its pool branch instead of averaging (`max_pool_same`).

Module names follow torchvision's Inception3 (aux_logits=False, 1008 classes), so pytorch-fid's weights file
`pt_inception-2015-12-05-6726825d.pth` loads strictly (`fid_inception_from_state_dict`); its `fc` classifier is
loaded with the rest but no feature uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 299
"""Height and width every image is resized to, as pytorch-fid's resize_input does."""

FEATURE_DIMS = 2048
"""Length of the pool3 feature: the channels of Mixed_7c, averaged over space."""

CLASSES = 1008
"""Outputs of the TensorFlow graph's classifier `fc` (in the weights file, unused for features)."""

BATCH_NORM_EPS = 1e-3
"""Epsilon of every batch norm, as in TensorFlow's Inception and torchvision's BasicConv2d."""

PoolKind = Literal["average_without_padding", "max"]
"""How an InceptionE block pools its pool branch: the FID graph averages in Mixed_7b and max-pools in Mixed_7c."""


class FidWeightsMismatch(ValueError):
    """A state dict does not fit `FidInceptionV3`: the message names its source and the missing, unexpected and
    mis-shaped keys."""


def average_pool_without_padding(x: torch.Tensor) -> torch.Tensor:
    """3x3, stride 1, 'same' average pool that divides by the in-frame cells only (TensorFlow's, not torch's)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3, stride 1, 'same' max pool (Mixed_7c's pool branch in the FID graph)."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def max_pool_reduce(x: torch.Tensor) -> torch.Tensor:
    """3x3, stride 2, unpadded max pool: the stem's and the grid-reduction blocks' downsampling."""
    return F.max_pool2d(x, kernel_size=3, stride=2)


POOLS: dict[PoolKind, Callable[[torch.Tensor], torch.Tensor]] = {
    "average_without_padding": average_pool_without_padding, "max": max_pool_same}
"""The pool-branch operation of each PoolKind."""


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps `BATCH_NORM_EPS`), ReLU; state-dict keys conv.weight and bn.*."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BATCH_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-5d): 1x1, 5x5, double 3x3 and pool branches; 224 + pool_features channels out.
    pytorch-fid's FIDInceptionA: the pool branch averages without counting the padding."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(average_pool_without_padding(x)),
        ], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (Mixed_6a): strided 3x3, strided double 3x3 and max-pool branches;
    480 + in_channels channels out. Unchanged from torchvision's InceptionB."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            max_pool_reduce(x),
        ], dim=1)


class InceptionC(nn.Module):
    """17x17 block (Mixed_6b-6e) with factorised 7x7 convolutions; 768 channels out. pytorch-fid's FIDInceptionC:
    the pool branch averages without counting the padding."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([self.branch1x1(x), seven, double, self.branch_pool(average_pool_without_padding(x))],
                         dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (Mixed_7a): strided 3x3, 7x7-then-strided-3x3 and max-pool branches;
    512 + in_channels channels out. Unchanged from torchvision's InceptionD."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, max_pool_reduce(x)], dim=1)


class InceptionE(nn.Module):
    """8x8 block (Mixed_7b, Mixed_7c) with split 1x3 / 3x1 convolutions; 2048 channels out. pytorch-fid's
    FIDInceptionE_1 (pool "average_without_padding") or FIDInceptionE_2 (pool "max")."""

    def __init__(self, in_channels: int, pool: PoolKind) -> None:
        super().__init__()
        self.pool = POOLS[pool]
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(three), self.branch3x3_2b(three),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(self.pool(x)),
        ], dim=1)


class FidInceptionV3(nn.Module):
    """pytorch-fid's FID InceptionV3 up to pool3: (N, 3, H, W) RGB in [0, 1] -> (N, `FEATURE_DIMS`) features.

    Any H, W: the input is resized to `INPUT_SIZE` squared first. Load the real weights with
    `fid_inception_from_state_dict`; a freshly built model has random weights and is in training mode.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="average_without_padding")
        self.Mixed_7c = InceptionE(FEATURE_DIMS, pool="max")
        self.fc = nn.Linear(FEATURE_DIMS, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FID Inception expects (N, 3, H, W) RGB images, got shape {tuple(images.shape)}")
        x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(max_pool_reduce(x)))
        x = max_pool_reduce(x)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))


def fid_inception_from_state_dict(state: Mapping[str, torch.Tensor], source: str) -> FidInceptionV3:
    """`FidInceptionV3` holding ``state`` (pytorch-fid's weights file's dict), loaded strictly, in eval mode, on the
    CPU, without gradients.

    BatchNorm's num_batches_tracked counters (unused in eval mode) may be absent, as in state dicts saved before
    PyTorch had them; every other key must be present with its shape. Raises FidWeightsMismatch naming ``source``
    (the file it came from) and the offending keys otherwise.
    """
    if not isinstance(state, Mapping):
        raise FidWeightsMismatch(f"{source} holds a {type(state).__name__}, not a state dict of pytorch-fid's FID "
                                 f"Inception weights")
    model = FidInceptionV3()
    expected = model.state_dict()
    counters = {key: value for key, value in expected.items() if key.endswith(".num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - set(counters))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{key} {tuple(state[key].shape)} (expected {tuple(expected[key].shape)})"
                 for key in sorted(set(state) & set(expected)) if state[key].shape != expected[key].shape]
    if missing or unexpected or misshaped:
        problems = [f"{label} ({len(keys)}): {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
                    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                        ("wrong shapes", misshaped)) if keys]
        raise FidWeightsMismatch(f"{source} does not hold pytorch-fid's FID Inception weights: {'; '.join(problems)}")
    model.load_state_dict(counters | dict(state), strict=True)
    model.requires_grad_(False)
    return model.eval()
