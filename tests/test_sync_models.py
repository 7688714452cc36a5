"""Tests of damc_core.sync.models: shapes, the expert's score and loss, its trainability, and the lip decoder."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from damc_core.sync.models import (
    AudioEncoder,
    DynamicSyncEncoder,
    FaceEncoder,
    LipDecoder,
    SyncExpert,
    conv_block,
    reconstruction_l1,
    sync_bce,
)

SMALL = (8, 16, 32, 32)


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def test_conv_block_adds_its_input_before_the_relu_when_residual():
    x = torch.randn(2, 4, 6, 6)
    plain, residual = conv_block(4, 4, 3, 1, 1), conv_block(4, 4, 3, 1, 1, residual=True)
    for block in (plain, residual):
        torch.nn.init.zeros_(block.conv.weight)
        block.eval()
    assert torch.equal(plain(x), torch.zeros_like(x))
    assert torch.equal(residual(x), F.relu(x))


def test_conv_block_shapes_and_residual_constraints():
    assert conv_block(3, 8, 3, 2, 1)(torch.rand(1, 3, 10, 16)).shape == (1, 8, 5, 8)
    assert conv_block(1, 4, 3, (3, 1), 1)(torch.rand(1, 1, 80, 16)).shape == (1, 4, 27, 16)
    for in_ch, stride in ((4, 2), (3, 1)):
        with pytest.raises(ValueError, match="residual"):
            conv_block(in_ch, 4, 3, stride, 1, residual=True)


@pytest.mark.parametrize("size", [48, 64, 96, 128])
def test_face_encoder_embeds_any_supported_face_size(size: int):
    encoder = FaceEncoder(embed_dim=24, widths=SMALL)
    assert encoder(torch.rand(3, 15, size // 2, size)).shape == (3, 24)


def test_audio_encoder_embeds_a_mel_window():
    encoder = AudioEncoder(out_dim=20, widths=SMALL)
    assert encoder.out_dim == 20
    assert encoder(torch.randn(3, 1, 80, 16)).shape == (3, 20)
    with pytest.raises(ValueError, match="stages"):
        AudioEncoder(widths=(8, 16))


@pytest.mark.parametrize("size", [48, 96])
def test_sync_expert_scores_in_unit_interval_as_normalised_dot_product(size: int):
    expert = SyncExpert(embed_dim=32, face_widths=SMALL, audio_widths=SMALL).eval()
    faces, mel = torch.rand(6, 15, size // 2, size), torch.randn(6, 1, 80, 16)
    with torch.no_grad():
        similarity = expert(faces, mel)
        face, audio = F.relu(expert.face_encoder(faces)), F.relu(expert.audio_encoder(mel))
    expected = [float(f @ a / (f.norm() * a.norm())) for f, a in zip(face, audio, strict=True)]
    assert similarity.shape == (6,)
    assert ((similarity >= 0) & (similarity <= 1)).all()
    assert similarity.tolist() == pytest.approx(expected, abs=1e-6)


def test_sync_expert_embeddings_are_unit_length_and_non_negative_and_give_its_scores():
    expert = SyncExpert(embed_dim=32, face_widths=SMALL, audio_widths=SMALL).eval()
    faces, mel = torch.rand(6, 15, 24, 48), torch.randn(6, 1, 80, 16)
    with torch.no_grad():
        face, audio = expert.embed_faces(faces), expert.embed_audio(mel)
        similarity = expert(faces, mel)
    for embedding in (face, audio):
        assert embedding.shape == (6, 32) and (embedding >= 0).all()
        torch.testing.assert_close(embedding.norm(dim=1), torch.ones(6))
    assert torch.equal(similarity, expert.similarity(face, audio))
    every_pair = expert.similarity(face[:, None, :], audio[None, :, :])  # (faces, mels): broadcast
    assert every_pair.shape == (6, 6)
    torch.testing.assert_close(every_pair.diagonal(), similarity)


def test_sync_bce_is_torch_bce_on_clamped_scores():
    similarity = torch.tensor([0.0, 0.3, 0.9, 1.0, 1.0, 0.0])
    label = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    clamped = similarity.clamp(1e-6, 1 - 1e-6)
    assert torch.isfinite(sync_bce(similarity, label))
    torch.testing.assert_close(sync_bce(similarity, label), F.binary_cross_entropy(clamped, label))
    assert sync_bce(torch.tensor([1.0]), torch.tensor([0.0])).item() == pytest.approx(-math.log(1e-6), rel=0.01)


def toy_sync_batch(batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Faces whose brightness and mels whose level encode one of 4 values: equal for in-sync items, else different."""
    value = torch.randint(0, 4, (batch_size,), generator=generator)
    label = (torch.arange(batch_size) < batch_size // 2).float()
    shift = torch.randint(1, 4, (batch_size,), generator=generator)
    heard = torch.where(label.bool(), value, (value + shift) % 4)
    brightness, level = (value.float() + 1) / 5, 2 * heard.float() - 3
    faces = brightness[:, None, None, None] + 0.05 * torch.randn(batch_size, 15, 24, 48, generator=generator)
    mel = level[:, None, None, None] + 0.3 * torch.randn(batch_size, 1, 80, 16, generator=generator)
    return faces, mel, label


def test_sync_expert_learns_a_learnable_toy_sync_problem():
    expert = SyncExpert(embed_dim=16, face_widths=SMALL, audio_widths=SMALL)
    optimiser = torch.optim.Adam(expert.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(100):
        faces, mel, label = toy_sync_batch(32, generator)
        loss = sync_bce(expert(faces, mel), label)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * losses[0]


def test_dynamic_sync_encoder_maps_a_mel_window_to_f_d():
    encoder = DynamicSyncEncoder(out_dim=12, widths=SMALL)
    assert encoder.out_dim == 12
    assert encoder(torch.randn(5, 1, 80, 16)).shape == (5, 12)


@pytest.mark.parametrize("size", [48, 96])
def test_lip_decoder_reconstructs_a_lower_face_in_unit_range(size: int):
    decoder = LipDecoder(feature_dim=12, widths=SMALL)
    reference = torch.rand(2, 3, size // 2, size)
    output = decoder(reference, torch.randn(2, 12))
    assert output.shape == reference.shape
    assert ((output > 0) & (output < 1)).all()


def test_lip_decoder_output_depends_on_f_d_and_trains_the_encoder():
    encoder, decoder = DynamicSyncEncoder(out_dim=12, widths=SMALL), LipDecoder(feature_dim=12, widths=SMALL)
    reference, target = torch.rand(4, 3, 24, 48), torch.rand(4, 3, 24, 48)
    mel = torch.randn(4, 1, 80, 16)
    decoder.eval()
    assert not torch.allclose(decoder(reference, encoder(mel)), decoder(reference, encoder(-mel)))
    decoder.train()
    reconstruction_l1(decoder(reference, encoder(mel)), target).backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_lip_decoder_rejects_sizes_its_downsampling_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 8"):
        LipDecoder(feature_dim=4, widths=SMALL)(torch.rand(1, 3, 20, 40), torch.randn(1, 4))


def test_reconstruction_l1_is_the_mean_absolute_error():
    prediction, target = torch.tensor([[0.0, 0.5], [1.0, 0.25]]), torch.tensor([[1.0, 0.5], [0.0, 0.75]])
    assert reconstruction_l1(prediction, target).item() == pytest.approx(2.5 / 4)
