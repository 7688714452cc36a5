"""Tests of damc_core.fusion: window indices, CSFM and its ablation modes, CDCA against a reference, the smoother."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from damc_core.fusion import CDCA, CSFM, MODES, TemporalSmoother, window_indices
from damc_core.params import FusionConfig

CONTENT_DIM, DYNAMIC_DIM, WINDOW, BATCH = 12, 20, 7, 3
CONFIG = FusionConfig(mode="csfm", dim=16, window=WINDOW, heads=2)


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def make(mode: str) -> CSFM:
    return CSFM(CONTENT_DIM, DYNAMIC_DIM, dataclasses.replace(CONFIG, mode=mode)).eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(BATCH, WINDOW, CONTENT_DIM), torch.randn(BATCH, WINDOW, DYNAMIC_DIM)


def test_window_indices_are_centred_and_clamped_at_both_ends():
    got = window_indices(torch.tensor([0, 5, 9]), total=10, window=5)
    assert got.dtype == torch.int64
    assert got.tolist() == [[0, 0, 0, 1, 2], [3, 4, 5, 6, 7], [7, 8, 9, 9, 9]]
    assert window_indices(torch.tensor([0]), total=1, window=3).tolist() == [[0, 0, 0]]
    assert window_indices(torch.tensor([4]), total=8, window=1).tolist() == [[4]]


@pytest.mark.parametrize(("total", "window"), [(10, 4), (10, 0), (10, -1), (0, 3)])
def test_window_indices_reject_bad_arguments(total, window):
    with pytest.raises(ValueError, match="total" if total < 1 else "window"):
        window_indices(torch.tensor([0]), total=total, window=window)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_maps_each_window_token_to_dim(mode):
    model = make(mode)
    assert model.output_dim == CONFIG.dim
    assert model(*inputs()).shape == (BATCH, WINDOW, CONFIG.dim)


def test_shape_errors_name_expected_and_got_shapes():
    model = make("csfm")
    content, dynamic = inputs()
    with pytest.raises(ValueError, match=r"content must have shape \(B, 7, 12\), got \(3, 6, 12\)"):
        model(content[:, :-1], dynamic)
    with pytest.raises(ValueError, match=r"dynamic must have shape \(3, 7, 20\), got \(2, 7, 20\)"):
        model(content, dynamic[:2])


@pytest.mark.parametrize(
    ("field", "change"),
    [("heads", {"heads": 3}), ("window", {"window": 8}), ("mode", {"mode": "nope"}), ("dim", {"dim": 0})],
)
def test_invalid_config_names_the_field(field, change):
    with pytest.raises(ValueError, match=f"fusion.{field}"):
        CSFM(CONTENT_DIM, DYNAMIC_DIM, dataclasses.replace(CONFIG, **change))


@pytest.mark.parametrize(
    ("mode", "content_matters", "dynamic_matters"),
    [("csfm", True, True), ("cross_attention", True, True), ("concat", True, True), ("content", True, False),
     ("dynamic", False, True)],
)
def test_modes_depend_on_their_inputs_only(mode, content_matters, dynamic_matters):
    model = make(mode)
    content, dynamic = inputs()
    base = model(content, dynamic)
    assert (not torch.allclose(model(torch.randn_like(content), dynamic), base)) == content_matters
    assert (not torch.allclose(model(content, torch.randn_like(dynamic)), base)) == dynamic_matters


@pytest.mark.parametrize(("mode", "mixes"), [("concat", False), ("csfm", True), ("cross_attention", True)])
def test_attention_modes_mix_tokens_across_the_window(mode, mixes):
    model = make(mode)
    content, dynamic = inputs()
    base = model(content, dynamic)
    content[:, 0] += 1.0
    changed = model(content, dynamic)
    assert not torch.allclose(changed[:, 0], base[:, 0])
    assert (not torch.allclose(changed[:, 1:], base[:, 1:])) == mixes
    assert (not torch.allclose(changed[:, -1], base[:, -1])) == mixes


@pytest.mark.parametrize("mode", ["csfm", "cross_attention"])
def test_attention_knows_where_each_token_sits_in_the_window(mode):
    """Attention alone is permutation-equivariant: reversing the window would reverse the output, so the head could
    not tell the rendered frame's token from its neighbours. The position embedding (learnt; set at random here)
    breaks that symmetry; zeroing it restores it."""
    model = make(mode)
    with torch.no_grad():
        model.position.normal_()
    content, dynamic = inputs()
    reversed_window = model(content.flip(1), dynamic.flip(1))
    assert not torch.allclose(reversed_window, model(content, dynamic).flip(1), atol=1e-4)
    with torch.no_grad():
        model.position.zero_()
    torch.testing.assert_close(model(content.flip(1), dynamic.flip(1)), model(content, dynamic).flip(1))


def test_only_the_modules_a_mode_uses_are_built():
    names = {mode: {name for name, _ in make(mode).named_parameters()} for mode in MODES}
    assert not any(name.startswith("proj.dynamic") for name in names["content"])
    assert not any(name.startswith("proj.content") for name in names["dynamic"])
    assert any(name.startswith("refine.") for name in names["csfm"])
    assert not any(name.startswith("refine.") for name in names["cross_attention"])
    assert any(name.startswith("cross.") for name in names["cross_attention"])
    assert not any(name.startswith(("cross.", "refine.")) for name in names["concat"])
    assert not any("dynamic" in key for key in make("content").state_dict())


def reference_attention(module: CDCA, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-head attention written out: query and key from x, value from y."""
    batch, length, dim = x.shape
    head_dim = dim // module.heads

    def heads(linear: torch.nn.Linear, tokens: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bwi,oi->bwo", tokens, linear.weight).add(linear.bias).view(batch, length, module.heads, -1)

    query, key, value = heads(module.query, x), heads(module.key, x), heads(module.value, y)
    out = torch.zeros(batch, length, module.heads, head_dim)
    for h in range(module.heads):
        scores = torch.einsum("bid,bjd->bij", query[:, :, h], key[:, :, h]) / math.sqrt(head_dim)
        out[:, :, h] = torch.einsum("bij,bjd->bid", torch.softmax(scores, dim=-1), value[:, :, h])
    return out.reshape(batch, length, dim) @ module.out.weight.T + module.out.bias


def test_cdca_matches_a_reference_with_value_from_the_other_modality():
    model = make("csfm")
    c1, d1 = torch.randn(BATCH, WINDOW, CONFIG.dim), torch.randn(BATCH, WINDOW, CONFIG.dim)
    with torch.no_grad():
        for name, (x, y) in {"content": (c1, d1), "dynamic": (d1, c1)}.items():
            cdca = model.cross[name]
            torch.testing.assert_close(cdca(x, y), reference_attention(cdca, x, y), atol=1e-5, rtol=1e-5)
            # A value that is the same at every token comes through whatever the attention weights are.
            constant = y[:, :1].expand_as(y)
            torch.testing.assert_close(cdca(x, constant), cdca.out(cdca.value(constant)), atol=1e-5, rtol=1e-5)


def test_cdca_rejects_heads_that_do_not_divide_dim():
    with pytest.raises(ValueError, match="heads"):
        CDCA(16, 3)


def test_gradients_reach_both_branches_in_csfm_mode():
    model = make("csfm").train()
    content, dynamic = (t.requires_grad_() for t in inputs())
    model(content, dynamic).square().mean().backward()
    for tensor in (content, dynamic, *model.proj.parameters()):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_csfm_is_deterministic_given_the_seed():
    content, dynamic = inputs()
    outputs = []
    for _ in range(2):
        torch.manual_seed(1)
        outputs.append(make("csfm")(content, dynamic))
    assert torch.equal(*outputs)


def test_smoother_weights_are_a_convex_combination():
    smoother = TemporalSmoother(CONFIG.dim, WINDOW)
    features = torch.randn(BATCH, WINDOW, CONFIG.dim)
    weights = smoother.weights(features)
    assert weights.shape == (BATCH, WINDOW)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(BATCH))
    assert smoother(features).shape == (BATCH, CONFIG.dim)


def test_smoother_of_equal_tokens_is_that_token():
    smoother = TemporalSmoother(CONFIG.dim, WINDOW)
    token = torch.randn(BATCH, 1, CONFIG.dim)
    torch.testing.assert_close(smoother(token.expand(BATCH, WINDOW, CONFIG.dim)), token[:, 0])


def test_smoother_checks_its_window():
    with pytest.raises(ValueError, match=r"features must have shape \(B, 7, 16\)"):
        TemporalSmoother(CONFIG.dim, WINDOW)(torch.randn(BATCH, WINDOW + 2, CONFIG.dim))
    with pytest.raises(ValueError, match="window"):
        TemporalSmoother(CONFIG.dim, 6)
