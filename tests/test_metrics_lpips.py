"""LPIPS (v0.1, AlexNet): weight loading and its errors, metric properties, gradients, and an independent reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from damc_core.metrics.lpips import (
    ALEXNET_FILE,
    ALEXNET_URL,
    HEADS_FILE,
    LAYER_CHANNELS,
    LPIPS,
    AlexNetFeatures,
    MissingWeightsError,
    load_lpips,
    lpips_stand_in,
)

HEADS_KEYS = [f"lin{layer}.model.1.weight" for layer in range(5)]


def images(seed: int, n: int = 2, h: int = 64, w: int = 80) -> torch.Tensor:
    """Random RGB batch in [-1, 1]; non-square so that H / W mix-ups show."""
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def torchvision_layout(seed: int) -> dict[str, torch.Tensor]:
    """A stand-in AlexNet state dict keyed like torchvision's, with (small, ignored) classifier entries too."""
    state = dict(lpips_stand_in(seed).backbone.state_dict())
    state.update({"classifier.1.weight": torch.zeros(8, 9), "classifier.1.bias": torch.zeros(8),
                  "classifier.4.weight": torch.zeros(8, 8), "classifier.4.bias": torch.zeros(8),
                  "classifier.6.weight": torch.zeros(4, 8), "classifier.6.bias": torch.zeros(4)})
    return state


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lpips") / ALEXNET_FILE
    torch.save(torchvision_layout(seed=1), path)
    return path


@pytest.fixture(scope="module")
def stand_in_heads_file(tmp_path_factory) -> Path:
    generator = torch.Generator().manual_seed(2)
    state = {key: torch.rand(1, channels, 1, 1, generator=generator)
             for key, channels in zip(HEADS_KEYS, LAYER_CHANNELS, strict=True)}
    path = tmp_path_factory.mktemp("lpips_heads") / HEADS_FILE
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def real_heads_file(shared_dir) -> Path:
    path = shared_dir / "weights" / "lpips_v0.1" / HEADS_FILE
    if not path.is_file():
        pytest.skip(f"{path} is absent: the real LPIPS v0.1 heads ship in ../shared, not in the repository")
    return path


@pytest.fixture(scope="module", params=["real heads", "stand-in heads"])
def heads_file(request) -> Path:
    if request.param == "real heads":
        return request.getfixturevalue("real_heads_file")
    return request.getfixturevalue("stand_in_heads_file")


@pytest.fixture(scope="module")
def model(backbone_file, heads_file) -> LPIPS:
    return load_lpips(backbone_file, heads_file)


def reference_lpips(backbone: dict[str, torch.Tensor], heads: dict[str, torch.Tensor], a: torch.Tensor,
                    b: torch.Tensor) -> torch.Tensor:
    """LPIPS v0.1 written out layer by layer from the raw state dicts, with functional ops only."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    convs = [(0, 4, 2), (3, 1, 2), (6, 1, 1), (8, 1, 1), (10, 1, 1)]  # (features index, stride, padding)

    def activations(x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - shift) / scale
        out = []
        for layer, (index, stride, padding) in enumerate(convs):
            if layer in (1, 2):  # max pools precede the second and third convolutions
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(F.conv2d(x, backbone[f"features.{index}.weight"], backbone[f"features.{index}.bias"],
                                stride=stride, padding=padding))
            out.append(x)
        return out

    total = torch.zeros(a.shape[0])
    for layer, (fa, fb) in enumerate(zip(activations(a), activations(b), strict=True)):
        na = fa / (fa.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        weights = heads[f"lin{layer}.model.1.weight"].view(1, -1, 1, 1)
        total += ((na - nb) ** 2 * weights).sum(dim=1).mean(dim=(1, 2))
    return total


def test_real_heads_load_non_negative_with_expected_shapes(real_heads_file, backbone_file):
    state = torch.load(real_heads_file, map_location="cpu", weights_only=True)
    assert sorted(state) == HEADS_KEYS
    for key, channels in zip(HEADS_KEYS, LAYER_CHANNELS, strict=True):
        assert state[key].shape == (1, channels, 1, 1)
        assert (state[key] >= 0).all()
    model = load_lpips(backbone_file, real_heads_file)
    for head, key in zip(model.heads, HEADS_KEYS, strict=True):
        assert torch.equal(head.weight, state[key])


def test_backbone_weights_load_from_torchvision_layout(model, backbone_file):
    state = torch.load(backbone_file, map_location="cpu", weights_only=True)
    loaded = model.backbone.state_dict()
    assert sorted(loaded) == sorted(key for key in state if key.startswith("features."))
    assert all(torch.equal(loaded[key], state[key]) for key in loaded)
    assert not model.training


def test_features_are_the_five_relu_outputs():
    outputs = AlexNetFeatures()(torch.zeros(1, 3, 64, 64))
    assert [tuple(x.shape) for x in outputs] == [(1, 64, 15, 15), (1, 192, 7, 7), (1, 384, 3, 3), (1, 256, 3, 3),
                                                  (1, 256, 3, 3)]


def test_identical_images_are_at_distance_zero(model):
    a = images(0)
    assert torch.equal(model(a, a), torch.zeros(2))


def test_symmetric_and_positive_for_different_images(model):
    a, b = images(0), images(1)
    d = model(a, b)
    assert d.shape == (2,)
    assert torch.equal(d, model(b, a))
    assert (d > 0).all()


def test_matches_independent_reference(model, backbone_file, heads_file):
    a, b = images(3), images(4)
    backbone = torch.load(backbone_file, map_location="cpu", weights_only=True)
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(model(a, b), reference_lpips(backbone, heads, a, b), rtol=0, atol=1e-6)


def test_gradient_flows_to_input_not_to_weights(model):
    a, b = images(5).requires_grad_(), images(6)
    model(a, b).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())


def test_rejects_mismatched_inputs(model):
    with pytest.raises(ValueError, match="same shape"):
        model(images(0), images(1, h=32))


def test_classifier_keys_are_ignored(tmp_path, stand_in_heads_file):
    features_only = {k: v for k, v in torchvision_layout(seed=1).items() if k.startswith("features.")}
    path = tmp_path / "features_only.pth"
    torch.save(features_only, path)
    with_classifier = tmp_path / "with_classifier.pth"
    torch.save(torchvision_layout(seed=1), with_classifier)
    a, b = images(0), images(1)
    with torch.no_grad():
        expected = load_lpips(path, stand_in_heads_file)(a, b)
        assert torch.equal(load_lpips(with_classifier, stand_in_heads_file)(a, b), expected)


def test_missing_feature_keys_name_the_file_and_keys(tmp_path, stand_in_heads_file):
    state = torchvision_layout(seed=1)
    del state["features.8.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as excinfo:
        load_lpips(path, stand_in_heads_file)
    assert str(path) in str(excinfo.value) and "features.8.weight" in str(excinfo.value)


def test_unexpected_backbone_keys_are_rejected(tmp_path, stand_in_heads_file):
    state = torchvision_layout(seed=1) | {"extra.weight": torch.zeros(1)}
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as excinfo:
        load_lpips(path, stand_in_heads_file)
    assert str(path) in str(excinfo.value) and "extra.weight" in str(excinfo.value)


def test_bad_heads_name_the_file(tmp_path, backbone_file, stand_in_heads_file):
    heads = torch.load(stand_in_heads_file, map_location="cpu", weights_only=True)
    wrong_shape = heads | {"lin2.model.1.weight": torch.zeros(1, 256, 1, 1)}
    missing = {k: v for k, v in heads.items() if k != "lin4.model.1.weight"}
    for name, state, detail in [("shape.pth", wrong_shape, "lin2.model.1.weight"),
                                ("missing.pth", missing, "lin4.model.1.weight")]:
        path = tmp_path / name
        torch.save(state, path)
        with pytest.raises(ValueError) as excinfo:
            load_lpips(backbone_file, path)
        assert str(path) in str(excinfo.value) and detail in str(excinfo.value)


def test_missing_files_say_how_to_obtain_them(tmp_path, backbone_file, stand_in_heads_file):
    absent = tmp_path / "nowhere" / ALEXNET_FILE
    with pytest.raises(MissingWeightsError) as excinfo:
        load_lpips(absent, stand_in_heads_file)
    assert isinstance(excinfo.value, FileNotFoundError)
    assert str(absent) in str(excinfo.value) and ALEXNET_URL in str(excinfo.value)

    absent = tmp_path / "nowhere" / HEADS_FILE
    with pytest.raises(MissingWeightsError) as excinfo:
        load_lpips(backbone_file, absent)
    message = str(excinfo.value)
    assert str(absent) in message and "lpips/weights/v0.1" in message and "PerceptualSimilarity" in message


def test_stand_in_is_seeded_frozen_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    first, again, other = lpips_stand_in(0), lpips_stand_in(0), lpips_stand_in(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    a, b = images(0), images(1)
    with torch.no_grad():
        assert torch.equal(first(a, b), again(a, b))
        assert not torch.equal(first(a, b), other(a, b))
    assert all((head.weight >= 0).all() for head in first.heads)
    assert not any(p.requires_grad for p in first.parameters())
