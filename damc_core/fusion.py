"""Audio condition f_a: the CSFM fusion of content and dynamic features (paper 2.2) and its temporal smoothing.

CSFM works per token of a temporal window of video frames centred on the rendered frame: f_c1 = Proj_c(f_c) + p,
f_d1 = Proj_d(f_d) + p, with p a learnt embedding of each token's place in the window (attention alone is blind to
order: it could not tell the rendered frame's token from its neighbours); f_c2 = CDCA(f_c1, f_d1) (query = key =
f_c1, value = f_d1) and f_d2 = CDCA(f_d1, f_c1); f_c3 = FSR(f_c1 + f_c2), f_d3 = FSR(f_d1 + f_d2);
f_a = merge(f_c3, f_d3). `TemporalSmoother` then reduces the window to one condition per frame, as ER-NeRF's
AudioAttNet does.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from damc_core.params import FusionConfig

LEAKY_SLOPE = 0.02
"""Negative slope of the LeakyReLUs (ER-NeRF's)."""

SMOOTHER_CHANNELS = (16, 8, 4, 2, 1)
"""Channels of TemporalSmoother's 1D conv stack after the input features (ER-NeRF's AudioAttNet)."""


@dataclass(frozen=True)
class _Mode:
    """What a fusion mode builds: which branches, whether they attend to each other, whether they are refined."""

    branches: tuple[str, ...]
    cross: bool
    refine: bool


_BOTH = ("content", "dynamic")
_OTHER = {"content": "dynamic", "dynamic": "content"}
MODES = {
    "csfm": _Mode(_BOTH, cross=True, refine=True),
    "cross_attention": _Mode(_BOTH, cross=True, refine=False),
    "concat": _Mode(_BOTH, cross=False, refine=False),
    "content": _Mode(("content",), cross=False, refine=False),
    "dynamic": _Mode(("dynamic",), cross=False, refine=False),
}
"""The one mapping from `FusionConfig.mode` to the modules it builds and runs."""


def _require_odd_window(window: int, name: str) -> None:
    """Raise ValueError naming `name` unless `window` is odd and positive."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"{name} must be odd and positive, got {window}")


def _expect_shape(name: str, tensor: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    """Raise ValueError unless `tensor` has `shape` (None matches any size)."""
    got = tuple(tensor.shape)
    if len(got) != len(shape) or not all(want in (None, size) for want, size in zip(shape, got, strict=True)):
        expected = ", ".join("B" if want is None else str(want) for want in shape)
        raise ValueError(f"{name} must have shape ({expected}), got {got}")


def window_indices(frames: torch.Tensor, total: int, window: int) -> torch.Tensor:
    """Frame indices (B,) -> (B, window) indices of the centred window around each, clamped to [0, total - 1]."""
    _require_odd_window(window, "window")
    if total < 1:
        raise ValueError(f"total must be at least 1, got {total}")
    _expect_shape("frames", frames, (None,))
    radius = window // 2
    offsets = torch.arange(-radius, radius + 1, device=frames.device, dtype=torch.int64)
    return (frames.to(torch.int64)[:, None] + offsets).clamp(0, total - 1)


class CDCA(nn.Module):
    """Content-Dynamic Cross Attention: multi-head attention over the window's tokens whose query and key come from x
    and whose value comes from y, then an output projection. With y = x it is plain self-attention (used by FSR)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"heads must be positive and divide dim; got heads={heads}, dim={dim}")
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, W, dim) -> (B, heads, W, dim / heads)."""
        batch, length, dim = tokens.shape
        return tokens.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (B, W, dim) -> (B, W, dim)."""
        _expect_shape("y", y, tuple(x.shape))
        query, key, value = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(y))
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.out(attended.transpose(1, 2).reshape(x.shape))


class FSR(nn.Module):
    """Feature Self-Refinement: a pre-norm transformer block over the window's tokens, z + SA(LN(z)), then + FFN(LN)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = CDCA(dim, heads)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, W, dim) -> (B, W, dim)."""
        normed = self.attention_norm(z)
        z = z + self.attention(normed, normed)
        return z + self.ffn(self.ffn_norm(z))


def projection(in_dim: int, dim: int) -> nn.Sequential:
    """Proj_content / Proj_dynamic: Linear + LayerNorm, bringing a modality to the shared size with its scale fixed."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))


class CSFM(nn.Module):
    """Cross-Synchronized Fusion Module: content (B, W, content_dim) and dynamic (B, W, dynamic_dim) -> f_a (B, W, dim).

    `config.mode` selects the paper's model ('csfm') or one of its ablations; only the modules a mode uses are built,
    so e.g. 'content' holds no dynamic projection. Branch modules are keyed 'content' / 'dynamic' in `proj`, `cross`
    (CDCA, value from the other branch) and `refine` (FSR); `position` (window, dim) is added to every projected
    token by its place in the window; `merge` maps the concatenated branches to `dim`.
    """

    def __init__(self, content_dim: int, dynamic_dim: int, config: FusionConfig):
        super().__init__()
        if config.mode not in MODES:
            raise ValueError(f"fusion.mode must be one of {sorted(MODES)}, got {config.mode!r}")
        if config.dim < 1:
            raise ValueError(f"fusion.dim must be positive, got {config.dim}")
        _require_odd_window(config.window, "fusion.window")
        if config.heads < 1 or config.dim % config.heads:
            raise ValueError(f"fusion.heads must be positive and divide fusion.dim ({config.dim}), got {config.heads}")
        mode = MODES[config.mode]
        self.input_dims = {"content": content_dim, "dynamic": dynamic_dim}
        self.window = config.window
        self.output_dim = config.dim
        self.proj = nn.ModuleDict({name: projection(self.input_dims[name], config.dim) for name in mode.branches})
        self.cross = nn.ModuleDict({name: CDCA(config.dim, config.heads) for name in mode.branches if mode.cross})
        self.refine = nn.ModuleDict({name: FSR(config.dim, config.heads) for name in mode.branches if mode.refine})
        self.merge = nn.Linear(len(mode.branches) * config.dim, config.dim)
        self.position = nn.Parameter(torch.zeros(config.window, config.dim))  # learnt from a neutral start

    def forward(self, content: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """content (B, W, content_dim), dynamic (B, W, dynamic_dim) -> f_a (B, W, dim), one row per window token."""
        _expect_shape("content", content, (None, self.window, self.input_dims["content"]))
        _expect_shape("dynamic", dynamic, (content.shape[0], self.window, self.input_dims["dynamic"]))
        inputs = {"content": content, "dynamic": dynamic}
        features = {name: proj(inputs[name]) + self.position for name, proj in self.proj.items()}
        if self.cross:
            features = {name: f + self.cross[name](f, features[_OTHER[name]]) for name, f in features.items()}
        if self.refine:
            features = {name: self.refine[name](f) for name, f in features.items()}
        return self.merge(torch.cat(list(features.values()), dim=-1))


class TemporalSmoother(nn.Module):
    """ER-NeRF's AudioAttNet: per-token features (B, W, dim) -> (B, dim), a learnt convex combination of the tokens.

    A 1D conv stack over the window (dim -> 16 -> 8 -> 4 -> 2 -> 1 channels, kernel 3, LeakyReLU) scores each token;
    Linear(W -> W) and a softmax over the window turn the scores into weights.
    """

    def __init__(self, dim: int, window: int):
        super().__init__()
        _require_odd_window(window, "window")
        self.dim = dim
        self.window = window
        layers: list[nn.Module] = []
        for in_ch, out_ch in pairwise((dim, *SMOOTHER_CHANNELS)):
            layers += [nn.Conv1d(in_ch, out_ch, kernel_size=3, padding=1), nn.LeakyReLU(LEAKY_SLOPE)]
        self.scores = nn.Sequential(*layers)
        self.attention = nn.Linear(window, window)

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, W, dim) -> non-negative weights (B, W) summing to 1 over the window."""
        _expect_shape("features", features, (None, self.window, self.dim))
        scores = self.scores(features.transpose(1, 2)).squeeze(1)
        return torch.softmax(self.attention(scores), dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, W, dim) -> (B, dim), the weighted sum of the window's tokens."""
        return torch.einsum("bw,bwd->bd", self.weights(features), features)
