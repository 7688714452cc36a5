"""damc_core.metrics.syncnet: the SyncNet architecture (syncnet_python's state dict) and loading its weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from damc_core.metrics.syncnet import SYNCNET_FILE, SYNCNET_URL, MissingSyncNetWeights, SyncNet, load_syncnet


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


CONV_BN = (0, 4, 8, 11, 14, 18)  # conv indices of netcnnaud and netcnnlip, each followed by its BatchNorm
BN_BUFFERS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def expected_keys() -> set[str]:
    keys = set()
    for net in ("netcnnaud", "netcnnlip"):
        for conv in CONV_BN:
            keys |= {f"{net}.{conv}.weight", f"{net}.{conv}.bias"}
            keys |= {f"{net}.{conv + 1}.{name}" for name in BN_BUFFERS}
    for net in ("netfcaud", "netfclip"):
        keys |= {f"{net}.0.weight", f"{net}.0.bias", f"{net}.3.weight", f"{net}.3.bias"}
        keys |= {f"{net}.1.{name}" for name in BN_BUFFERS}
    return keys


def test_syncnet_has_syncnet_pythons_state_dict_keys_and_shapes():
    state = SyncNet().state_dict()
    assert set(state) == expected_keys()
    assert state["netcnnaud.0.weight"].shape == (64, 1, 3, 3)
    assert state["netcnnaud.18.weight"].shape == (512, 256, 5, 4)
    assert state["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert state["netcnnlip.18.weight"].shape == (512, 256, 1, 6, 6)
    assert state["netfcaud.3.weight"].shape == state["netfclip.3.weight"].shape == (1024, 512)


def test_syncnet_forward_shapes():
    model = SyncNet().eval()
    with torch.no_grad():
        assert model.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert model.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)


def test_load_syncnet_round_trips_a_state_dict_even_without_batch_counters(tmp_path: Path):
    source = SyncNet()
    for module in source.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / SYNCNET_FILE
    torch.save(state, path)
    loaded = load_syncnet(path)
    assert not loaded.training
    for key, value in state.items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_syncnet_rejects_a_foreign_state_dict(tmp_path: Path):
    path = tmp_path / "other.model"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not match SyncNet"):
        load_syncnet(path)


def test_missing_syncnet_weights_name_the_file_and_its_url(tmp_path: Path):
    path = tmp_path / SYNCNET_FILE
    with pytest.raises(MissingSyncNetWeights) as info:
        load_syncnet(path)
    assert isinstance(info.value, FileNotFoundError)
    assert str(path) in str(info.value) and SYNCNET_URL in str(info.value)
    assert SYNCNET_URL == "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"
