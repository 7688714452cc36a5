"""Camera rays of pixels, their intersection with the scene box, and the image rectangle a box can cover.

Cameras follow transforms_*.json (damc_core.face.pose.transforms_json): camera-to-world 4x4 matrices in OpenGL/NeRF
camera axes (x right, y up, z backwards), world = the face template frame in decimetres, and a pinhole camera
(focal, cx, cy) whose ray of pixel (column c, row r) passes through (c + 0.5, r + 0.5), as in ER-NeRF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

BoxCorner = Tensor | Sequence[float]
"""A corner of an axis-aligned box in world coordinates: 3 numbers."""

PixelRect = tuple[int, int, int, int]
"""(col0, row0, col1, row1): the pixels with col0 <= col < col1 and row0 <= row < row1."""


def camera_rays(
    camera_to_world: Tensor, pixels: Tensor, focal: float, cx: float, cy: float
) -> tuple[Tensor, Tensor]:
    """Origins (N, 3) and unit directions (N, 3) in world of the rays through pixels (N, 2) = (col, row).

    ``camera_to_world`` is one (4, 4) camera for all pixels or one (N, 4, 4) per pixel. In the camera the direction
    is ((col + 0.5 - cx) / focal, -(row + 0.5 - cy) / focal, -1). The result has the promoted dtype of the two
    tensors (integer pixel indices are fine).
    """
    dtype = torch.promote_types(camera_to_world.dtype, pixels.dtype)
    matrices = camera_to_world.to(dtype)
    pixels = pixels.to(dtype)
    in_camera = torch.stack(
        [
            (pixels[:, 0] + 0.5 - cx) / focal,
            -(pixels[:, 1] + 0.5 - cy) / focal,
            -torch.ones_like(pixels[:, 0]),
        ],
        dim=-1,
    )
    directions = (matrices[..., :3, :3] @ in_camera.unsqueeze(-1)).squeeze(-1)
    origins = matrices[..., :3, 3].expand_as(directions)
    return origins, F.normalize(directions, dim=-1)


def intersect_box(
    origins: Tensor, directions: Tensor, box_min: BoxCorner, box_max: BoxCorner
) -> tuple[Tensor, Tensor, Tensor]:
    """Where rays (N, 3) enter and leave an axis-aligned box: near (N,), far (N,) and hit (N,) bool (slab method).

    Distances are along ``directions`` (unit directions give world distances); near is clamped at 0, so a ray that
    starts inside the box has near = 0. A ray hits when far > near (a ray grazing an edge or a corner does not);
    for a ray that misses, near = far = 0, so samples between them are empty (zero-length steps, zero weights).
    """
    low = torch.as_tensor(box_min, dtype=origins.dtype, device=origins.device)
    high = torch.as_tensor(box_max, dtype=origins.dtype, device=origins.device)
    parallel = directions == 0
    safe_directions = torch.where(parallel, torch.ones_like(directions), directions)
    to_low = (low - origins) / safe_directions
    to_high = (high - origins) / safe_directions
    inside_slab = (origins >= low) & (origins <= high)
    unbounded = torch.full_like(origins, math.inf)
    # A ray parallel to a slab is inside it for all distances or for none.
    enter = torch.where(parallel, torch.where(inside_slab, -unbounded, unbounded), torch.minimum(to_low, to_high))
    leave = torch.where(parallel, torch.where(inside_slab, unbounded, -unbounded), torch.maximum(to_low, to_high))
    near = enter.amax(dim=-1).clamp_min(0.0)
    far = leave.amin(dim=-1)
    hit = far > near
    zero = torch.zeros_like(near)
    return torch.where(hit, near, zero), torch.where(hit, far, zero), hit


def project_points(points: Tensor, camera_to_world: Tensor, focal: float, cx: float, cy: float) -> Tensor:
    """Pixel positions (M, 2) = (col, row) of world points (M, 3): the inverse of camera_rays.

    A point on the ray of pixel (c, r) projects to (c, r) (fractional for points between pixel rays). Points must be
    in front of the camera (negative camera z).
    """
    dtype = torch.promote_types(camera_to_world.dtype, points.dtype)
    rotation = camera_to_world[:3, :3].to(dtype)
    in_camera = (points.to(dtype) - camera_to_world[:3, 3].to(dtype)) @ rotation  # R^T (p - t), row by row
    depth = -in_camera[:, 2]
    cols = focal * in_camera[:, 0] / depth + cx - 0.5
    rows = -focal * in_camera[:, 1] / depth + cy - 0.5
    return torch.stack([cols, rows], dim=-1)


def box_corners(box_min: BoxCorner, box_max: BoxCorner, dtype: torch.dtype = torch.float64,
                device: torch.device | str = "cpu") -> Tensor:
    """The 8 corners (8, 3) of an axis-aligned box, on `device`."""
    low = torch.as_tensor(box_min, dtype=dtype, device=device)
    high = torch.as_tensor(box_max, dtype=dtype, device=device)
    bounds = torch.stack([low, high])  # (2, 3)
    choice = torch.cartesian_prod(*[torch.arange(2, device=device)] * 3)  # (8, 3): low (0) or high (1) per axis
    return bounds.gather(0, choice)


def box_pixel_rect(
    camera_to_world: Tensor,
    focal: float,
    cx: float,
    cy: float,
    box_min: BoxCorner,
    box_max: BoxCorner,
    width: int,
    height: int,
    margin: int = 2,
) -> PixelRect:
    """The pixels whose rays can hit the box: the bounding rectangle of its 8 projected corners, widened by ``margin``
    pixels on each side and clamped to the width x height image (possibly empty, col0 == col1 or row0 == row1).

    A box is convex, so its projection lies within that of its corners; the rays of pixels outside the rectangle miss
    it. When a corner is not in front of the camera the projection is unbounded and the whole image is returned.
    """
    corners = box_corners(box_min, box_max)
    matrix = camera_to_world.detach().cpu().to(torch.float64)
    in_camera_z = (corners - matrix[:3, 3]) @ matrix[:3, 2]
    if (in_camera_z >= 0).any():
        return 0, 0, width, height
    projected = project_points(corners, matrix, focal, cx, cy)
    low = projected.amin(dim=0).floor().long() - margin
    high = projected.amax(dim=0).floor().long() + 1 + margin
    col0, col1 = torch.stack([low[0], high[0]]).clamp(0, width).tolist()
    row0, row1 = torch.stack([low[1], high[1]]).clamp(0, height).tolist()
    return col0, row0, col1, row1


def pixel_grid(rect: PixelRect, device: torch.device | str | None = None) -> Tensor:
    """All pixels (K, 2) = (col, row) of a rectangle (col0, row0, col1, row1), in row-major order, as int64."""
    col0, row0, col1, row1 = rect
    rows, cols = torch.meshgrid(
        torch.arange(row0, row1, device=device), torch.arange(col0, col1, device=device), indexing="ij"
    )
    return torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=-1)
