"""LPIPS perceptual distance (Zhang et al. 2018, v0.1, AlexNet) in plain PyTorch, for evaluation and as a training loss.

Given the same weights, `LPIPS` computes what `lpips.LPIPS(net='alex')` computes in eval mode (the `lpips` package and
torchvision are not dependencies): inputs in [-1, 1] are shifted and scaled, run through the AlexNet `features` stack,
the activations after five ReLUs are unit-normalised over channels, squared differences are weighted per channel by
the non-negative v0.1 linear heads, averaged over space and summed over layers.

Weights come from two files, loaded by `load_lpips`: torchvision's ImageNet AlexNet (`ALEXNET_FILE`, of which only
`features.*` is used) and the v0.1 linear heads `alex.pth` shipped with the lpips package (`HEADS_FILE`).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from damc_core.errors import InputError

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
"""File name of torchvision's ImageNet AlexNet weights, the backbone lpips downloads through torchvision."""

ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
"""Where torchvision downloads `ALEXNET_FILE` from."""

HEADS_FILE = "alex.pth"
"""File name of the LPIPS v0.1 linear heads for AlexNet."""

HEADS_SOURCE = (
    "the lpips pip package (lpips/weights/v0.1/alex.pth) or "
    "https://github.com/richzhang/PerceptualSimilarity (lpips/weights/v0.1/alex.pth)"
)
"""Where `HEADS_FILE` can be obtained."""

LAYER_CHANNELS = (64, 192, 384, 256, 256)
"""Channels of the five AlexNet activations LPIPS compares, one linear head each."""

TAP_INDICES = (1, 4, 7, 9, 11)
"""Indices in AlexNet `features` of the ReLUs whose outputs LPIPS compares (the ends of lpips' five slices)."""

SHIFT = (-0.030, -0.088, -0.188)
"""Per-channel shift of LPIPS's scaling layer, applied to [-1, 1] RGB input as (x - SHIFT) / SCALE."""

SCALE = (0.458, 0.448, 0.450)
"""Per-channel scale of LPIPS's scaling layer."""

EPS = 1e-10
"""Added to the channel norm before dividing by it, as in lpips.normalize_tensor."""


class MissingWeightsError(InputError, FileNotFoundError):
    """A weights file LPIPS needs is absent; the message names the file and how to obtain it."""


class AlexNetFeatures(nn.Module):
    """torchvision's AlexNet `features` stack, same module indices, returning the five activations LPIPS compares.

    A torchvision AlexNet state dict restricted to its `features.<i>.weight/bias` keys (i = 0, 3, 6, 8, 10) loads
    as is. ReLUs are not in-place, so every returned activation is a tensor of its own.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 3, H, W) scaled images -> the outputs of the ReLUs at `TAP_INDICES`, (N, C_l, H_l, W_l) each."""
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAP_INDICES:
                taps.append(x)
        return tuple(taps)


class LPIPS(nn.Module):
    """LPIPS v0.1 with the AlexNet backbone: a perceptual distance between images in [-1, 1], lower is more similar.

    All parameters are frozen (requires_grad False), as in lpips by default; gradients still flow to the inputs, so
    the module can serve as a training loss. It has no dropout (lpips' heads drop out only in train mode), so it
    behaves the same in train and eval mode. Build it with `load_lpips` (real weights) or `lpips_stand_in` (tests).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.backbone = AlexNetFeatures()
        self.heads = nn.ModuleList(nn.Conv2d(channels, 1, kernel_size=1, bias=False) for channels in LAYER_CHANNELS)
        self.requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distances between (N, 3, H, W) RGB batches a and b in [-1, 1]: (N,), zero for identical images."""
        if a.ndim != 4 or a.shape[1] != 3 or a.shape != b.shape:
            raise ValueError(f"LPIPS needs two (N, 3, H, W) batches of the same shape, got {tuple(a.shape)} "
                             f"and {tuple(b.shape)}")
        features_a = self.backbone((a - self.shift) / self.scale)
        features_b = self.backbone((b - self.shift) / self.scale)
        per_layer = [head((_unit_channels(fa) - _unit_channels(fb)) ** 2).mean(dim=(2, 3), keepdim=True)
                     for head, fa, fb in zip(self.heads, features_a, features_b, strict=True)]
        distance = per_layer[0]
        for term in per_layer[1:]:  # summed in lpips' order, for identical rounding
            distance = distance + term
        return distance.flatten()


def _unit_channels(x: torch.Tensor) -> torch.Tensor:
    """x divided by its L2 norm over channels (plus `EPS`), as lpips.normalize_tensor."""
    return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + EPS)


def load_lpips(backbone: str | Path, linear_heads: str | Path, device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS (v0.1, AlexNet) with real weights, in eval mode on `device`.

    backbone: torchvision's AlexNet ImageNet state dict (`ALEXNET_FILE`, from `ALEXNET_URL`); its `classifier.*`
    entries are ignored, every `features.*` entry must be present. linear_heads: the lpips v0.1 `alex.pth`
    (`HEADS_FILE`, keys `lin<l>.model.1.weight`). Raises MissingWeightsError when a file is absent and ValueError
    naming the file when its contents do not fit.
    """
    backbone, linear_heads = Path(backbone), Path(linear_heads)
    model = LPIPS()
    backbone_state = _read_state(backbone, f"torchvision's AlexNet ImageNet weights {ALEXNET_FILE}; download it from "
                                 f"{ALEXNET_URL} (the file lpips fetches through torchvision)")
    unexpected = sorted(key for key in backbone_state if not key.startswith(("features.", "classifier.")))
    features = {key: value for key, value in backbone_state.items() if key.startswith("features.")}
    _check_keys(backbone, features, model.backbone.state_dict(), unexpected)
    model.backbone.load_state_dict(features)

    heads_state = _read_state(linear_heads, f"the LPIPS v0.1 AlexNet linear heads {HEADS_FILE}, shipped in "
                              f"{HEADS_SOURCE}")
    renamed = {f"{layer}.weight": f"lin{layer}.model.1.weight" for layer in range(len(LAYER_CHANNELS))}
    heads = {ours: heads_state[theirs] for ours, theirs in renamed.items() if theirs in heads_state}
    unexpected = sorted(set(heads_state) - set(renamed.values()))
    _check_keys(linear_heads, heads, model.heads.state_dict(), unexpected, names=renamed)
    model.heads.load_state_dict(heads)
    return model.to(device).eval()


def _read_state(path: Path, how_to_obtain: str) -> dict[str, torch.Tensor]:
    """The tensor state dict stored at path; MissingWeightsError saying how to obtain it when the file is absent."""
    if not path.is_file():
        raise MissingWeightsError(f"{path} not found: LPIPS needs {how_to_obtain}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"{path} is not a loadable PyTorch weights file: {exc}") from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return dict(state)


def _check_keys(
    path: Path,
    found: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    unexpected: list[str],
    names: Mapping[str, str] | None = None,
) -> None:
    """ValueError naming path when found lacks keys of expected, has wrong shapes, or unexpected keys exist.

    names maps a key of expected to the key it has in the file, for messages; keys are their own names by default.
    """
    names = names or {key: key for key in expected}
    problems = []
    missing = [names[key] for key in expected if key not in found]
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    wrong = [f"{names[key]} {tuple(found[key].shape)} (expected {tuple(value.shape)})"
             for key, value in expected.items() if key in found and found[key].shape != value.shape]
    if wrong:
        problems.append(f"wrong shapes {wrong}")
    if problems:
        raise ValueError(f"{path} does not fit LPIPS AlexNet: " + "; ".join(problems))


def lpips_stand_in(seed: int = 0) -> LPIPS:
    """TEST STAND-IN: LPIPS with a random-init backbone and random non-negative heads; its numbers mean nothing.

    Seeded and deterministic, without touching the global RNG; for tests and offline runs where the real weights
    (see `load_lpips`) are absent. Returned in eval mode on the CPU.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LPIPS()
    for head in model.heads:
        head.weight.abs_()
    return model.eval()
