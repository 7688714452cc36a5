"""face-parsing.PyTorch's BiSeNet (ResNet-18 context path, 19 CelebAMask-HQ classes); loads 79999_iter.pth strictly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CELEBAMASK_CLASSES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
"""The CelebAMask-HQ label of each output channel, in order."""

INPUT_SIZE = 512
"""Side of the square RGB input the released weights were trained on."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    """Bias-free convolution, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 projection shortcut (``downsample``) where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_channels, out_channels, stride), BasicBlock(out_channels, out_channels))


class ResNet18(nn.Module):
    """ResNet-18 trunk without its classifier; returns the features at strides 8, 16 and 32."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 256, 2)
        self.layer4 = _stage(256, 512, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    """3x3 conv, then channels re-weighted by a sigmoid gate computed from their global average."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels)
        self.conv_atten = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * gate


class ContextPath(nn.Module):
    """ResNet-18 features refined top-down with global context; returns the stride-8 trunk and context features."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        context32 = self.arm32(feat32) + self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))
        context16 = self.arm16(feat16) + self.conv_head32(F.interpolate(context32, feat16.shape[2:], mode="nearest"))
        context8 = self.conv_head16(F.interpolate(context16, feat8.shape[2:], mode="nearest"))
        return feat8, context8


class FeatureFusion(nn.Module):
    """Concatenate two feature maps, 1x1 conv, and add a squeeze-and-excitation re-weighted copy."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_channels, out_channels, kernel_size=1)
        self.conv1 = nn.Conv2d(out_channels, out_channels // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels // 4, out_channels, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat + feat * gate


class SegmentationHead(nn.Module):
    """3x3 ConvBNReLU then a 1x1 projection onto the classes."""

    def __init__(self, in_channels: int, mid_channels: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid_channels)
        self.conv_out = nn.Conv2d(mid_channels, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """BiSeNet as released with face-parsing.PyTorch: the spatial path is replaced by the stride-8 trunk features.

    ``forward`` returns the fused head's logits at the input resolution. ``conv_out16`` and ``conv_out32`` are the
    auxiliary heads that supervised training; they are kept so that the released state dict loads strictly.
    """

    def __init__(self, n_classes: int = len(CELEBAMASK_CLASSES)) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = SegmentationHead(256, 256, n_classes)
        self.conv_out16 = SegmentationHead(128, 64, n_classes)
        self.conv_out32 = SegmentationHead(128, 64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_classes, H, W) of images (N, 3, H, W) normalised with the ImageNet mean and std."""
        feat8, context8 = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))
        return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)
