"""Volume rendering of rays: stratified sample depths, sample points, and alpha compositing of densities and colours.

The quadrature is NeRF's: sample i at depth t_i holds density sigma_i over the step delta_i to the next sample (the
last one up to the ray's far end), so alpha_i = 1 - exp(-sigma_i delta_i) and its weight is
T_i alpha_i with transmittance T_i = prod_{j<i} (1 - alpha_j).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def stratified_depths(near: Tensor, far: Tensor, samples: int, generator: torch.Generator | None) -> Tensor:
    """Depths (N, S) of S = ``samples`` samples per ray, one in each of S equal bins between near (N,) and far (N,).

    With a generator each sample is uniform within its bin (training); without one it is the bin's midpoint
    (deterministic, for rendering). Depths are sorted along each ray and lie in [near, far].
    """
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    shape = (near.shape[0], samples)
    if generator is None:
        offsets = torch.full(shape, 0.5, dtype=near.dtype, device=near.device)
    else:
        offsets = torch.rand(shape, generator=generator, dtype=near.dtype, device=near.device)
    bins = torch.arange(samples, dtype=near.dtype, device=near.device)
    fractions = (bins + offsets) / samples
    return near[:, None] + (far - near)[:, None] * fractions


def sample_points(origins: Tensor, directions: Tensor, depths: Tensor) -> Tensor:
    """World points (N, S, 3) at ``depths`` (N, S) along rays with origins (N, 3) and directions (N, 3)."""
    return origins[:, None, :] + directions[:, None, :] * depths[..., None]


def sample_deltas(depths: Tensor, far: Tensor) -> Tensor:
    """Steps (N, S) of sorted depths (N, S): the distance to the next sample, from the last sample to far (N,)."""
    return torch.cat([depths[:, 1:] - depths[:, :-1], far[:, None] - depths[:, -1:]], dim=-1)


def volume_weights(sigma: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """Compositing weights (N, S) and transmittance (N, S) of non-negative densities over steps ``deltas`` (N, S).

    T_i = exp(-sum_{j<i} sigma_j delta_j) (= prod_{j<i} (1 - alpha_j), as an exclusive cumulative sum for stability),
    so T_0 = 1 and T is non-increasing; weight_i = T_i alpha_i with alpha_i = 1 - exp(-sigma_i delta_i), and the
    weights of a ray sum to 1 - T_S <= 1.
    """
    optical_depth = sigma * deltas
    alpha = -torch.expm1(-optical_depth)
    accumulated = torch.cumsum(optical_depth, dim=-1)
    before = torch.cat([torch.zeros_like(accumulated[:, :1]), accumulated[:, :-1]], dim=-1)
    transmittance = torch.exp(-before)
    return transmittance * alpha, transmittance


@dataclass(frozen=True)
class RenderedRays:
    """What volume rendering gives for N rays."""

    rgb: Tensor
    """(N, 3) colour, composited over the background."""
    opacity: Tensor
    """(N,) accumulated opacity: the sum of the weights, in [0, 1]."""
    depth: Tensor
    """(N,) expected depth sum_i w_i t_i, not divided by the opacity (a transparent ray has depth 0)."""


def composite(weights: Tensor, colours: Tensor, depths: Tensor, background: Tensor) -> RenderedRays:
    """Alpha-composite colours (N, S, 3) at depths (N, S) with ``weights`` (N, S) over a background (N, 3) or (3,)."""
    opacity = weights.sum(dim=-1)
    rgb = (weights[..., None] * colours).sum(dim=-2) + (1.0 - opacity)[:, None] * background
    depth = (weights * depths).sum(dim=-1)
    return RenderedRays(rgb=rgb, opacity=opacity, depth=depth)
