"""The talking head: CSFM fusion and temporal smoothing of the audio, the conditioned field, and rendering of rays
and whole frames over the subject's background."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from damc_core.fusion import CSFM, TemporalSmoother
from damc_core.nerf.data import Camera, FrameAudio
from damc_core.nerf.field import AudioConditionedField
from damc_core.nerf.occupancy import CONDITIONS, OccupancyGrid, occupancy_grid
from damc_core.nerf.rays import box_pixel_rect, camera_rays, intersect_box, pixel_grid
from damc_core.nerf.rendering import (
    RenderedRays,
    composite,
    sample_deltas,
    sample_points,
    stratified_depths,
    volume_weights,
)
from damc_core.params import FieldConfig, FusionConfig

MARCH_GROUPS = 4
"""Groups of samples a ray is marched through, front to back."""
TERMINATION_TRANSMITTANCE = 1e-3
"""A ray stops once less than this share of light can pass the samples so far."""


@dataclass(frozen=True)
class RayBatch:
    """Rays of F frames with what each needs to be rendered: its frame's audio condition, blink and latent code
    (held once per frame: a sample's gradient then flows back to F rows, not to one row per ray), and its background.
    """

    origins: torch.Tensor
    """(R, 3) world positions of the camera."""
    directions: torch.Tensor
    """(R, 3) unit directions."""
    frame: torch.Tensor
    """(R,) int64 row of each ray's frame in `audio`, `blink` and `latent`."""
    audio: torch.Tensor
    """(F, A) each frame's audio condition f_a (after smoothing)."""
    blink: torch.Tensor
    """(F,) each frame's eyelid closure."""
    latent: torch.Tensor
    """(F, latent_dim) each frame's latent code."""
    background: torch.Tensor
    """(R, 3) colour behind the head in [0, 1] (torso over the background plate)."""

    def __len__(self) -> int:
        return len(self.origins)

    def chunk(self, start: int, stop: int) -> RayBatch:
        """Rays start..stop-1 (with every frame's conditions)."""
        return replace(self, origins=self.origins[start:stop], directions=self.directions[start:stop],
                       frame=self.frame[start:stop], background=self.background[start:stop])


class TalkingHead(nn.Module):
    """f_a = smooth(CSFM(f_c window, f_d window)); colour of a ray = volume rendering of F(x, d, f_a, e, l)."""

    def __init__(
        self, content_dim: int, dynamic_dim: int, fusion: FusionConfig, field: FieldConfig, latent_count: int
    ) -> None:
        super().__init__()
        self.fusion_config = fusion
        self.window = fusion.window
        self.fusion = CSFM(content_dim, dynamic_dim, fusion)
        self.smoother = TemporalSmoother(fusion.dim, fusion.window)
        self.field = AudioConditionedField(field, fusion.dim, latent_count)
        self.box = (field.box_min, field.box_max)
        self.samples_per_ray = field.samples_per_ray
        self.jitter = field.jitter

    def audio_condition(self, audio: FrameAudio, frames: torch.Tensor) -> torch.Tensor:
        """(B,) frame indices into `audio` -> (B, A) audio conditions f_a, each from the window around its frame."""
        content, dynamic = audio.windows(frames, self.window)
        return self.smoother(self.fusion(content, dynamic))

    def _query(self, rays: RayBatch, points: torch.Tensor, queried: torch.Tensor, sigma: torch.Tensor,
               colours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Densities and colours of the (R, S) samples where `queried` is True written into copies of `sigma`
        (R, S) and `colours` (R, S, 3)."""
        ray = torch.arange(len(rays), device=points.device)[:, None].expand(queried.shape)[queried]
        frame = rays.frame[ray]
        new_sigma, new_colours = self.field(points[queried], rays.directions[ray], rays.audio.index_select(0, frame),
                                            rays.blink.index_select(0, frame), rays.latent.index_select(0, frame))
        sigma = sigma.masked_scatter(queried, new_sigma)
        colours = colours.masked_scatter(queried[..., None].expand(*queried.shape, 3), new_colours)
        return sigma, colours

    def render_rays(self, rays: RayBatch, generator: torch.Generator | None = None,
                    occupancy: OccupancyGrid | None = None, terminate: bool = True) -> RenderedRays:
        """Colours of the rays (differentiable). Samples are jittered within their bins with `generator` when the
        field trains with jitter, else at the bin midpoints.

        The field is queried only at samples inside the box, and inside the occupied cells of `occupancy` when one
        is given. With `terminate` (training and viewing) rays are marched front to back in MARCH_GROUPS groups of
        samples and no further once their transmittance is below TERMINATION_TRANSMITTANCE: the samples skipped
        could add at most that share of light, so colours and gradients change by as little. Without it every
        sample is queried at once (the reference the fast path is tested against)."""
        near, far, hit = intersect_box(rays.origins, rays.directions, *self.box)
        depths = stratified_depths(near, far, self.samples_per_ray, generator if self.jitter else None)
        points = sample_points(rays.origins, rays.directions, depths)
        deltas = sample_deltas(depths, far)
        queried = hit[:, None].expand(depths.shape)
        if occupancy is not None:
            queried = queried & occupancy.contains(points)
        sigma, colours = torch.zeros_like(depths), torch.zeros_like(points)
        optical_depth = torch.zeros_like(near)
        for group in torch.arange(depths.shape[1], device=depths.device).chunk(MARCH_GROUPS if terminate else 1):
            alive = optical_depth < -math.log(TERMINATION_TRANSMITTANCE)
            mask = torch.zeros_like(queried)
            mask[:, group] = queried[:, group] & alive[:, None]
            sigma, colours = self._query(rays, points, mask, sigma, colours)
            optical_depth = optical_depth + (sigma[:, group] * deltas[:, group]).detach().sum(dim=1)
        weights, _ = volume_weights(sigma, deltas)
        return composite(weights, colours, depths, rays.background)


def audio_occupancy(head: TalkingHead, audio: FrameAudio) -> OccupancyGrid:
    """The occupancy grid of the head for audio like `audio` (from CONDITIONS evenly spaced frames of it)."""
    frames = torch.linspace(0, len(audio) - 1, min(CONDITIONS, len(audio)), device=audio.content.device)
    with torch.no_grad():
        conditions = head.audio_condition(audio, frames.round().long().unique())
    return occupancy_grid(head.field, conditions)


@dataclass(frozen=True)
class FrameCondition:
    """Everything one output frame depends on."""

    camera_to_world: torch.Tensor
    """(4, 4) camera pose."""
    audio: torch.Tensor
    """(A,) audio condition f_a."""
    blink: float
    """Eyelid closure."""
    latent: torch.Tensor
    """(latent_dim,) latent code."""
    background: torch.Tensor
    """(H, W, 3) uint8 background (torso over plate)."""


def frame_rays(camera: Camera, frame: FrameCondition, pixels: torch.Tensor, background: torch.Tensor) -> RayBatch:
    """The rays of `pixels` (N, 2) = (col, row) of one frame, with (N, 3) float backgrounds in [0, 1]."""
    origins, directions = camera_rays(frame.camera_to_world, pixels, camera.focal, camera.cx, camera.cy)
    return RayBatch(
        origins=origins.float(), directions=directions.float(),
        frame=torch.zeros(len(pixels), dtype=torch.int64, device=origins.device), audio=frame.audio[None],
        blink=torch.full((1,), float(frame.blink), device=origins.device), latent=frame.latent[None],
        background=background,
    )


def head_rect(head: TalkingHead, camera: Camera, camera_to_world: torch.Tensor) -> tuple[int, int, int, int]:
    """The pixels of a frame whose rays can hit the head's box."""
    return box_pixel_rect(camera_to_world, camera.focal, camera.cx, camera.cy, *head.box, camera.width,
                          camera.height)


@torch.no_grad()
def render_frame(
    head: TalkingHead, camera: Camera, frame: FrameCondition, rays_per_chunk: int, occupancy: OccupancyGrid
) -> torch.Tensor:
    """A whole (H, W, 3) uint8 frame: the head's box rendered (bin-midpoint samples, skipping the empty cells of
    `occupancy`), the background elsewhere."""
    rect = head_rect(head, camera, frame.camera_to_world)
    pixels = pixel_grid(rect, device=frame.background.device)
    image = frame.background.clone()
    if len(pixels) == 0:
        return image
    background = frame.background[pixels[:, 1], pixels[:, 0]].float() / 255.0
    rays = frame_rays(camera, frame, pixels, background)
    colours = torch.cat([
        head.render_rays(rays.chunk(start, start + rays_per_chunk), occupancy=occupancy).rgb
        for start in range(0, len(rays), rays_per_chunk)
    ])
    image[pixels[:, 1], pixels[:, 0]] = (colours.clamp(0, 1) * 255.0).round().to(torch.uint8)
    return image
