"""The content encoder E_c: frame alignment, chunking, Mandarin projection, outputs, loading errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from damc_core.audio.content import (
    ENCODER_STRIDE,
    FRONT_PADDING,
    RECEPTIVE_FIELD,
    STAND_IN,
    ContentEncoderUnavailable,
    CTCEncoder,
    aligned_audio,
    build_stand_in,
    content_features,
    encode,
    load_content_encoder,
)
from damc_core.audio.mel import frames_for_samples


@pytest.fixture(scope="module")
def english():
    return build_stand_in("en")


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16_000)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(n) / 16_000)
    return (rng.standard_normal(n) * envelope * 0.1).astype(np.float32)


@pytest.mark.parametrize("n_samples", [1, 399, 640, 641, 16_001, 16_000 * 3 + 333])
def test_aligned_audio_gives_two_encoder_steps_per_frame(n_samples):
    audio = np.ones(n_samples, dtype=np.float32)
    n_frames = frames_for_samples(n_samples)
    padded = aligned_audio(audio, n_frames)
    assert (len(padded) - RECEPTIVE_FIELD) // ENCODER_STRIDE + 1 == 2 * n_frames
    assert np.all(padded[:FRONT_PADDING] == 0) and padded[FRONT_PADDING] == 1


def test_steps_are_centred_ten_ms_either_side_of_each_frame():
    for frame in (0, 1, 7, 100):
        for step, offset in ((2 * frame, -160), (2 * frame + 1, 160)):
            centre = ENCODER_STRIDE * step + RECEPTIVE_FIELD / 2 - FRONT_PADDING
            assert centre == 640 * frame + offset


@pytest.mark.parametrize("n_samples", [1, 641, 16_001, 16_000 * 2 + 77])
def test_one_row_per_video_frame_for_any_length(english, n_samples):
    audio = speechlike(n_samples / 16_000 + 1e-9, seed=n_samples)[:n_samples]
    n_frames = frames_for_samples(n_samples)
    features = content_features(english, audio, n_frames, "en", "logits", chunk_s=20.0, context_s=1.0)
    assert features.values.shape == (n_frames, 2, 32)
    assert features.representation == "ctc_logits" and features.units[4] == "|"
    assert np.all(np.isfinite(features.values))


def test_chunks_with_full_context_equal_one_pass(english):
    audio = speechlike(2.0)
    whole = encode(english, audio, 50, "logits", chunk_s=100.0, context_s=0.0)
    chunked = encode(english, audio, 50, "logits", chunk_s=0.3, context_s=100.0)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)


def test_chunking_with_short_context_stays_close(english):
    audio = speechlike(3.0)
    whole = encode(english, audio, 75, "logits", chunk_s=100.0, context_s=0.0)
    chunked = encode(english, audio, 75, "logits", chunk_s=1.0, context_s=0.5)
    assert chunked.shape == whole.shape
    assert np.corrcoef(chunked.ravel(), whole.ravel())[0, 1] > 0.9


def test_hidden_states_have_the_model_width(english):
    features = content_features(english, speechlike(0.5), 13, "en", "hidden_states", 20.0, 1.0)
    assert features.values.shape == (13, 2, english.model.config.hidden_size)
    assert features.representation == "hidden_states"


def test_mandarin_logits_become_pinyin_posteriors():
    mandarin = build_stand_in("zh")
    features = content_features(mandarin, speechlike(0.6), 15, "zh", "logits", 20.0, 1.0)
    assert features.representation == "pinyin_posteriors"
    assert features.values.shape == (15, 2, len(features.units)) and 60 < len(features.units) < 120
    np.testing.assert_allclose(features.values.sum(axis=2), 1.0, atol=1e-5)


def test_mandarin_with_an_english_vocabulary_is_refused(english):
    with pytest.raises(ContentEncoderUnavailable, match="no Chinese characters"):
        content_features(english, speechlike(0.2), 5, "zh", "logits", 20.0, 1.0)


def test_stand_in_is_seeded(english):
    again = build_stand_in("en")
    audio = speechlike(0.5)
    np.testing.assert_array_equal(
        encode(english, audio, 13, "logits", 20.0, 1.0), encode(again, audio, 13, "logits", 20.0, 1.0)
    )
    assert english.stand_in and english.name.startswith(STAND_IN)


def test_the_stand_in_stays_on_the_cpu_and_a_real_model_moves(english):
    english.to("meta")
    assert next(english.model.parameters()).device.type == "cpu"
    real = CTCEncoder(model=torch.nn.Linear(2, 2), name="tiny", vocab=("a", "b"), normalize=True, stand_in=False)
    real.to("meta")
    assert next(real.model.parameters()).device.type == "meta"


def test_unavailable_model_names_itself_and_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    expected = r"(?s)facebook/hubert-large-ls960-ft.*huggingface-cli download"
    with pytest.raises(ContentEncoderUnavailable, match=expected):
        load_content_encoder("facebook/hubert-large-ls960-ft", "en")



STAND_IN_FEATURES_SCRIPT = """
import sys
import numpy as np
from damc_core.audio.content import build_stand_in, content_features
features = content_features(build_stand_in("en"), np.load(sys.argv[1]), 50, "en", "logits", 20.0, 1.0)
np.save(sys.argv[2], features.values)
"""


def test_stand_in_features_are_the_same_bytes_on_another_cpu(tmp_path, english):
    """The sample's DVC hashes must not depend on the machine: torch picks its kernels (and its random-number code)
    by the CPU's instruction set, emulated here with ATEN_CPU_CAPABILITY, and splits work by thread count."""
    import os
    import subprocess
    import sys

    audio = speechlike(2.0)
    np.save(tmp_path / "audio.npy", audio)
    other_machine = {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "3"}
    subprocess.run([sys.executable, "-c", STAND_IN_FEATURES_SCRIPT, str(tmp_path / "audio.npy"),
                    str(tmp_path / "other.npy")], env=os.environ | other_machine, check=True)
    here = content_features(english, audio, 50, "en", "logits", 20.0, 1.0).values
    assert np.load(tmp_path / "other.npy").tobytes() == here.tobytes()
