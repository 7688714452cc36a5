"""Which cells of the head's box hold density, so rendering skips empty space (ER-NeRF's density grid)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from damc_core.nerf.field import AudioConditionedField

MAX_SKIPPED_OPACITY = 0.01
"""Skipping empty cells may change a ray's opacity by at most this much: a cell is empty when its density, over the
longest path through the box (the diagonal), absorbs less than this fraction of light."""
RESOLUTION = 48
"""Cells along each side of the box."""
CONDITIONS = 4
"""Audio conditions a grid is computed with (evenly spaced frames of the audio to be rendered)."""
DILATION_CELLS = 1
"""Occupied cells are grown by this many cells, for the density between cell centres and for audio the grid was
not computed with (the mouth opens further)."""


@dataclass(frozen=True)
class OccupancyGrid:
    """A boolean grid over the box: False where the field is empty for every condition it was computed with."""

    occupied: torch.Tensor
    """(R, R, R) bool, indexed [x, y, z] from box_min."""
    box_min: torch.Tensor
    """(3,) corner of the box."""
    box_max: torch.Tensor
    """(3,) opposite corner."""

    @property
    def fraction(self) -> float:
        """Share of the box's cells that are occupied."""
        return float(self.occupied.float().mean())

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) points -> (...,) True where the point's cell is occupied (False outside the box)."""
        resolution = self.occupied.shape[0]
        unit = (points - self.box_min) / (self.box_max - self.box_min)
        inside = ((unit >= 0) & (unit <= 1)).all(dim=-1)
        cell = (unit.clamp(0, 1) * resolution).long().clamp(max=resolution - 1)
        return inside & self.occupied[cell[..., 0], cell[..., 1], cell[..., 2]]


@torch.no_grad()
def occupancy_grid(
    field: AudioConditionedField, audio: torch.Tensor, resolution: int = RESOLUTION, chunk: int = 65536
) -> OccupancyGrid:
    """The grid of cells where `field`'s density at the cell centre is above the MAX_SKIPPED_OPACITY level for any of
    the (K, A) audio conditions, with eyes open or shut; then dilated by DILATION_CELLS."""
    device = audio.device
    low = torch.tensor(field.config.box_min, dtype=torch.float32, device=device)
    high = torch.tensor(field.config.box_max, dtype=torch.float32, device=device)
    axes = [torch.linspace(0, 1, resolution * 2 + 1, device=device)[1::2] for _ in range(3)]
    centres = low + torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3) * (high - low)
    threshold = -math.log1p(-MAX_SKIPPED_OPACITY) / float(torch.linalg.norm(high - low))
    densest = torch.zeros(len(centres), device=device)
    for condition in audio:
        for blink in (0.0, 1.0):
            for start in range(0, len(centres), chunk):
                points = centres[start:start + chunk]
                count = len(points)
                sigma = field.density(points, condition.expand(count, -1), torch.full((count,), blink, device=device))
                densest[start:start + count] = torch.maximum(densest[start:start + count], sigma)
    occupied = (densest > threshold).reshape(1, 1, resolution, resolution, resolution).float()
    size = 2 * DILATION_CELLS + 1
    grown = F.max_pool3d(occupied, kernel_size=size, stride=1, padding=DILATION_CELLS)[0, 0] > 0
    return OccupancyGrid(grown, low, high)
