"""FID InceptionV3 in plain PyTorch: pytorch-fid's state-dict layout, its FID pooling patches, input handling, strict
loading from a file, and FID end to end on random weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from damc_core.metrics.fid import FID_WEIGHTS_FILE, fid_features, fid_from_features, load_fid_inception
from damc_core.metrics.inception import (
    FEATURE_DIMS,
    INPUT_SIZE,
    BasicConv2d,
    FidInceptionV3,
    FidWeightsMismatch,
    fid_inception_from_state_dict,
)


def conv_table(name: str, out_channels: int, in_channels: int, kernel: tuple[int, int]) -> dict[str, tuple]:
    """State-dict shapes of one BasicConv2d of torchvision's / pytorch-fid's Inception (conv without bias + BN)."""
    bn = {f"{name}.bn.{field}": (out_channels,) for field in ("weight", "bias", "running_mean", "running_var")}
    return {f"{name}.conv.weight": (out_channels, in_channels, *kernel), **bn, f"{name}.bn.num_batches_tracked": ()}


def inception_a_table(name: str, in_channels: int, pool_features: int) -> dict[str, tuple]:
    return {**conv_table(f"{name}.branch1x1", 64, in_channels, (1, 1)),
            **conv_table(f"{name}.branch5x5_1", 48, in_channels, (1, 1)),
            **conv_table(f"{name}.branch5x5_2", 64, 48, (5, 5)),
            **conv_table(f"{name}.branch3x3dbl_1", 64, in_channels, (1, 1)),
            **conv_table(f"{name}.branch3x3dbl_2", 96, 64, (3, 3)),
            **conv_table(f"{name}.branch3x3dbl_3", 96, 96, (3, 3)),
            **conv_table(f"{name}.branch_pool", pool_features, in_channels, (1, 1))}


def inception_c_table(name: str, c7: int) -> dict[str, tuple]:
    return {**conv_table(f"{name}.branch1x1", 192, 768, (1, 1)),
            **conv_table(f"{name}.branch7x7_1", c7, 768, (1, 1)),
            **conv_table(f"{name}.branch7x7_2", c7, c7, (1, 7)),
            **conv_table(f"{name}.branch7x7_3", 192, c7, (7, 1)),
            **conv_table(f"{name}.branch7x7dbl_1", c7, 768, (1, 1)),
            **conv_table(f"{name}.branch7x7dbl_2", c7, c7, (7, 1)),
            **conv_table(f"{name}.branch7x7dbl_3", c7, c7, (1, 7)),
            **conv_table(f"{name}.branch7x7dbl_4", c7, c7, (7, 1)),
            **conv_table(f"{name}.branch7x7dbl_5", 192, c7, (1, 7)),
            **conv_table(f"{name}.branch_pool", 192, 768, (1, 1))}


def inception_e_table(name: str, in_channels: int) -> dict[str, tuple]:
    return {**conv_table(f"{name}.branch1x1", 320, in_channels, (1, 1)),
            **conv_table(f"{name}.branch3x3_1", 384, in_channels, (1, 1)),
            **conv_table(f"{name}.branch3x3_2a", 384, 384, (1, 3)),
            **conv_table(f"{name}.branch3x3_2b", 384, 384, (3, 1)),
            **conv_table(f"{name}.branch3x3dbl_1", 448, in_channels, (1, 1)),
            **conv_table(f"{name}.branch3x3dbl_2", 384, 448, (3, 3)),
            **conv_table(f"{name}.branch3x3dbl_3a", 384, 384, (1, 3)),
            **conv_table(f"{name}.branch3x3dbl_3b", 384, 384, (3, 1)),
            **conv_table(f"{name}.branch_pool", 192, in_channels, (1, 1))}


PYTORCH_FID_STATE_SHAPES = {
    **conv_table("Conv2d_1a_3x3", 32, 3, (3, 3)),
    **conv_table("Conv2d_2a_3x3", 32, 32, (3, 3)),
    **conv_table("Conv2d_2b_3x3", 64, 32, (3, 3)),
    **conv_table("Conv2d_3b_1x1", 80, 64, (1, 1)),
    **conv_table("Conv2d_4a_3x3", 192, 80, (3, 3)),
    **inception_a_table("Mixed_5b", 192, 32),
    **inception_a_table("Mixed_5c", 256, 64),
    **inception_a_table("Mixed_5d", 288, 64),
    **conv_table("Mixed_6a.branch3x3", 384, 288, (3, 3)),
    **conv_table("Mixed_6a.branch3x3dbl_1", 64, 288, (1, 1)),
    **conv_table("Mixed_6a.branch3x3dbl_2", 96, 64, (3, 3)),
    **conv_table("Mixed_6a.branch3x3dbl_3", 96, 96, (3, 3)),
    **inception_c_table("Mixed_6b", 128),
    **inception_c_table("Mixed_6c", 160),
    **inception_c_table("Mixed_6d", 160),
    **inception_c_table("Mixed_6e", 192),
    **conv_table("Mixed_7a.branch3x3_1", 192, 768, (1, 1)),
    **conv_table("Mixed_7a.branch3x3_2", 320, 192, (3, 3)),
    **conv_table("Mixed_7a.branch7x7x3_1", 192, 768, (1, 1)),
    **conv_table("Mixed_7a.branch7x7x3_2", 192, 192, (1, 7)),
    **conv_table("Mixed_7a.branch7x7x3_3", 192, 192, (7, 1)),
    **conv_table("Mixed_7a.branch7x7x3_4", 192, 192, (3, 3)),
    **inception_e_table("Mixed_7b", 1280),
    **inception_e_table("Mixed_7c", 2048),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
"""pytorch-fid's fid_inception_v3() state dict (torchvision Inception3, aux_logits=False, 1008 classes, FID blocks),
written out from the published architecture: the layout of pt_inception-2015-12-05-6726825d.pth."""

PYTORCH_FID_PARAMETERS = 27_161_264 - 3_326_696 + 8 * (2048 + 1)
"""Learnable parameters: torchvision's inception_v3 (27,161,264) less its AuxLogits head (3,326,696), with 1008
rather than 1000 classes."""


def random_fid_inception(seed: int) -> FidInceptionV3:
    """A FidInceptionV3 in eval mode with random weights that keep activations O(1) through the network: He-normal
    convolutions (PyTorch's default init shrinks the pool3 features to ~1e-8) and random batch-norm statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FidInceptionV3()
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.uniform_(module.weight, 0.5, 1.5)
                nn.init.uniform_(module.bias, -0.1, 0.1)
                nn.init.uniform_(module.running_mean, -0.1, 0.1)
                nn.init.uniform_(module.running_var, 0.5, 1.5)
                module.num_batches_tracked.fill_(seed + 1)
    return model.requires_grad_(False).eval()


@pytest.fixture(scope="module")
def model() -> FidInceptionV3:
    return random_fid_inception(seed=0)


@pytest.fixture(scope="module")
def weights_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / FID_WEIGHTS_FILE
    torch.save(model.state_dict(), path)
    return path


def test_state_dict_has_pytorch_fids_keys_and_shapes(model):
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert shapes == PYTORCH_FID_STATE_SHAPES
    assert sum(parameter.numel() for parameter in model.parameters()) == PYTORCH_FID_PARAMETERS
    convs = [module for module in model.modules() if isinstance(module, BasicConv2d)]
    assert len(convs) == 94
    assert all(conv.conv.bias is None and conv.bn.eps == 1e-3 for conv in convs)


POOL_BRANCHES = {"Mixed_5b": 32, "Mixed_5c": 64, "Mixed_5d": 64, "Mixed_6b": 192, "Mixed_6c": 192, "Mixed_6d": 192,
                 "Mixed_6e": 192, "Mixed_7b": 192, "Mixed_7c": 192}
"""The blocks with a stride-1 pool branch, and that branch's channels (the last ones of the block's output)."""


@pytest.mark.parametrize("name", POOL_BRANCHES)
def test_pool_branches_follow_the_fid_graph(model, name):
    """The pool branch, made to pass input channel 0 through unchanged, on ones with a 10 at (2, 2): TensorFlow's
    average pool ignores the padding (corner 1, not 4/9) and gives (8 + 10) / 9 = 2 around the spike; Mixed_7c
    max-pools instead (10)."""
    block = copy.deepcopy(getattr(model, name))
    pool = block.branch_pool
    in_channels = pool.conv.in_channels
    with torch.no_grad():
        pool.conv.weight.zero_()
        pool.conv.weight[0, 0] = 1.0
        pool.bn.weight.fill_(1.0)
        pool.bn.bias.zero_()
        pool.bn.running_mean.zero_()
        pool.bn.running_var.fill_(1.0 - pool.bn.eps)
        x = torch.ones(1, in_channels, 6, 6)
        x[0, 0, 2, 2] = 10.0
        out = block(x)[0, -POOL_BRANCHES[name]]
    assert out[0, 0].item() == pytest.approx(1.0), "in-frame cells only, as TensorFlow's average pool"
    assert out[2, 2].item() == pytest.approx(10.0 if name == "Mixed_7c" else 2.0)


def test_input_is_resized_bilinearly_with_half_pixel_centres_and_scaled_to_signed(model):
    seen = []
    hook = model.Conv2d_1a_3x3.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    try:
        ramp = torch.tensor([0.0, 1.0]).expand(1, 3, 2, 2)  # columns 0 and 1
        wide = torch.rand(1, 3, INPUT_SIZE, 2 * INPUT_SIZE, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            model(torch.cat([ramp.expand(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.25)]))
            model(wide)
    finally:
        hook.remove()
    upsampled, downsampled = seen
    assert upsampled.shape == (2, 3, INPUT_SIZE, INPUT_SIZE)
    # align_corners=False: output column j samples source x = (j + 0.5) * 2 / 299 - 0.5, clamped to [0, 1]
    source_x = np.clip((np.arange(INPUT_SIZE) + 0.5) * 2 / INPUT_SIZE - 0.5, 0.0, 1.0)
    np.testing.assert_allclose(upsampled[0, 1, 7].numpy(), 2 * source_x - 1, atol=1e-6)
    torch.testing.assert_close(upsampled[1], torch.full((3, INPUT_SIZE, INPUT_SIZE), -0.5))
    # halving the width without antialiasing averages column pairs
    pairs = (wide[..., 0::2] + wide[..., 1::2]) / 2
    torch.testing.assert_close(downsampled, 2 * pairs - 1, atol=1e-6, rtol=0)


def test_a_random_state_dict_reloads_strictly_from_a_file(model, weights_file):
    loaded = load_fid_inception(weights_file, check_hash=False)
    assert not loaded.training and not any(parameter.requires_grad for parameter in loaded.parameters())
    reference = model.state_dict()
    state = loaded.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[key], reference[key]) for key in reference)
    with pytest.raises(ValueError, match="SHA-256"):  # a random file is not the published one
        load_fid_inception(weights_file)


def test_state_dicts_without_batch_norm_counters_load(model, tmp_path):
    """State dicts saved before PyTorch had num_batches_tracked (unused in eval mode) lack it."""
    path = tmp_path / FID_WEIGHTS_FILE
    state = {key: value for key, value in model.state_dict().items() if not key.endswith("num_batches_tracked")}
    torch.save(state, path)
    loaded = load_fid_inception(path, check_hash=False)
    assert torch.equal(loaded.Mixed_7c.branch_pool.bn.running_var, model.Mixed_7c.branch_pool.bn.running_var)


@pytest.mark.parametrize("change, named", [
    ("drop", "missing keys (1): Mixed_6e.branch7x7dbl_5.conv.weight"),
    ("extra", "unexpected keys (1): AuxLogits.fc.weight"),
    ("reshape", "wrong shapes (1): fc.weight (1000, 2048) (expected (1008, 2048))"),
])
def test_a_state_dict_that_does_not_fit_names_the_file_and_the_keys(model, change, named):
    state = dict(model.state_dict())
    if change == "drop":
        del state["Mixed_6e.branch7x7dbl_5.conv.weight"]
    elif change == "extra":
        state["AuxLogits.fc.weight"] = torch.zeros(1008, 768)
    else:
        state["fc.weight"] = torch.zeros(1000, 2048)
    with pytest.raises(FidWeightsMismatch) as info:
        fid_inception_from_state_dict(state, source="weights/other.pth")
    assert "weights/other.pth does not hold pytorch-fid's FID Inception weights" in str(info.value)
    assert named in str(info.value)


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # covariances of fewer samples than dimensions
def test_fid_end_to_end_on_random_weights(model):
    """FID of random-weight Inception features of tiny frames: finite, ~0 for a set against itself, larger for
    different sets. The Fréchet distance is invariant under translating and orthogonally rotating feature space, and
    all of both sets' variance and their mean difference lie in the span of the centred features, so it is computed
    in that (3-d) span: a 2048x2048 sqrtm takes 10-30 s on 2 cores. The invariance is checked in 20-d first."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 20)), rng.normal(size=(4, 20))
    # equal up to the sqrtm of the singular covariance products, which is accurate to ~1e-6 here
    assert fid_from_features(*in_feature_span(a, b)) == pytest.approx(fid_from_features(a, b), abs=1e-5)

    noise = rng.integers(0, 256, size=(4, 24, 32, 3), dtype=np.uint8)
    flat = np.stack([np.full((24, 32, 3), 128, np.uint8), np.full((24, 32, 3), 30, np.uint8)])
    first, second, grey = fid_features(noise[:2], model), fid_features(noise[2:], model), fid_features(flat, model)
    assert first.shape == (2, FEATURE_DIMS) and np.isfinite(np.concatenate([first, second, grey])).all()
    assert first.std() > 0.1, "the random weights keep the features from vanishing"
    same = fid_from_features(*in_feature_span(first, first))
    noise_vs_noise = fid_from_features(*in_feature_span(first, second))
    noise_vs_grey = fid_from_features(*in_feature_span(first, grey))
    assert same == pytest.approx(0.0, abs=1e-6 * noise_vs_noise)
    assert 0.0 < noise_vs_noise < noise_vs_grey


def in_feature_span(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both (N, D) feature sets in an orthonormal basis of the span of all rows less the first row."""
    origin = first[0]
    basis, _ = np.linalg.qr((np.concatenate([first, second]) - origin).T)
    return (first - origin) @ basis, (second - origin) @ basis
