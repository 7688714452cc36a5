"""Tests of damc_core.nerf.encodings: the 2D hash grid against a slow reference, the tri-plane and the SH encoding."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from damc_core.nerf.encodings import (
    HashGrid2D,
    SphericalHarmonicsEncoding,
    TriPlaneEncoding,
    level_resolutions,
)
from damc_core.params import HashGridConfig

MIXED = HashGridConfig(levels=6, features_per_level=1, log2_table_size=8, base_resolution=4, finest_resolution=200)
"""Two densely stored levels (4, 8) and four hashed ones (19 .. 200) with 256-entry tables."""
PRIME = 2654435761


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def unit_table_grid(config: HashGridConfig) -> HashGrid2D:
    """A float64 grid whose table entries are O(1), so that comparisons at 1e-6 are meaningful."""
    grid = HashGrid2D(config).double()
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0)
    return grid


def reference_encode(grid: HashGrid2D, config: HashGridConfig, coords: torch.Tensor) -> torch.Tensor:
    """Point by point, level by level, corner by corner, straight from the definition."""
    table = grid.table.tolist()
    hash_size = 2**config.log2_table_size
    rows = []
    for point in coords.tolist():
        row = []
        offset = 0
        for resolution in level_resolutions(config):
            size = min(hash_size, (resolution + 1) ** 2)
            px, py = (min(max(c, 0.0), 1.0) * resolution for c in point)
            x0, y0 = min(math.floor(px), resolution - 1), min(math.floor(py), resolution - 1)
            value = [0.0] * config.features_per_level
            for dx in (0, 1):
                for dy in (0, 1):
                    vx, vy = x0 + dx, y0 + dy
                    if (resolution + 1) ** 2 <= hash_size:
                        index = vx + vy * (resolution + 1)
                    else:
                        index = (vx ^ (vy * PRIME)) % hash_size
                    weight = (px - x0 if dx else 1 - (px - x0)) * (py - y0 if dy else 1 - (py - y0))
                    for f in range(config.features_per_level):
                        value[f] += weight * table[offset + index][f]
            row += value
            offset += size
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def test_levels_grow_geometrically_and_tables_are_capped():
    grid = HashGrid2D(MIXED)
    assert grid.resolutions == (4, 8, 19, 41, 91, 200)
    assert grid.table_sizes == (25, 81, 256, 256, 256, 256)
    assert grid.table.shape == (25 + 81 + 4 * 256, 1)
    assert grid.output_dim == 6
    paper = dataclasses.replace(MIXED, levels=14, log2_table_size=14, base_resolution=16, finest_resolution=512)
    assert level_resolutions(paper) == (16, 20, 27, 35, 46, 60, 79, 103, 135, 176, 230, 300, 392, 512)
    assert level_resolutions(dataclasses.replace(MIXED, levels=1)) == (4,)


def test_table_is_initialised_small():
    table = HashGrid2D(MIXED).table
    assert table.abs().max() <= 1e-4
    assert table.std() > 1e-5


@pytest.mark.parametrize("features", [1, 2])
def test_matches_the_slow_reference(features: int):
    config = dataclasses.replace(MIXED, features_per_level=features)
    grid = unit_table_grid(config)
    coords = torch.cat(
        [
            torch.rand(150, 2, dtype=torch.float64),
            torch.tensor([[0, 0], [1, 1], [0, 1], [0.5, 0.25], [1.3, -0.2], [-5, 0.7]], dtype=torch.float64),
        ]
    )
    encoded = grid(coords)
    assert encoded.shape == (len(coords), 6 * features)
    torch.testing.assert_close(encoded, reference_encode(grid, config, coords), atol=1e-6, rtol=0)


def test_float32_matches_the_reference_too():
    grid = HashGrid2D(MIXED)
    coords = torch.rand(50, 2)
    expected = reference_encode(grid, MIXED, coords).float()
    torch.testing.assert_close(grid(coords), expected, atol=1e-9, rtol=1e-4)


def test_output_is_level_major_and_keeps_leading_dims():
    config = dataclasses.replace(MIXED, features_per_level=2)
    grid = unit_table_grid(config)
    coords = torch.rand(3, 4, 2, dtype=torch.float64)
    encoded = grid(coords)
    assert encoded.shape == (3, 4, 12)
    torch.testing.assert_close(encoded.reshape(12, 12), reference_encode(grid, config, coords.reshape(12, 2)))
    # Level 0 is dense with 5 x 5 vertices: its two features sit in the output's first two columns.
    corner = grid(torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(corner[:2], grid.table[0])


def test_dense_level_vertex_returns_its_entry():
    config = HashGridConfig(levels=1, features_per_level=1, log2_table_size=8, base_resolution=4, finest_resolution=4)
    grid = unit_table_grid(config)
    for i in range(5):
        for j in range(5):
            value = grid(torch.tensor([i / 4, j / 4], dtype=torch.float64))
            torch.testing.assert_close(value, grid.table[i + 5 * j])


def test_hashed_level_vertex_returns_its_hashed_entry():
    config = HashGridConfig(levels=1, features_per_level=1, log2_table_size=6, base_resolution=32, finest_resolution=32)
    grid = unit_table_grid(config)
    assert grid.table_sizes == (64,)
    for i, j in [(0, 0), (3, 7), (31, 2), (32, 32), (17, 32)]:
        value = grid(torch.tensor([i / 32, j / 32], dtype=torch.float64))
        torch.testing.assert_close(value, grid.table[(i ^ (j * PRIME)) % 64])


def test_output_is_continuous_across_cells():
    grid = unit_table_grid(MIXED)
    # On a cell edge of the finest level (x = 37 / 200) and elsewhere, tiny moves make tiny changes.
    points = torch.cat([torch.tensor([[37 / 200, 0.41]], dtype=torch.float64), torch.rand(20, 2, dtype=torch.float64)])
    for step in ([1e-9, 0.0], [0.0, 1e-9], [-1e-9, 1e-9]):
        moved = grid(points + torch.tensor(step, dtype=torch.float64))
        assert (moved - grid(points)).abs().max() < 1e-5


def test_outside_coordinates_are_clamped():
    grid = unit_table_grid(MIXED)
    outside = torch.tensor([[-0.3, 1.7], [2.0, 0.4], [0.6, -1e-3]], dtype=torch.float64)
    torch.testing.assert_close(grid(outside), grid(outside.clamp(0.0, 1.0)), atol=0, rtol=0)


def test_gradient_reaches_only_the_touched_rows():
    config = dataclasses.replace(MIXED, features_per_level=2)
    grid = HashGrid2D(config)
    grid(torch.tensor([0.3141, 0.5926])).sum().backward()
    grad = grid.table.grad
    start = 0
    for size in grid.table_sizes:
        level = grad[start : start + size]
        assert 1 <= int((level != 0).any(dim=1).sum()) <= 4
        # The bilinear weights of a level sum to one, whichever rows they land on.
        torch.testing.assert_close(level.sum(dim=0), torch.ones(2))
        start += size


def test_gradients_match_finite_differences():
    grid = unit_table_grid(MIXED)
    coords = torch.rand(8, 2, dtype=torch.float64)
    table = grid.table.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: torch.func.functional_call(grid, {"table": t}, (coords,)), table)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("levels", 0),
        ("features_per_level", 0),
        ("log2_table_size", 0),
        ("base_resolution", 0),
        ("finest_resolution", -1),
        ("finest_resolution", 3),
    ],
)
def test_invalid_config_is_refused_naming_the_field(field: str, value: int):
    with pytest.raises(ValueError, match=field):
        HashGrid2D(dataclasses.replace(MIXED, **{field: value}))


def test_wrong_coordinate_shape_is_refused():
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        HashGrid2D(MIXED)(torch.rand(4, 3))


BOX_MIN = (-1.0, -2.0, 0.5)
BOX_MAX = (1.0, 2.0, 1.5)


def test_triplane_output_dim_and_shape():
    encoding = TriPlaneEncoding(dataclasses.replace(MIXED, features_per_level=2), BOX_MIN, BOX_MAX)
    assert encoding.output_dim == 36
    assert encoding(torch.rand(2, 5, 3)).shape == (2, 5, 36)


def test_triplane_blocks_are_xy_yz_xz():
    encoding = TriPlaneEncoding(MIXED, BOX_MIN, BOX_MAX)
    point = torch.tensor([0.2, -0.7, 0.9])
    base = encoding(point)
    xy, yz, xz = base.split(6)
    new_z = encoding(point + torch.tensor([0.0, 0.0, 0.3])).split(6)
    torch.testing.assert_close(new_z[0], xy, atol=0, rtol=0)
    assert not torch.equal(new_z[1], yz) and not torch.equal(new_z[2], xz)
    new_x = encoding(point + torch.tensor([0.4, 0.0, 0.0])).split(6)
    torch.testing.assert_close(new_x[1], yz, atol=0, rtol=0)
    assert not torch.equal(new_x[0], xy) and not torch.equal(new_x[2], xz)
    new_y = encoding(point + torch.tensor([0.0, 0.5, 0.0])).split(6)
    torch.testing.assert_close(new_y[2], xz, atol=0, rtol=0)
    # Each block is its own plane's encoding of the normalised coordinate pair.
    unit = (point - torch.tensor(BOX_MIN)) / (torch.tensor(BOX_MAX) - torch.tensor(BOX_MIN))
    torch.testing.assert_close(yz, encoding.planes[1](unit[[1, 2]]))


def test_triplane_box_maps_to_the_unit_cube():
    encoding = TriPlaneEncoding(MIXED, BOX_MIN, BOX_MAX)

    def planes_at(u: float, v: float) -> torch.Tensor:
        return torch.cat([plane(torch.tensor([u, v])) for plane in encoding.planes])

    torch.testing.assert_close(encoding(torch.tensor(BOX_MIN)), planes_at(0.0, 0.0))
    torch.testing.assert_close(encoding(torch.tensor(BOX_MAX)), planes_at(1.0, 1.0))
    centre = [(low + high) / 2 for low, high in zip(BOX_MIN, BOX_MAX, strict=True)]
    torch.testing.assert_close(encoding(torch.tensor(centre)), planes_at(0.5, 0.5))
    outside = encoding(torch.tensor([5.0, -9.0, 1.5]))  # clamped to (1, 0, 1)
    clamped = ([1.0, 0.0], [0.0, 1.0], [1.0, 1.0])
    expected = [plane(torch.tensor(uv)) for plane, uv in zip(encoding.planes, clamped, strict=True)]
    torch.testing.assert_close(outside, torch.cat(expected))


@pytest.mark.parametrize(
    ("box_min", "box_max"),
    [((0.0, 0.0, 1.0), (1.0, 1.0, 1.0)), ((0.0, 2.0, 0.0), (1.0, 1.0, 1.0)), ((0.0, 0.0), (1.0, 1.0))],
)
def test_triplane_refuses_an_empty_box(box_min: tuple, box_max: tuple):
    with pytest.raises(ValueError, match="box_min"):
        TriPlaneEncoding(MIXED, box_min, box_max)


def reference_harmonics(direction: tuple[float, float, float]) -> list[float]:
    """The first four bands from their closed forms (Condon-Shortley signs, as in Instant-NGP)."""
    norm = math.sqrt(sum(c * c for c in direction))
    x, y, z = (c / norm for c in direction)
    k = 1 / math.sqrt(math.pi)
    return [
        k / 2,
        -math.sqrt(3) / 2 * k * y,
        math.sqrt(3) / 2 * k * z,
        -math.sqrt(3) / 2 * k * x,
        math.sqrt(15) / 2 * k * x * y,
        -math.sqrt(15) / 2 * k * y * z,
        math.sqrt(5) / 4 * k * (3 * z * z - 1),
        -math.sqrt(15) / 2 * k * x * z,
        math.sqrt(15) / 4 * k * (x * x - y * y),
        math.sqrt(70) / 8 * k * y * (y * y - 3 * x * x),
        math.sqrt(105) / 2 * k * x * y * z,
        math.sqrt(42) / 8 * k * y * (1 - 5 * z * z),
        math.sqrt(7) / 4 * k * z * (5 * z * z - 3),
        math.sqrt(42) / 8 * k * x * (1 - 5 * z * z),
        math.sqrt(105) / 4 * k * z * (x * x - y * y),
        math.sqrt(70) / 8 * k * x * (3 * y * y - x * x),
    ]


def test_harmonics_match_their_closed_forms():
    directions = [(0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.3, -0.4, 0.5), (-2.0, 1.0, 3.0), (0.1, 0.9, -0.2)]
    encoded = SphericalHarmonicsEncoding()(torch.tensor(directions, dtype=torch.float64))
    expected = torch.tensor([reference_harmonics(d) for d in directions], dtype=torch.float64)
    torch.testing.assert_close(encoded, expected, atol=1e-12, rtol=0)


def test_harmonics_are_orthonormal_over_the_sphere():
    directions = torch.randn(200_000, 3, dtype=torch.float64)
    harmonics = SphericalHarmonicsEncoding()(directions)
    gram = 4 * math.pi * harmonics.T @ harmonics / len(directions)
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.05, rtol=0)


def test_lower_degrees_are_the_leading_bands():
    directions = torch.randn(10, 3)
    full = SphericalHarmonicsEncoding(4)(directions)
    for degree in (1, 2, 3):
        encoding = SphericalHarmonicsEncoding(degree)
        assert encoding.output_dim == degree**2
        torch.testing.assert_close(encoding(directions), full[:, : degree**2])
    torch.testing.assert_close(SphericalHarmonicsEncoding()(directions * 7.5), full)


@pytest.mark.parametrize("degree", [0, 5])
def test_unsupported_degree_is_refused(degree: int):
    with pytest.raises(ValueError, match="degree"):
        SphericalHarmonicsEncoding(degree)
