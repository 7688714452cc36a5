"""Input encodings of the talking-head NeRF: the tri-plane multi-resolution hash grid (paper 2.4) and view SH.

Pure PyTorch (no CUDA extension): every level of a hash grid is looked up in one vectorised gather, so the same
code runs, and is differentiated by autograd, on CPU and GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from damc_core.params import HashGridConfig

HASH_PRIME_Y = 2654435761
"""Instant-NGP's spatial-hash multiplier of a vertex's second coordinate (the first one's is 1)."""

PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (1, 2), (0, 2))
"""The coordinate pair each tri-plane encoder sees, in output order: XY, YZ, XZ."""


def level_resolutions(config: HashGridConfig) -> tuple[int, ...]:
    """Grid resolution N_l = floor(base * b**l) of each level, b growing geometrically from base to finest.

    A 1e-6 tolerance keeps float round-off from flooring e.g. 199.99999999999986 down to 199.
    """
    if config.levels == 1:
        return (config.base_resolution,)
    growth = math.exp(math.log(config.finest_resolution / config.base_resolution) / (config.levels - 1))
    return tuple(math.floor(config.base_resolution * growth**level + 1e-6) for level in range(config.levels))


def _validate(config: HashGridConfig) -> None:
    """Raise ValueError naming the first field of `config` that cannot describe a hash grid."""
    for name in ("levels", "features_per_level", "log2_table_size", "base_resolution", "finest_resolution"):
        value = getattr(config, name)
        if value < 1:
            raise ValueError(f"HashGridConfig.{name} must be positive, got {value}")
    if config.finest_resolution < config.base_resolution:
        raise ValueError(
            f"HashGridConfig.finest_resolution ({config.finest_resolution}) must be at least "
            f"base_resolution ({config.base_resolution})"
        )


class HashGrid2D(nn.Module):
    """Multi-resolution 2D hash encoding (Instant-NGP) of coordinates in [0, 1]^2.

    Level l is a grid of (N_l + 1)^2 vertices, each with F learned features; a coordinate's feature is the bilinear
    interpolation of its cell's four vertices. A level whose vertices fit in 2**log2_table_size entries stores them
    densely (index x + y (N_l + 1)); a finer one hashes them, (x XOR y * 2654435761) mod 2**log2_table_size. All tables
    live in one flat parameter `table` (total entries, F), level l's rows starting at `offsets[l]`.
    """

    def __init__(self, config: HashGridConfig):
        super().__init__()
        _validate(config)
        hash_size = 2**config.log2_table_size
        self.resolutions = level_resolutions(config)
        self.table_sizes = tuple(min(hash_size, (n + 1) ** 2) for n in self.resolutions)
        self.features_per_level = config.features_per_level
        self.output_dim = config.levels * config.features_per_level
        self._hash_mask = hash_size - 1

        # Resolutions never decrease, so the densely stored levels are the first ones.
        self._dense_levels = sum((n + 1) ** 2 <= hash_size for n in self.resolutions)

        sizes = torch.tensor(self.table_sizes)
        resolutions = torch.tensor(self.resolutions)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.register_buffer("scale", resolutions.float(), persistent=False)
        self.register_buffer("row_stride", resolutions[: self._dense_levels] + 1, persistent=False)
        self.table = nn.Parameter(torch.empty(int(sizes.sum()), config.features_per_level).uniform_(-1e-4, 1e-4))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode coords (..., 2), clamped to [0, 1], as (..., levels * F) features, level-major."""
        if coords.shape[-1] != 2:
            raise ValueError(f"HashGrid2D expects coordinates of shape (..., 2), got {tuple(coords.shape)}")
        lead = coords.shape[:-1]
        position = coords.reshape(-1, 1, 2).clamp(0.0, 1.0) * self.scale.to(coords.dtype)[:, None]  # (P, L, 2)
        # The upper edge (coordinate 1) lies in the last cell, at fraction 1, so no vertex index exceeds N_l.
        cell = torch.minimum(position.floor(), (self.scale - 1.0).to(coords.dtype)[:, None])
        fx, fy = (position - cell).unbind(-1)
        gx, gy = 1.0 - fx, 1.0 - fy
        weights = torch.stack([gx * gy, fx * gy, gx * fy, fx * fy], dim=-1)  # bilinear, (P, L, 4)

        x, y = cell.long().unbind(-1)
        split = self._dense_levels
        index = torch.cat(
            [self._dense_corners(x[:, :split], y[:, :split]), self._hashed_corners(x[:, split:], y[:, split:])], dim=1
        )  # level-local rows of the four corners, (P, L, 4)
        features = self.table.index_select(0, (index + self.offsets[:, None]).reshape(-1))
        encoded = (features.view(*index.shape, self.features_per_level) * weights[..., None]).sum(2)  # (P, L, F)
        return encoded.reshape(*lead, self.output_dim)

    def _dense_corners(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Level-local rows (P, dense levels, 4) of the corners of cells (x, y) of the densely stored levels."""
        stride = self.row_stride
        lower_left = x + y * stride
        return torch.stack([lower_left, lower_left + 1, lower_left + stride, lower_left + stride + 1], dim=-1)

    def _hashed_corners(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Level-local rows (P, hashed levels, 4) of the corners of cells (x, y): (x XOR y * prime) mod table size."""
        x1, y0 = x + 1, y * HASH_PRIME_Y
        y1 = y0 + HASH_PRIME_Y
        return torch.stack([x ^ y0, x1 ^ y0, x ^ y1, x1 ^ y1], dim=-1) & self._hash_mask  # mod the power of two


class TriPlaneEncoding(nn.Module):
    """Tri-plane hash encoding f_g = H_XY(x, y) ⊕ H_YZ(y, z) ⊕ H_XZ(x, z) of points inside a box (paper 2.4).

    Points are mapped to [0, 1]^3 by the box (and clamped to it); each plane is a HashGrid2D of its own.
    """

    def __init__(
        self, config: HashGridConfig, box_min: tuple[float, float, float], box_max: tuple[float, float, float]
    ):
        super().__init__()
        if len(box_min) != 3 or len(box_max) != 3:
            raise ValueError(f"box_min and box_max must have 3 coordinates, got {box_min} and {box_max}")
        if not all(low < high for low, high in zip(box_min, box_max, strict=True)):
            raise ValueError(f"box_min {tuple(box_min)} must be below box_max {tuple(box_max)} on every axis")
        self.planes = nn.ModuleList(HashGrid2D(config) for _ in PLANE_AXES)
        self.output_dim = len(PLANE_AXES) * self.planes[0].output_dim
        low = torch.tensor(box_min, dtype=torch.float32)
        self.register_buffer("box_min", low, persistent=False)
        self.register_buffer("box_size", torch.tensor(box_max, dtype=torch.float32) - low, persistent=False)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Encode world points (..., 3) as (..., output_dim) features: the XY, YZ and XZ planes' in that order."""
        if points.shape[-1] != 3:
            raise ValueError(f"TriPlaneEncoding expects points of shape (..., 3), got {tuple(points.shape)}")
        unit = ((points - self.box_min) / self.box_size).clamp(0.0, 1.0)
        planes = zip(self.planes, PLANE_AXES, strict=True)
        return torch.cat([plane(unit[..., list(axes)]) for plane, axes in planes], dim=-1)


class SphericalHarmonicsEncoding(nn.Module):
    """Real spherical harmonics of view directions, bands 0..degree-1 (Instant-NGP's / ER-NeRF's constants)."""

    def __init__(self, degree: int = 4):
        super().__init__()
        if not 1 <= degree <= 4:
            raise ValueError(f"SphericalHarmonicsEncoding degree must be in 1..4, got {degree}")
        self.degree = degree
        self.output_dim = degree**2

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        """Encode directions (..., 3), normalised here, as (..., degree**2) harmonics."""
        if directions.shape[-1] != 3:
            raise ValueError(f"SphericalHarmonicsEncoding expects (..., 3) directions, got {tuple(directions.shape)}")
        x, y, z = F.normalize(directions, dim=-1).unbind(-1)
        harmonics = [torch.full_like(x, 0.28209479177387814)]
        if self.degree > 1:
            harmonics += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
        if self.degree > 2:
            x2, y2, z2 = x * x, y * y, z * z
            harmonics += [
                1.0925484305920792 * x * y,
                -1.0925484305920792 * y * z,
                0.94617469575755997 * z2 - 0.31539156525251999,
                -1.0925484305920792 * x * z,
                0.54627421529603959 * (x2 - y2),
            ]
        if self.degree > 3:
            harmonics += [
                0.59004358992664352 * y * (y2 - 3.0 * x2),
                2.8906114426405538 * x * y * z,
                0.45704579946446572 * y * (1.0 - 5.0 * z2),
                0.3731763325901154 * z * (5.0 * z2 - 3.0),
                0.45704579946446572 * x * (1.0 - 5.0 * z2),
                1.4453057213202769 * z * (x2 - y2),
                0.59004358992664352 * x * (3.0 * y2 - x2),
            ]
        return torch.stack(harmonics, dim=-1)
