"""NeRF volume rendering: analytic opacity, weight and transmittance invariants, a loop reference, sampling, grads."""

from __future__ import annotations

import math

import torch

from damc_core.nerf.rendering import (
    RenderedRays,
    composite,
    sample_deltas,
    sample_points,
    stratified_depths,
    volume_weights,
)


def random_rays(count: int, samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Near (N,), far (N,) and random non-negative densities (N, S) with some empty and some very dense samples."""
    generator = torch.Generator().manual_seed(seed)
    near = torch.rand(count, generator=generator, dtype=torch.float64)
    far = near + 0.1 + 2.0 * torch.rand(count, generator=generator, dtype=torch.float64)
    sigma = torch.rand(count, samples, generator=generator, dtype=torch.float64) * 20.0
    sigma = sigma * (torch.rand(count, samples, generator=generator, dtype=torch.float64) > 0.3)
    sigma[0, 3] = 1e4
    return near, far, sigma


def loop_weights(sigma: torch.Tensor, deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The textbook product form, one ray and one sample at a time."""
    weights, transmittances = torch.zeros_like(sigma), torch.zeros_like(sigma)
    for ray in range(sigma.shape[0]):
        transmittance = 1.0
        for sample in range(sigma.shape[1]):
            alpha = 1.0 - math.exp(-float(sigma[ray, sample]) * float(deltas[ray, sample]))
            transmittances[ray, sample] = transmittance
            weights[ray, sample] = transmittance * alpha
            transmittance *= 1.0 - alpha
    return weights, transmittances


def test_constant_density_gives_the_analytic_opacity():
    sigma_value, samples = 1.7, 512
    near = torch.tensor([0.5, 2.0], dtype=torch.float64)
    far = torch.tensor([1.5, 4.5], dtype=torch.float64)
    depths = stratified_depths(near, far, samples, None)
    deltas = sample_deltas(depths, far)
    weights, _ = volume_weights(torch.full_like(depths, sigma_value), deltas)
    opacity = weights.sum(dim=-1)
    # The quadrature covers [first sample, far] exactly, as density is constant over each step...
    torch.testing.assert_close(opacity, 1.0 - torch.exp(-sigma_value * (far - depths[:, 0])))
    # ...which with midpoints is the segment but its first half bin.
    torch.testing.assert_close(opacity, 1.0 - torch.exp(-sigma_value * (far - near)), atol=1e-3, rtol=0)


def test_weights_sum_to_at_most_one_and_transmittance_falls_from_one():
    near, far, sigma = random_rays(64, 48)
    depths = stratified_depths(near, far, 48, torch.Generator().manual_seed(3))
    weights, transmittance = volume_weights(sigma, sample_deltas(depths, far))
    assert (weights >= 0).all()
    assert (weights.sum(dim=-1) <= 1.0 + 1e-12).all()
    assert (transmittance[:, 0] == 1).all()
    assert (transmittance[:, 1:] <= transmittance[:, :-1]).all()
    assert weights[0, 4:].abs().max() < 1e-12  # nothing is seen behind an opaque sample


def test_volume_weights_match_the_product_form_loop():
    near, far, sigma = random_rays(8, 16, seed=1)
    deltas = sample_deltas(stratified_depths(near, far, 16, torch.Generator().manual_seed(4)), far)
    weights, transmittance = volume_weights(sigma, deltas)
    expected_weights, expected_transmittance = loop_weights(sigma, deltas)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(transmittance, expected_transmittance, rtol=1e-10, atol=1e-12)


def test_zero_density_shows_the_background_and_an_opaque_first_sample_its_colour():
    near, far = torch.zeros(3), torch.ones(3)
    depths = stratified_depths(near, far, 8, None)
    deltas = sample_deltas(depths, far)
    colours = torch.rand(3, 8, 3, generator=torch.Generator().manual_seed(5))
    background = torch.tensor([[0.2, 0.4, 0.6], [1.0, 1.0, 1.0], [0.0, 0.5, 0.0]])
    empty = composite(*volume_weights(torch.zeros(3, 8), deltas)[:1], colours, depths, background)
    assert isinstance(empty, RenderedRays)
    torch.testing.assert_close(empty.rgb, background)
    torch.testing.assert_close(empty.opacity, torch.zeros(3))
    torch.testing.assert_close(empty.depth, torch.zeros(3))
    sigma = torch.zeros(3, 8)
    sigma[:, 0] = 1e6
    opaque = composite(volume_weights(sigma, deltas)[0], colours, depths, background)
    torch.testing.assert_close(opaque.rgb, colours[:, 0])
    torch.testing.assert_close(opaque.opacity, torch.ones(3))
    torch.testing.assert_close(opaque.depth, depths[:, 0])


def test_composite_blends_with_the_background_and_takes_a_shared_background():
    weights = torch.tensor([[0.25, 0.25, 0.0]])
    colours = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    depths = torch.tensor([[1.0, 2.0, 3.0]])
    rendered = composite(weights, colours, depths, torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(rendered.rgb, torch.tensor([[0.25, 0.25, 0.5]]))
    torch.testing.assert_close(rendered.opacity, torch.tensor([0.5]))
    torch.testing.assert_close(rendered.depth, torch.tensor([0.75]))


def test_stratified_depths_lie_sorted_in_their_bins_and_are_reproducible():
    near, far, _ = random_rays(32, 4)
    midpoints = stratified_depths(near, far, 10, None)
    torch.testing.assert_close(midpoints, stratified_depths(near, far, 10, None))
    torch.testing.assert_close(midpoints[:, 0], near + (far - near) / 20)
    first = stratified_depths(near, far, 10, torch.Generator().manual_seed(7))
    again = stratified_depths(near, far, 10, torch.Generator().manual_seed(7))
    other = stratified_depths(near, far, 10, torch.Generator().manual_seed(8))
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    for depths in (midpoints, first):
        assert depths.shape == (32, 10)
        assert (depths >= near[:, None]).all() and (depths <= far[:, None]).all()
        assert (depths[:, 1:] > depths[:, :-1]).all()
        bins = ((depths - near[:, None]) / (far - near)[:, None] * 10).floor()
        assert torch.equal(bins, torch.arange(10, dtype=bins.dtype).expand(32, 10))


def test_sample_points_and_deltas():
    origins = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    depths = torch.tensor([[1.0, 2.0, 4.0], [0.5, 1.0, 1.5]])
    points = sample_points(origins, directions, depths)
    assert points.shape == (2, 3, 3)
    torch.testing.assert_close(points[0, 2], torch.tensor([0.0, 0.0, -4.0]))
    torch.testing.assert_close(points[1, 0], torch.tensor([1.5, 2.0, 3.0]))
    deltas = sample_deltas(depths, torch.tensor([5.0, 1.5]))
    torch.testing.assert_close(deltas, torch.tensor([[1.0, 2.0, 1.0], [0.5, 0.5, 0.0]]))


def test_gradients_flow_to_densities_and_colours():
    near, far = torch.zeros(4), torch.full((4,), 2.0)
    depths = stratified_depths(near, far, 16, torch.Generator().manual_seed(9))
    sigma = torch.rand(4, 16, generator=torch.Generator().manual_seed(10)).requires_grad_()
    colours = torch.rand(4, 16, 3, generator=torch.Generator().manual_seed(11)).requires_grad_()
    weights, _ = volume_weights(sigma, sample_deltas(depths, far))
    rendered = composite(weights, colours, depths, torch.ones(4, 3))
    (rendered.rgb.sum() + rendered.depth.sum()).backward()
    assert sigma.grad is not None and torch.isfinite(sigma.grad).all() and sigma.grad.abs().sum() > 0
    assert colours.grad is not None and (colours.grad > 0).all()
