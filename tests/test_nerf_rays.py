"""NeRF rays: agreement with the pose fit's OpenCV camera, projection as their inverse, box intersection and rects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from damc_core.face.pose import FACE_TEMPLATE_68, _camera_to_world
from damc_core.nerf.rays import box_corners, box_pixel_rect, camera_rays, intersect_box, pixel_grid, project_points

WIDTH, HEIGHT = 160, 120
FOCAL = 300.0
CX_OPENCV, CY_OPENCV = (WIDTH - 1) / 2, (HEIGHT - 1) / 2
CX, CY = CX_OPENCV + 0.5, CY_OPENCV + 0.5  # as transforms_json writes them
TO_OPENCV = np.array([1.0, -1.0, -1.0])
BOX_MIN, BOX_MAX = (-1.0, -1.5, -0.8), (1.0, 1.2, 1.4)
TEMPLATE = torch.tensor(FACE_TEMPLATE_68)


@pytest.fixture(scope="module")
def camera() -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """A head pose (R, t) in OpenCV camera axes and its camera-to-world matrix, built as damc_core.face.pose does."""
    rotation = Rotation.from_euler("yxz", [20.0, -10.0, 5.0], degrees=True).as_matrix()
    translation = np.array([0.1, -0.2, 18.0])
    matrix = _camera_to_world(rotation[None], translation[None])[0]
    return rotation, translation, torch.from_numpy(matrix)


def opencv_pixels(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(68, 2) OpenCV pixel positions (pixel centres at integers) of the template points."""
    in_camera = (FACE_TEMPLATE_68 * TO_OPENCV) @ rotation.T + translation
    return FOCAL * in_camera[:, :2] / in_camera[:, 2:] + np.array([CX_OPENCV, CY_OPENCV])


def distances_to_rays(points: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    offsets = points - origins
    along = (offsets * directions).sum(dim=-1, keepdim=True)
    return torch.linalg.norm(offsets - along * directions, dim=-1)


def test_ray_of_each_projected_template_point_passes_through_it(camera):
    rotation, translation, matrix = camera
    pixels = torch.from_numpy(opencv_pixels(rotation, translation))
    origins, directions = camera_rays(matrix, pixels, FOCAL, CX, CY)
    assert distances_to_rays(TEMPLATE, origins, directions).max() < 1e-6
    depths = ((TEMPLATE - origins) * directions).sum(dim=-1)
    assert (depths > 0).all()  # in front of the camera, along the ray


def test_rays_are_unit_and_start_at_the_camera(camera):
    _, _, matrix = camera
    pixels = pixel_grid((0, 0, WIDTH, HEIGHT))
    origins, directions = camera_rays(matrix, pixels, FOCAL, CX, CY)
    assert origins.shape == directions.shape == (WIDTH * HEIGHT, 3)
    assert origins.dtype == directions.dtype == torch.float64
    torch.testing.assert_close(torch.linalg.norm(directions, dim=-1), torch.ones(WIDTH * HEIGHT, dtype=torch.float64))
    torch.testing.assert_close(origins, matrix[:3, 3].expand(WIDTH * HEIGHT, 3))
    centre = torch.tensor([[CX - 0.5, CY - 0.5]], dtype=torch.float64)  # the principal ray looks down camera -z
    _, principal = camera_rays(matrix, centre, FOCAL, CX, CY)
    torch.testing.assert_close(principal[0], -matrix[:3, 2])


def test_one_camera_per_ray_matches_a_shared_camera(camera):
    _, _, matrix = camera
    pixels = torch.tensor([[0.0, 0.0], [17.0, 95.0], [WIDTH - 1.0, HEIGHT - 1.0]])
    shared = camera_rays(matrix, pixels, FOCAL, CX, CY)
    per_ray = camera_rays(matrix.expand(3, 4, 4), pixels, FOCAL, CX, CY)
    for expected, actual in zip(shared, per_ray, strict=True):
        torch.testing.assert_close(actual, expected)


def test_project_points_inverts_camera_rays(camera):
    rotation, translation, matrix = camera
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(50, 2, generator=generator, dtype=torch.float64) * torch.tensor([WIDTH, HEIGHT])
    origins, directions = camera_rays(matrix, pixels, FOCAL, CX, CY)
    depths = 10.0 + 15.0 * torch.rand(50, 1, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(project_points(origins + depths * directions, matrix, FOCAL, CX, CY), pixels)
    template = project_points(TEMPLATE, matrix, FOCAL, CX, CY)
    torch.testing.assert_close(template, torch.from_numpy(opencv_pixels(rotation, translation)))


def test_float32_pixels_and_integer_pixels_work(camera):
    _, _, matrix = camera
    pixels = pixel_grid((3, 4, 6, 7))
    as_long = camera_rays(matrix.float(), pixels, FOCAL, CX, CY)
    as_float = camera_rays(matrix.float(), pixels.float(), FOCAL, CX, CY)
    assert as_long[1].dtype == torch.float32
    for expected, actual in zip(as_float, as_long, strict=True):
        torch.testing.assert_close(actual, expected)


def rays(origins: list[list[float]], directions: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    directions_tensor = torch.nn.functional.normalize(torch.tensor(directions, dtype=torch.float64), dim=-1)
    return torch.tensor(origins, dtype=torch.float64), directions_tensor


def test_intersect_box_known_answers():
    origins, directions = rays(
        [[0, 0, 5], [0, 0, -5], [0.3, -0.2, 0.1], [-1.5, 0, 0], [0, 1, 5], [5, 5, 5], [0, 0, 5], [-2, 0, 0]],
        [[0, 0, -1], [0, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, -1], [0, 0, -1], [0, 0, 1], [1, 1, 0]],
    )
    near, far, hit = intersect_box(origins, directions, (-1, -1, -1), (1, 1, 1))
    root2 = math.sqrt(2)
    expected_hit = torch.tensor([True, True, True, True, True, False, False, False])
    assert hit.tolist() == expected_hit.tolist()
    torch.testing.assert_close(near, torch.tensor([4, 4, 0, 0.5 * root2, 4, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(far, torch.tensor([6, 6, 0.7, root2, 6, 0, 0, 0], dtype=torch.float64))
    # cases: straight through; from behind; from inside (near 0); diagonal; along a face; parallel miss;
    # box behind the ray; a ray that only grazes an edge


def test_intersect_box_with_tensor_corners_and_hits_agree_with_points_inside(camera):
    _, _, matrix = camera
    origins, directions = camera_rays(matrix, pixel_grid((0, 0, WIDTH, HEIGHT)), FOCAL, CX, CY)
    low, high = torch.tensor(BOX_MIN, dtype=torch.float64), torch.tensor(BOX_MAX, dtype=torch.float64)
    near, far, hit = intersect_box(origins, directions, low, high)
    assert hit.any() and not hit.all()
    middle = origins + ((near + far) / 2)[:, None] * directions
    inside = ((middle > low) & (middle < high)).all(dim=-1)
    assert inside[hit].all()
    for depth in (near, far):
        on_box = origins[hit] + depth[hit, None] * directions[hit]
        assert ((on_box >= low - 1e-9) & (on_box <= high + 1e-9)).all()
    assert (near[~hit] == 0).all() and (far[~hit] == 0).all()


def test_box_pixel_rect_contains_the_box_and_only_misses_lie_outside(camera):
    _, _, matrix = camera
    rect = box_pixel_rect(matrix, FOCAL, CX, CY, BOX_MIN, BOX_MAX, WIDTH, HEIGHT)
    col0, row0, col1, row1 = rect
    assert all(isinstance(value, int) for value in rect)
    assert 0 < col0 < col1 < WIDTH and 0 < row0 < row1 < HEIGHT  # this box is well inside the image
    generator = torch.Generator().manual_seed(1)
    low, high = torch.tensor(BOX_MIN, dtype=torch.float64), torch.tensor(BOX_MAX, dtype=torch.float64)
    points = low + (high - low) * torch.rand(1000, 3, generator=generator, dtype=torch.float64)
    projected = project_points(points, matrix, FOCAL, CX, CY)
    assert (projected[:, 0] >= col0).all() and (projected[:, 0] <= col1 - 1).all()
    assert (projected[:, 1] >= row0).all() and (projected[:, 1] <= row1 - 1).all()
    pixels = pixel_grid((0, 0, WIDTH, HEIGHT))
    outside = (pixels[:, 0] < col0) | (pixels[:, 0] >= col1) | (pixels[:, 1] < row0) | (pixels[:, 1] >= row1)
    _, _, hit = intersect_box(*camera_rays(matrix, pixels, FOCAL, CX, CY), BOX_MIN, BOX_MAX)
    assert not hit[outside].any()
    assert hit[~outside].any()


def test_box_pixel_rect_is_clamped_to_the_image_and_whole_when_the_camera_is_inside(camera):
    _, _, matrix = camera
    big = box_pixel_rect(matrix, FOCAL, CX, CY, (-8, -8, -8), (8, 8, 8), WIDTH, HEIGHT)
    assert big == (0, 0, WIDTH, HEIGHT)
    straddling = ((-6.0, -1.0, -1.0), (-4.0, 1.0, 1.0))  # projects across the left edge of the image
    projected = project_points(box_corners(*straddling), matrix, FOCAL, CX, CY)
    assert projected[:, 0].min() < 0 < projected[:, 0].max()
    col0, row0, col1, row1 = box_pixel_rect(matrix, FOCAL, CX, CY, *straddling, WIDTH, HEIGHT, margin=0)
    assert col0 == 0 and col1 == math.floor(projected[:, 0].max()) + 1 and 0 < row0 < row1 < HEIGHT
    offscreen = box_pixel_rect(matrix, FOCAL, CX, CY, (-16, -1, -1), (-14, 1, 1), WIDTH, HEIGHT)
    assert offscreen[0] == offscreen[2] == 0 and not pixel_grid(offscreen).numel()
    around_camera = box_pixel_rect(matrix, FOCAL, CX, CY, (-30, -30, -30), (30, 30, 30), WIDTH, HEIGHT, margin=0)
    assert around_camera == (0, 0, WIDTH, HEIGHT)


def test_box_corners_are_the_eight_combinations():
    corners = box_corners((0, 1, 2), (3, 4, 5))
    assert corners.shape == (8, 3)
    assert {tuple(corner) for corner in corners.tolist()} == {
        (x, y, z) for x in (0.0, 3.0) for y in (1.0, 4.0) for z in (2.0, 5.0)
    }


def test_pixel_grid_is_row_major_col_row():
    assert pixel_grid((2, 3, 5, 5)).tolist() == [[2, 3], [3, 3], [4, 3], [2, 4], [3, 4], [4, 4]]
    assert pixel_grid((2, 3, 2, 5)).shape == (0, 2)
    assert pixel_grid((0, 0, 4, 2)).dtype == torch.int64
