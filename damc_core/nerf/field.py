"""The audio-conditioned radiance field of the head (paper 2.4, ER-NeRF's field): tri-plane hash features, region
attention over the audio condition, eye-blink conditioning, density and colour MLPs, per-frame latent codes."""

from __future__ import annotations

import torch
from torch import nn

from damc_core.nerf.encodings import SphericalHarmonicsEncoding, TriPlaneEncoding
from damc_core.params import FieldConfig

ATTENTION_HIDDEN = 32
"""Width of the small MLPs that compute the region attention and the eye attention from the position features."""
MAX_LOG_DENSITY = 15.0
"""The density MLP's raw output is clamped to this before the exponential (ER-NeRF's truncated exp)."""
INITIAL_LOG_DENSITY = 2.0
"""Initial bias of the density MLP's raw output: the box starts opaque (density e^2 per decimetre), so every ray
sees the field at once and training carves empty space away (on the sample, 600 steps: 28.5 dB, against 27.6 dB
from a nearly transparent start at e^-4 and 25.5 dB at e^0)."""
SH_DEGREE = 4
"""Spherical-harmonics degree of the view-direction encoding (16 coefficients)."""


def mlp(in_dim: int, out_dim: int, hidden_dim: int, layers: int) -> nn.Sequential:
    """`layers` linear layers with ReLU between them (none after the last)."""
    if layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got {layers}")
    widths = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
    modules: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        modules.append(nn.Linear(width_in, width_out))
        if index < layers - 1:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


class AudioConditionedField(nn.Module):
    """F(x, d, a, e, l) -> (sigma, colour): x a point, d the view direction, a the audio condition f_a, e the blink,
    l the frame's latent code.

    Region attention (ER-NeRF): each point weighs the channels of `a` by sigmoid(MLP(tri-plane features)), so the
    mouth can listen to the audio while the rest of the head learns to ignore it; the blink is weighed the same way.
    """

    def __init__(self, config: FieldConfig, audio_dim: int, latent_count: int) -> None:
        super().__init__()
        self.config = config
        self.position_encoding = TriPlaneEncoding(config.hash_grid, config.box_min, config.box_max)
        self.direction_encoding = SphericalHarmonicsEncoding(SH_DEGREE)
        position_dim = self.position_encoding.output_dim
        self.audio_attention = mlp(position_dim, audio_dim, ATTENTION_HIDDEN, 2)
        self.eye_attention = mlp(position_dim, 1, ATTENTION_HIDDEN, 2)
        self.density_net = mlp(position_dim + audio_dim + 1, 1 + config.geometry_dim, config.hidden_dim,
                               config.density_layers)
        with torch.no_grad():
            self.density_net[-1].bias[0] = INITIAL_LOG_DENSITY
        colour_in = config.geometry_dim + self.direction_encoding.output_dim + config.latent_dim
        self.colour_net = mlp(colour_in, 3, config.colour_hidden_dim, config.colour_layers)
        self.latents = nn.Parameter(0.1 * torch.randn(latent_count, config.latent_dim))

    def mean_latent(self) -> torch.Tensor:
        """The latent code for frames that were not trained on (validation, novel audio): the mean code."""
        return self.latents.mean(dim=0)

    def _hidden(self, points: torch.Tensor, audio: torch.Tensor, blink: torch.Tensor) -> torch.Tensor:
        position = self.position_encoding(points)
        attended_audio = audio * torch.sigmoid(self.audio_attention(position))
        attended_blink = blink[:, None] * torch.sigmoid(self.eye_attention(position))
        return self.density_net(torch.cat([position, attended_audio, attended_blink], dim=-1))

    @staticmethod
    def _density(hidden: torch.Tensor) -> torch.Tensor:
        return torch.exp(hidden[:, 0].clamp(max=MAX_LOG_DENSITY))

    def density(self, points: torch.Tensor, audio: torch.Tensor, blink: torch.Tensor) -> torch.Tensor:
        """(M, 3) points with their (M, A) audio and (M,) blink -> (M,) densities (per decimetre)."""
        return self._density(self._hidden(points, audio, blink))

    def forward(
        self,
        points: torch.Tensor,
        directions: torch.Tensor,
        audio: torch.Tensor,
        blink: torch.Tensor,
        latent: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """M points with their own conditions: (M, 3) points, (M, 3) unit view directions, (M, A) audio, (M,) blink,
        (M, latent_dim) latent codes -> (M,) densities and (M, 3) colours in [0, 1]."""
        hidden = self._hidden(points, audio, blink)
        view = self.direction_encoding(directions)
        colour = torch.sigmoid(self.colour_net(torch.cat([hidden[:, 1:], view, latent], dim=-1)))
        return self._density(hidden), colour
