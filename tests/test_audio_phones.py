"""The pocketsphinx content encoder: real phones of espeak-ng speech, step timing, one row per frame, meta, refusals."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pocketsphinx
import pytest

from damc_core.audio.content import ENCODER_STRIDE, ContentEncoderUnavailable, content_features, load_content_encoder
from damc_core.audio.extract import extract_features
from damc_core.audio.features import load_features
from damc_core.audio.mel import frames_for_samples
from damc_core.audio.phones import (
    CMU_PHONES,
    FIRST_FRAME_OF_STEP,
    PHONES,
    SILENCE_INDEX,
    SPHINX_FRAME_START,
    SPHINX_HOP,
    STEP_START,
    PhoneEncoder,
    frame_phones,
    phone_index,
    phone_steps,
)
from damc_core.params import AudioFeaturesConfig
from damc_core.tts.espeak import espeak_synthesise

SENTENCE = "The weather will be sunny tomorrow, and we can walk in the park."
ONSET_S = 0.5
RECALL_MARGIN = 0.15
"""Decoded phones must recall the dictionary's phones this much better than random phones do (measured: 0.57 against
0.27 +- 0.03 for random sequences of the decoded length drawn from the dictionary's phone frequencies)."""
CHANCE_DRAWS = 100
SAMPLE_RATE = 16_000


@pytest.fixture(scope="module")
def encoder() -> PhoneEncoder:
    return load_content_encoder("pocketsphinx", "en")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """ONSET_S of digital silence, then SENTENCE from its first audible sample."""
    spoken = espeak_synthesise(SENTENCE, "en-us", 160, 50, SAMPLE_RATE)
    spoken = spoken[np.argmax(np.abs(spoken) > 1e-3):]
    return np.concatenate([np.zeros(round(ONSET_S * SAMPLE_RATE), dtype=np.float32), spoken])


@pytest.fixture(scope="module")
def speech_steps(encoder, speech) -> np.ndarray:
    """(steps, len(PHONES)) features of `speech`."""
    features = content_features(encoder, speech, frames_for_samples(len(speech)), "en", "logits", 20.0, 1.0)
    return features.values.reshape(-1, len(PHONES))


@pytest.fixture(scope="module")
def dictionary() -> tuple[dict[str, list[str]], Counter]:
    """cmudict-en-us: first pronunciation of each word, and how often each phone occurs over the whole dictionary."""
    text = (Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict").read_text(encoding="utf-8")
    counts = Counter(text.split())  # words are lower case, phones upper case
    words = set(re.findall(r"[a-z']+", SENTENCE.lower()))
    pronunciations = {}
    for line in text.splitlines():
        word, *phones = line.split()
        if word in words:
            pronunciations[word] = phones
    return pronunciations, Counter({phone: counts[phone] for phone in CMU_PHONES})


def common_subsequence(first: list[str], second: list[str]) -> int:
    """Length of the longest common subsequence."""
    previous = [0] * (len(second) + 1)
    for item in first:
        current = [0]
        for index, other in enumerate(second):
            current.append(previous[index] + 1 if item == other else max(previous[index + 1], current[index]))
        previous = current
    return previous[-1]


def phone_sequence(steps: np.ndarray) -> list[str]:
    """The phones of step rows in order: most-covered phone per step, repeats merged, silence dropped."""
    best = steps.argmax(axis=1)
    merged = best[np.r_[True, best[1:] != best[:-1]]]
    return [PHONES[index] for index in merged if index != SILENCE_INDEX]


def test_decoded_phones_recall_the_dictionary_phones_better_than_chance(speech_steps, dictionary):
    pronunciations, frequency = dictionary
    reference = [phone for word in re.findall(r"[a-z']+", SENTENCE.lower()) for phone in pronunciations[word]]
    decoded = phone_sequence(speech_steps)
    recall = common_subsequence(reference, decoded) / len(reference)
    rng = np.random.default_rng(0)
    probabilities = np.array([frequency[phone] for phone in CMU_PHONES], dtype=float)
    probabilities /= probabilities.sum()
    chance = np.mean([
        common_subsequence(reference, list(rng.choice(CMU_PHONES, len(decoded), p=probabilities))) / len(reference)
        for _ in range(CHANCE_DRAWS)
    ])
    assert 0.5 < len(decoded) / len(reference) < 2.0
    assert recall >= chance + RECALL_MARGIN, (recall, chance, decoded)


def test_a_phone_boundary_lands_at_the_speech_onset(speech_steps):
    speech_fraction = 1.0 - speech_steps[:, SILENCE_INDEX]
    first = int(np.argmax(speech_fraction > 0))
    step_start_s = (ENCODER_STRIDE * first + STEP_START) / SAMPLE_RATE
    onset_s = step_start_s + (1.0 - speech_fraction[first]) * 0.02  # the phone fills the end of its first step
    assert abs(onset_s - ONSET_S) <= 0.040, onset_s
    assert np.all(speech_steps[: max(0, first - 1), SILENCE_INDEX] == 1.0)


@pytest.mark.parametrize("n_samples", [1, 641, 16_001, 16_000 * 2 + 77])
@pytest.mark.parametrize("extra_frames", [-1, 0, 3])
def test_one_row_per_video_frame_for_any_length(encoder, speech, n_samples, extra_frames):
    audio = speech[round(ONSET_S * SAMPLE_RATE):][:n_samples]
    n_frames = max(1, frames_for_samples(n_samples) + extra_frames)
    features = content_features(encoder, audio, n_frames, "en", "logits", 20.0, 1.0)
    assert features.values.shape == (n_frames, 2, len(PHONES)) and features.values.dtype == np.float32
    assert features.representation == "phone_posteriors" and features.units == PHONES
    np.testing.assert_array_equal(features.values.sum(axis=2), 1.0)
    assert np.all(features.values >= 0)


def test_vocabulary_is_the_cmu_phones_and_silence():
    assert len(CMU_PHONES) == 39 and len(set(PHONES)) == 40 and PHONES[SILENCE_INDEX] == "SIL"
    assert phone_index("+NSN+") == phone_index("+SPN+") == phone_index("+BREATH+") == phone_index("SIL")
    assert phone_index("ZH") == PHONES.index("ZH")
    with pytest.raises(ContentEncoderUnavailable, match="'AX'"):
        phone_index("AX")


def test_step_fractions_equal_a_sample_by_sample_count():
    """Reference: label every sample with the phone of the decoder frame that stands for it, count per step."""
    rng = np.random.default_rng(3)
    steps = 7
    labels = rng.integers(0, len(PHONES), size=2 * steps + 1).astype(np.int8)
    fast = phone_steps(labels, steps)
    for step in range(steps):
        samples = np.arange(ENCODER_STRIDE * step + STEP_START, ENCODER_STRIDE * (step + 1) + STEP_START)
        frames = (samples - SPHINX_FRAME_START) // SPHINX_HOP - FIRST_FRAME_OF_STEP
        expected = np.bincount(labels[frames], minlength=len(PHONES)) / ENCODER_STRIDE
        np.testing.assert_array_equal(fast[step], expected.astype(np.float32))


def test_chunks_with_full_context_equal_one_pass(encoder, speech):
    frames = len(speech) // SPHINX_HOP
    whole = frame_phones(encoder.decoder, speech, 0, frames, chunk_s=100.0, context_s=0.0)
    chunked = frame_phones(encoder.decoder, speech, 0, frames, chunk_s=2.0, context_s=100.0)
    np.testing.assert_array_equal(chunked, whole)
    short_context = frame_phones(encoder.decoder, speech, 0, frames, chunk_s=1.0, context_s=0.5)
    assert np.mean(short_context == whole) > 0.7  # measured 0.82; a shift of 10 frames gives 0.25


def test_features_do_not_depend_on_what_was_decoded_before(encoder, speech_steps, speech):
    content_features(encoder, speech[::-1].copy(), 40, "en", "logits", 20.0, 1.0)
    again = content_features(encoder, speech, frames_for_samples(len(speech)), "en", "logits", 20.0, 1.0)
    assert again.values.reshape(-1, len(PHONES)).tobytes() == speech_steps.tobytes()


def test_feature_meta_names_pocketsphinx_and_it_loads_again(encoder, speech, tmp_path):
    config = AudioFeaturesConfig(language="en", content_encoder="pocketsphinx", content_output="logits",
                                 chunk_s=20.0, context_s=1.0)
    n_frames = frames_for_samples(len(speech))
    summary = extract_features(speech, n_frames, encoder, config, tmp_path, source="espeak")
    values, meta = load_features(tmp_path / "content.npy", frames=n_frames, audio=speech)
    assert meta.encoder == "pocketsphinx:en-us" and not meta.stand_in and meta == summary.content
    assert (meta.dim, meta.window, meta.rate_hz, meta.representation) == (40, 2, 50.0, "phone_posteriors")
    assert meta.units == PHONES and values.shape == (n_frames, 2, 40)
    again = load_content_encoder(meta.encoder, meta.language)
    assert isinstance(again, PhoneEncoder) and again.name == meta.encoder


def test_mandarin_hidden_states_and_unknown_models_are_refused(encoder, speech):
    with pytest.raises(ContentEncoderUnavailable, match=r"(?s)'zh'.*en-us"):
        load_content_encoder("pocketsphinx", "zh")
    with pytest.raises(ContentEncoderUnavailable, match="no hidden states"):
        content_features(encoder, speech[:16_000], 25, "en", "hidden_states", 20.0, 1.0)
    with pytest.raises(ContentEncoderUnavailable, match=r"(?s)'fr-fr'.*en-us"):
        load_content_encoder("pocketsphinx:fr-fr", "en")
